//! The dispatcher: an instance's state (its encoder link and its path) and the execute call,
//! which hands the batch to the instance's path inside one [`Responder`], so every execute
//! runs in the same order: create responses -> gather inputs and plan -> crop -> encode in
//! chunks -> scatter outputs -> send -> report statistics -> release requests. A request's
//! error goes on its own response; the other requests of the batch carry on.

use crate::box_cpu::BoxCpuPath;
use crate::box_gpu::BoxGpuPath;
use crate::config::{BoxEmbedConfig, FaceAlignConfig};
use crate::encoder::EncoderHandle;
use crate::face_cpu::FaceCpuPath;
use std::sync::Arc;
use triton_backend::infer::{ResponseAllocator, Server};
use triton_backend::model::ModelInstance;
use triton_backend::request::Request;
use triton_backend::responder::Responder;
use triton_backend::TritonError;

/// Per-instance state: the encoder link, and the path with its own buffers and device.
pub struct InstanceState {
    encoder: EncoderHandle,
    path: Path,
}

enum Path {
    BoxCpu(BoxCpuPath),
    BoxGpu(Box<BoxGpuPath>),
    FaceCpu(FaceCpuPath),
}

impl InstanceState {
    /// Box mode, host memory throughout.
    pub fn box_cpu(config: Arc<BoxEmbedConfig>, server: Server) -> Result<Self, TritonError> {
        let encoder = EncoderHandle::new(config.encoder.clone(), server, ResponseAllocator::host()?);
        Ok(Self { encoder, path: Path::BoxCpu(BoxCpuPath::new(config)) })
    }

    /// Box mode on `device_id`: opens it, compiles the crop kernels and creates the stream;
    /// fails (and so fails the instance's load) where there is no usable CUDA device.
    pub fn box_gpu(config: Arc<BoxEmbedConfig>, server: Server, device_id: i32) -> Result<Self, TritonError> {
        let (path, allocator) = BoxGpuPath::new(config.clone(), device_id)?;
        let encoder = EncoderHandle::new(config.encoder.clone(), server, allocator);
        Ok(Self { encoder, path: Path::BoxGpu(Box::new(path)) })
    }

    /// Face mode, host memory throughout.
    pub fn face_cpu(config: Arc<FaceAlignConfig>, server: Server) -> Result<Self, TritonError> {
        let encoder = EncoderHandle::new(config.encoder.clone(), server, ResponseAllocator::host()?);
        Ok(Self { encoder, path: Path::FaceCpu(FaceCpuPath::new(config)) })
    }
}

/// Runs one execute call over `requests`, which it releases before returning.
pub fn execute(instance: ModelInstance, state: &mut InstanceState, requests: Vec<Request>) {
    // Created after `requests`, so dropped (answering what is unanswered) before they are
    // released, also when a path panics.
    let mut responder = Responder::new(instance, "box_embed", &requests);
    match &mut state.path {
        Path::BoxCpu(path) => path.run(&mut state.encoder, &mut responder),
        Path::BoxGpu(path) => path.run(&mut state.encoder, &mut responder),
        Path::FaceCpu(path) => path.run(&mut state.encoder, &mut responder),
    }
    responder.finish();
}
