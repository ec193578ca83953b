//! `libtriton_box_embed.so`: the Triton backend that crops every detected box from the
//! original image and embeds the crops with the image encoder, in-process; in face mode
//! (model parameter `mode: faces`) it aligns every detected face from its 5 landmarks and
//! embeds the faces with the face encoder the same way.
//!
//! - [`config`]: the model config parameters (by mode), validated once at load;
//! - [`plan`]: one request's tensors -> validated crop plan, and a batch's crops (pure);
//! - [`face_plan`]: the same for faces: landmarks -> warp maps or rejections (pure);
//! - [`encoder`]: chunked in-process calls to the encoder model, from host or device memory;
//! - [`execute`]: the execute call over a batch of requests and what both paths share;
//! - [`cpu`]: KIND_CPU instances (host memory throughout);
//! - [`gpu`]: KIND_GPU instances (inputs, crops and embeddings on the device), over the
//!   CUDA plumbing in [`device`];
//! - [`faces`]: face mode, KIND_CPU instances.
//!
//! Cropping itself (letterbox mapping, crop policies, ROI-align) lives in `crop-core` and its
//! CUDA kernels in `cuda-kernels`; the Triton API in `triton-backend`. This file holds only
//! the [`Backend`](triton_backend::backend::Backend) implementation the entry points are
//! exported from.

pub mod config;
pub mod cpu;
pub mod device;
pub mod encoder;
pub mod execute;
pub mod face_plan;
pub mod faces;
pub mod gpu;
pub mod plan;

use config::ModelConfig;
use execute::InstanceState;
use triton_backend::backend::Backend;
use triton_backend::entry::log;
use triton_backend::model::{InstanceKind, Model, ModelInstance};
use triton_backend::request::Request;
use triton_backend::{sys, ErrorCode, TritonError};

pub struct BoxEmbed;

impl Backend for BoxEmbed {
    const NAME: &'static str = "box_embed";
    type ModelState = ModelConfig;
    type InstanceState = InstanceState;

    fn load_model(model: &Model) -> Result<ModelConfig, TritonError> {
        ModelConfig::from_model_config(&model.config()?).map_err(|e| TritonError::invalid_arg(e.to_string()))
    }

    fn load_instance(instance: &ModelInstance, config: &ModelConfig) -> Result<InstanceState, TritonError> {
        let server = instance.model()?.server()?;
        let name = instance.name()?;
        match (config.clone(), instance.kind()?) {
            // The face warp kernel exists (cuda-kernels `face_warp_f32`); the device path for
            // faces does not yet, so a GPU instance refuses to load rather than silently
            // running on the CPU.
            (ModelConfig::Faces(_), InstanceKind::Gpu) => Err(TritonError::new(
                ErrorCode::Unsupported,
                format!("instance '{name}': face mode runs on KIND_CPU instances only"),
            )),
            (ModelConfig::Faces(config), _) => InstanceState::faces(config, server),
            // KIND_MODEL leaves placement to the backend: the CPU path, as before GPU support.
            (ModelConfig::Boxes(config), InstanceKind::Cpu | InstanceKind::Other) => InstanceState::cpu(config, server),
            (ModelConfig::Boxes(config), InstanceKind::Gpu) => {
                let device_id = instance.device_id()?;
                let state = InstanceState::gpu(config, server, device_id)
                    .map_err(|e| e.context(format!("instance '{name}' (KIND_GPU)")))?;
                log(
                    sys::TRITONSERVER_LOG_INFO,
                    &format!("box_embed instance '{name}': crop kernels built for GPU {device_id}"),
                );
                Ok(state)
            }
        }
    }

    fn execute(instance: ModelInstance, state: &mut InstanceState, requests: Vec<Request>) {
        execute::execute(instance, state, requests)
    }
}

triton_backend::export_backend!(BoxEmbed);
