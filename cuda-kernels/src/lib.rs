//! CUDA crop kernels for the `box_embed` backend, compiled at run time with
//! NVRTC and launched through [`cudarc`].
//!
//! - [`KERNEL_SOURCE`] (`kernels.cu`): batched bilinear ROI-align from UINT8
//!   HWC images to FP32 or FP16 CHW crops with the semantics of `crop-core`
//!   (the CPU path and reference), and the face-alignment affine warp.
//! - [`compile_ptx`] compiles that source to PTX on the host alone (no GPU),
//!   which is how CI checks the kernels on every commit.
//! - [`KernelSet`] compiles once per CUDA context and launches the kernels on
//!   the caller's stream over device buffers described by [`CropDesc`] and
//!   [`FaceDesc`]; each launch is one documented `unsafe` call whose memory
//!   safety rests on the kernels' own bounds checks.
//!
//! libcuda and libnvrtc are loaded on first use, so this crate builds
//! everywhere; [`nvrtc_available`] and [`cuda_context`] report a missing
//! library as an error instead of cudarc's panic.
//!
//! Layer: GPU kernels over `crop-core` (their reference). Imported by `box-embed-backend`.

mod compile;
mod desc;
mod error;
mod launch;

pub use compile::{compile_ptx, nvrtc_available, KERNEL_SOURCE};
pub use desc::{CropDesc, FaceDesc};
pub use error::KernelError;
pub use launch::{cuda_context, CropOutput, KernelSet, RoiAlignParams};

/// The cudarc this crate was built against, so that callers name the same
/// device-buffer and stream types.
pub use cudarc;
