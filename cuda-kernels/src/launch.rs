//! [`KernelSet`]: the crop kernels compiled and loaded into one CUDA context,
//! and their launches on the caller's stream.
//!
//! Launches are asynchronous and never synchronise the device or the stream;
//! cudarc's buffer events order them after earlier writes to their inputs.
//! Each launch is one `unsafe` call: what it needs beyond the host checks
//! here (arguments in the kernel's order and types, every load and store in
//! bounds) is kept by `kernels.cu`, which checks each descriptor's image
//! against the image buffer's length and each store against the output's.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};

use crate::{compile_ptx, CropDesc, FaceDesc, KernelError};

const THREADS_PER_BLOCK: u32 = 256;
/// The driver's limit on `gridDim.y`; the kernels stride over crops past it.
const MAX_GRID_Y: u32 = 65_535;
/// The kernels index one output plane with 32 bits.
const MAX_SIDE: u32 = 65_535;

/// Opens device `ordinal`'s primary context, reporting a machine without an
/// NVIDIA driver as [`KernelError::DriverNotFound`] (cudarc would panic).
pub fn cuda_context(ordinal: usize) -> Result<Arc<CudaContext>, KernelError> {
    // SAFETY: only tries to dlopen() libcuda under the names cudarc uses.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(KernelError::DriverNotFound);
    }
    CudaContext::new(ordinal).map_err(KernelError::driver("opening the CUDA device"))
}

/// An element type ROI-align can write: `f32` or `half::f16`.
pub trait CropOutput: DeviceRepr + sealed::Sealed {}

impl CropOutput for f32 {}
impl CropOutput for half::f16 {}

mod sealed {
    use super::{CudaFunction, KernelSet};

    /// Picks the kernel instantiation for the output type.
    pub trait Sealed {
        fn roi_align(kernels: &KernelSet) -> &CudaFunction;
    }

    impl Sealed for f32 {
        fn roi_align(kernels: &KernelSet) -> &CudaFunction {
            &kernels.roi_align_f32
        }
    }

    impl Sealed for half::f16 {
        fn roi_align(kernels: &KernelSet) -> &CudaFunction {
            &kernels.roi_align_f16
        }
    }
}

/// Crop size `S` (output `[3, S, S]` per crop) and sampling ratio `s`
/// (`s x s` bilinear samples averaged per output pixel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoiAlignParams {
    pub crop_size: u32,
    pub sampling_ratio: u32,
}

/// The kernels loaded into one context. Compile once per Triton model
/// instance; launching needs only `&self`.
pub struct KernelSet {
    ctx: Arc<CudaContext>,
    roi_align_f32: CudaFunction,
    roi_align_f16: CudaFunction,
    face_warp_f32: CudaFunction,
}

impl std::fmt::Debug for KernelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelSet").field("ordinal", &self.ctx.ordinal()).finish_non_exhaustive()
    }
}

impl KernelSet {
    /// Compiles the kernels with NVRTC for `ctx`'s device and loads them.
    /// A compile failure carries NVRTC's log.
    pub fn compile(ctx: &Arc<CudaContext>) -> Result<Self, KernelError> {
        let (major, minor) = ctx.compute_capability().map_err(KernelError::driver("reading the compute capability"))?;
        let as_u32 = |v: i32| u32::try_from(v).unwrap_or_default();
        let ptx = compile_ptx((as_u32(major), as_u32(minor)))?;
        let module = ctx.load_module(ptx).map_err(KernelError::driver("loading the compiled kernels"))?;
        let function =
            |name| module.load_function(name).map_err(KernelError::driver("looking up a kernel in the module"));
        Ok(Self {
            roi_align_f32: function("roi_align_f32")?,
            roi_align_f16: function("roi_align_f16")?,
            face_warp_f32: function("face_warp_f32")?,
            ctx: ctx.clone(),
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Enqueues ROI-align of every crop in `descs` on `stream`, writing
    /// `[descs.len(), 3, S, S]` (channels R, G, B; values in `[0, 1]`) to the
    /// start of `out`. `images` holds the packed images the descriptors
    /// point into. A descriptor whose image does not lie inside `images`
    /// yields a crop of NaN rather than reading outside the buffer.
    pub fn launch_roi_align<T: CropOutput>(
        &self,
        stream: &CudaStream,
        images: &impl DevicePtr<u8>,
        descs: &impl DevicePtr<CropDesc>,
        params: RoiAlignParams,
        out: &mut impl DevicePtrMut<T>,
    ) -> Result<(), KernelError> {
        self.check_stream(stream)?;
        let RoiAlignParams { crop_size, sampling_ratio } = params;
        side("crop_size", crop_size)?;
        positive("sampling_ratio", sampling_ratio)?;
        if sampling_ratio.checked_mul(sampling_ratio).is_none() {
            return Err(KernelError::InvalidArgument {
                name: "sampling_ratio",
                value: sampling_ratio.into(),
                reason: "its square must fit in 32 bits",
            });
        }
        let num_crops = count("crops", descs.len())?;
        let pixels = u64::from(num_crops) * u64::from(crop_size) * u64::from(crop_size);
        check_len("output", out.len(), 3 * pixels)?;
        if pixels == 0 {
            return Ok(());
        }
        let function = T::roi_align(self);
        let images_len = images.len() as u64;
        let out_len = out.len() as u64;
        let (images_ptr, _images_sync) = images.device_ptr(stream);
        let (descs_ptr, _descs_sync) = descs.device_ptr(stream);
        let (out_ptr, _out_sync) = out.device_ptr_mut(stream);
        let mut launch = stream.launch_builder(function);
        launch
            .arg(&images_ptr)
            .arg(&images_len)
            .arg(&descs_ptr)
            .arg(&num_crops)
            .arg(&crop_size)
            .arg(&sampling_ratio)
            .arg(&out_ptr)
            .arg(&out_len);
        // SAFETY: the arguments match `roi_align_f32` / `roi_align_f16` in
        // kernels.cu in order and type (device pointers as u64, `f16` as the
        // kernel's `unsigned short`); the lengths passed are the buffers'
        // own, and the kernel bounds every load by `images_len` and every
        // store by `out_len`. The sync guards keep the buffers' events
        // recorded after the launch is enqueued.
        unsafe { launch.launch(grid(crop_size, num_crops)) }.map_err(KernelError::driver("launching ROI-align"))?;
        Ok(())
    }

    /// Enqueues the face-alignment warp of every face in `descs` on
    /// `stream`, writing `[descs.len(), 3, out_size, out_size]` FP32 (R, G,
    /// B; `(v - 127.5) / 127.5`) to the start of `out`. Bilinear with a zero
    /// border per neighbour pixel, as `cv2.warpAffine(..., borderValue=0)`
    /// does before the usual ArcFace normalisation, so fully outside samples
    /// read -1. A descriptor whose image does not lie inside `images` yields
    /// NaN.
    pub fn launch_face_warp(
        &self,
        stream: &CudaStream,
        images: &impl DevicePtr<u8>,
        descs: &impl DevicePtr<FaceDesc>,
        out_size: u32,
        out: &mut impl DevicePtrMut<f32>,
    ) -> Result<(), KernelError> {
        self.check_stream(stream)?;
        side("out_size", out_size)?;
        let num_faces = count("faces", descs.len())?;
        let pixels = u64::from(num_faces) * u64::from(out_size) * u64::from(out_size);
        check_len("output", out.len(), 3 * pixels)?;
        if pixels == 0 {
            return Ok(());
        }
        let images_len = images.len() as u64;
        let out_len = out.len() as u64;
        let (images_ptr, _images_sync) = images.device_ptr(stream);
        let (descs_ptr, _descs_sync) = descs.device_ptr(stream);
        let (out_ptr, _out_sync) = out.device_ptr_mut(stream);
        let mut launch = stream.launch_builder(&self.face_warp_f32);
        launch
            .arg(&images_ptr)
            .arg(&images_len)
            .arg(&descs_ptr)
            .arg(&num_faces)
            .arg(&out_size)
            .arg(&out_ptr)
            .arg(&out_len);
        // SAFETY: the arguments match `face_warp_f32` in kernels.cu in order
        // and type; the kernel bounds every load by `images_len` and every
        // store by `out_len`, the buffers' own lengths. The sync guards keep
        // the buffers' events recorded after the launch is enqueued.
        unsafe { launch.launch(grid(out_size, num_faces)) }.map_err(KernelError::driver("launching the face warp"))?;
        Ok(())
    }

    fn check_stream(&self, stream: &CudaStream) -> Result<(), KernelError> {
        if **stream.context() == *self.ctx {
            Ok(())
        } else {
            Err(KernelError::ForeignStream)
        }
    }
}

fn positive(name: &'static str, value: u32) -> Result<(), KernelError> {
    if value == 0 {
        return Err(KernelError::InvalidArgument { name, value: 0, reason: "must be at least 1" });
    }
    Ok(())
}

/// An output side: at least 1, and its square must fit in 32 bits.
fn side(name: &'static str, value: u32) -> Result<(), KernelError> {
    positive(name, value)?;
    if value > MAX_SIDE {
        return Err(KernelError::InvalidArgument { name, value: value.into(), reason: "must be at most 65535" });
    }
    Ok(())
}

/// The kernels index crops with 32 bits.
fn count(name: &'static str, len: usize) -> Result<u32, KernelError> {
    u32::try_from(len).map_err(|_| KernelError::InvalidArgument {
        name,
        value: len as u64,
        reason: "more than 2^32 - 1 in one launch",
    })
}

fn check_len(buffer: &'static str, len: usize, needed: u64) -> Result<(), KernelError> {
    if (len as u64) < needed {
        return Err(KernelError::BufferTooSmall { buffer, len, needed });
    }
    Ok(())
}

/// x: one thread per pixel of an output plane; y: the items, capped at the
/// grid limit (see `plane_pixel` in kernels.cu).
fn grid(side: u32, items: u32) -> LaunchConfig {
    let blocks = (side * side).div_ceil(THREADS_PER_BLOCK);
    LaunchConfig {
        grid_dim: (blocks, items.min(MAX_GRID_Y), 1),
        block_dim: (THREADS_PER_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}
