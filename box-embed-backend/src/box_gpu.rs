//! Box mode on KIND_GPU instances: pixels, crops and embeddings stay on the instance's device.
//!
//! Per execute: plan on the host (small tensors only; `original` is read where Triton holds
//! it) -> copy each image that has boxes into one packed device buffer (device to device,
//! or one upload when Triton holds it on the host) -> upload the crop descriptors -> ONE
//! ROI-align launch for every box of every request -> synchronise the stream -> send the
//! crops to the encoder as GPU inputs, in chunks -> gather the embeddings on the device ->
//! copy them into GPU output buffers, or, where Triton gives host ones, one device-to-host
//! copy of the embeddings. The stream is synchronised before responses are sent and requests
//! released on every path, unwinding included ([`StreamGuard`]), so no copy outlives the
//! buffers it reads or writes.

use crate::box_inputs::{crop_batch, plan_all, PlannedBoxes};
use crate::box_outputs::write_row_outputs;
use crate::config::{BoxEmbedConfig, OUTPUT_EMBEDDINGS};
use crate::crop_batch::{write_embedding_rows, CropBatch};
use crate::device::{CudaMemory, Device, DeviceBuffer, StreamGuard};
use crate::encoder::{Crops, EncoderHandle};
use cuda_kernels::{CropDesc, RoiAlignParams};
use std::sync::Arc;
use triton_backend::infer::{InferenceResponse, ResponseAllocator};
use triton_backend::responder::Responder;
use triton_backend::{DataType, MemoryType, TritonError};

/// A GPU instance's device and the buffers it reuses across execute calls.
pub struct BoxGpuPath {
    config: Arc<BoxEmbedConfig>,
    device: Device,
    /// Every image with boxes in this execute, packed (UINT8 HWC).
    images: DeviceBuffer<u8>,
    descs: DeviceBuffer<CropDesc>,
    /// `[N, 3, S, S]` FP32, the encoder's input. Shared with the encoder requests; one given
    /// up at its deadline keeps its buffer, and the next execute crops into a new one.
    crops: Arc<DeviceBuffer<f32>>,
    /// `[N, D]` FP32, gathered from the encoder's responses.
    embeddings: DeviceBuffer<f32>,
    host_descs: Vec<CropDesc>,
    host_embeddings: Vec<f32>,
}

impl BoxGpuPath {
    /// The path and the encoder's response allocator, which places outputs the encoder
    /// produces in GPU memory on this device.
    pub fn new(config: Arc<BoxEmbedConfig>, device_id: i32) -> Result<(Self, ResponseAllocator), TritonError> {
        let device = Device::open(device_id)?;
        let allocator = ResponseAllocator::with_device(Arc::new(CudaMemory::new(&device)))?;
        let stream = &device.stream;
        let path = Self {
            config,
            images: DeviceBuffer::new(stream),
            descs: DeviceBuffer::new(stream),
            crops: Arc::new(DeviceBuffer::new(stream)),
            embeddings: DeviceBuffer::new(stream),
            host_descs: Vec::new(),
            host_embeddings: Vec::new(),
            device,
        };
        Ok((path, allocator))
    }

    pub fn run(&mut self, encoder: &mut EncoderHandle, responder: &mut Responder<'_>) {
        if let Err(e) = self.device.bind() {
            (0..responder.requests().len()).for_each(|index| responder.fail(index, e.clone()));
            return;
        }
        let config = self.config.clone();
        let device = &self.device;
        let mut planned = plan_all(responder, &config, |buffer, dst| device.read_to_host(buffer, dst));
        responder.start_compute();
        // Encoder responses own their output buffers: kept until the stream has synchronised.
        let mut encoder_responses = Vec::new();
        // Declared after what the queued copies read and write (encoder responses here, the
        // requests' inputs and the responses' outputs in the caller), so dropped before them:
        // a panic below still waits for the stream.
        let stream = StreamGuard::new(&self.device);
        let outcome = self.process(encoder, responder, &mut planned, &mut encoder_responses);
        let outcome = outcome.and(stream.synchronize());
        drop(stream);
        drop(encoder_responses);
        if let Err(e) = outcome {
            // A device failure taints every request that was being processed.
            for (index, plan) in planned.iter().enumerate() {
                if plan.is_some() {
                    responder.fail(index, e.clone());
                }
            }
        }
        responder.end_compute();
    }

    /// Everything after planning; an `Err` is a device failure for the whole batch.
    fn process(
        &mut self,
        encoder: &mut EncoderHandle,
        responder: &mut Responder<'_>,
        planned: &mut [Option<PlannedBoxes<'_>>],
        encoder_responses: &mut Vec<InferenceResponse>,
    ) -> Result<(), TritonError> {
        let offsets = self.upload_images(responder, planned)?;
        let crops = crop_batch(planned);
        let config = self.config.clone();
        let dim = config.encoder.embedding_dim;
        self.embeddings.resize(crops.len() * dim)?;
        if !crops.is_empty() {
            match encoder.encoder() {
                Ok(mut encoder) => {
                    self.crop(&crops, planned, &offsets, config.roi_align.crop_size, config.roi_align.sampling_ratio)?;
                    // Kernel done before anyone else reads the crops: the encoder runs on
                    // its own streams.
                    self.device.synchronize()?;
                    // SAFETY: `self.crops` holds every crop; each request keeps a share of it,
                    // and `crop` writes only into a buffer nobody else shares.
                    let input = unsafe { Crops::device(self.crops.ptr(), self.device.id.into(), self.crops.clone()) };
                    for chunk in encoder.infer(&input, crops.len()) {
                        let copied = chunk.result.and_then(|response| {
                            let output = encoder.embeddings(&response, chunk.crops.len())?;
                            // SAFETY: the output lives in `response`, kept alive in
                            // `encoder_responses` until the stream has synchronised; the
                            // destination range lies inside `self.embeddings`.
                            unsafe {
                                self.device.copy_async(
                                    self.embeddings.ptr_at(chunk.crops.start * dim),
                                    output.data,
                                    output.byte_size,
                                )?
                            };
                            encoder_responses.push(response);
                            Ok(())
                        });
                        if let Err(e) = copied {
                            crops.fail(chunk.crops, &e, responder.errors_mut());
                        }
                    }
                }
                Err(e) => crops.fail(0..crops.len(), &e, responder.errors_mut()),
            }
        }
        responder.end_compute();
        self.scatter(responder, planned, &crops, dim)
    }

    /// Copies the pixels of every request with at least one crop into `self.images`, returning
    /// each request's byte offset there. Device-resident images are copied device to device;
    /// host ones are uploaded. Planning already checked each image's size.
    fn upload_images(
        &mut self,
        responder: &mut Responder<'_>,
        planned: &mut [Option<PlannedBoxes<'_>>],
    ) -> Result<Vec<u64>, TritonError> {
        let mut offsets = vec![0u64; planned.len()];
        let mut total = 0usize;
        for (offset, planned) in offsets.iter_mut().zip(planned.iter()) {
            if let Some(p) = planned.as_ref().filter(|p| p.plan.valid_rows() > 0) {
                *offset = total as u64;
                total += p.plan.image_bytes();
            }
        }
        self.images.resize(total)?;
        for (index, slot) in planned.iter_mut().enumerate() {
            let Some(p) = slot.as_ref().filter(|p| p.plan.valid_rows() > 0) else { continue };
            let buffers = match p.original.buffers(MemoryType::Gpu, self.device.id.into()) {
                Ok(buffers) => buffers,
                Err(e) => {
                    responder.fail(index, e.context("reading input 'original'"));
                    *slot = None;
                    continue;
                }
            };
            let mut at = offsets[index];
            for buffer in buffers {
                let end = at + buffer.byte_size as u64;
                if end > offsets[index] + p.plan.image_bytes() as u64 {
                    return Err(TritonError::internal("input 'original' buffers exceed the planned image size"));
                }
                // SAFETY: the source lives until the request is released, after the final
                // synchronisation; the destination range lies inside this request's image.
                unsafe { self.device.copy_async(self.images.ptr_at(at as usize), buffer.ptr, buffer.byte_size)? };
                at = end;
            }
        }
        Ok(offsets)
    }

    /// One ROI-align launch over every crop of the batch into `self.crops`.
    fn crop(
        &mut self,
        crops: &CropBatch,
        planned: &[Option<PlannedBoxes<'_>>],
        offsets: &[u64],
        crop_size: usize,
        sampling_ratio: usize,
    ) -> Result<(), TritonError> {
        let too_big = |what: &str| TritonError::internal(format!("{what} does not fit the kernel's 32-bit sizes"));
        self.host_descs.clear();
        for &(request, region) in &crops.crops {
            let Some(PlannedBoxes { plan, .. }) = &planned[request] else {
                return Err(TritonError::internal(format!("crop of request {request}, which has no plan")));
            };
            let width = u32::try_from(plan.width).map_err(|_| too_big("image width"))?;
            let height = u32::try_from(plan.height).map_err(|_| too_big("image height"))?;
            self.host_descs.push(CropDesc::new(offsets[request], width, height, region.roi, region.mask));
        }
        self.descs.resize(self.host_descs.len())?;
        let stream = &self.device.stream;
        stream
            .memcpy_htod(self.host_descs.as_slice(), &mut self.descs)
            .map_err(|e| TritonError::internal(format!("uploading crop descriptors: {e}")))?;
        if Arc::get_mut(&mut self.crops).is_none() {
            self.crops = Arc::new(DeviceBuffer::new(&self.device.stream));
        }
        let output = Arc::get_mut(&mut self.crops).expect("a new buffer is not shared");
        output.resize(crops.len() * 3 * crop_size * crop_size)?;
        let params = RoiAlignParams {
            crop_size: u32::try_from(crop_size).map_err(|_| too_big("crop_size"))?,
            sampling_ratio: u32::try_from(sampling_ratio).map_err(|_| too_big("sampling_ratio"))?,
        };
        self.device
            .kernels
            .launch_roi_align::<f32>(stream, &self.images, &self.descs, params, output)
            .map_err(|e| TritonError::internal(e.to_string()))
    }

    /// Writes every successful request's outputs: embeddings into GPU output buffers by
    /// device copies, or from one device-to-host copy where Triton gives host buffers.
    fn scatter(
        &mut self,
        responder: &mut Responder<'_>,
        planned: &[Option<PlannedBoxes<'_>>],
        crops: &CropBatch,
        dim: usize,
    ) -> Result<(), TritonError> {
        let row_bytes = dim * 4;
        let mut host_outputs = Vec::new();
        for (index, response, error) in responder.pending() {
            let Some(p) = &planned[index] else { continue };
            if let Err(e) = write_row_outputs(response, &p.plan) {
                *error = Some(e);
                continue;
            }
            let shape = [1, p.plan.rows.len() as i64, dim as i64];
            let out = match response.output_buffer_in(
                OUTPUT_EMBEDDINGS,
                DataType::Fp32,
                &shape,
                MemoryType::Gpu,
                self.device.id.into(),
            ) {
                Ok(out) => out,
                Err(e) => {
                    *error = Some(e);
                    continue;
                }
            };
            let (dst, bytes) = (out.ptr as u64, out.byte_size);
            if let Some(host) = out.into_host() {
                host_outputs.push((index, &p.plan, host));
                continue;
            }
            // SAFETY: the device output buffer (of `bytes` bytes) lives in the response, sent
            // only after the final synchronisation; every source lies in `embeddings`.
            let copied = unsafe {
                self.device.zero_async(dst, bytes).and_then(|()| {
                    crops.row_runs(index, &p.plan.rows).into_iter().try_for_each(|run| {
                        let src = self.embeddings.ptr_at(run.crop * dim) as *const std::ffi::c_void;
                        self.device.copy_async(dst + (run.row * row_bytes) as u64, src, run.len * row_bytes)
                    })
                })
            };
            if let Err(e) = copied {
                *error = Some(e);
            }
        }
        if !host_outputs.is_empty() && !crops.is_empty() {
            self.host_embeddings.resize(crops.len() * dim, 0.0);
            // Blocking (pageable destination): it follows every copy into `embeddings`.
            self.device
                .stream
                .memcpy_dtoh(&self.embeddings, self.host_embeddings.as_mut_slice())
                .map_err(|e| TritonError::internal(format!("copying embeddings to the host: {e}")))?;
        }
        self.device.synchronize()?;
        for (index, plan, host) in host_outputs {
            write_embedding_rows(host, crops, index, &plan.rows, &self.host_embeddings, dim);
        }
        Ok(())
    }
}
