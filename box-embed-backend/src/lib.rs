//! `libtriton_box_embed.so`: the Triton backend behind two models. `box_embed` (mode
//! `boxes`, the default) crops every detected box from the original image and embeds the
//! crops with the image encoder, in-process; `face_align` (model parameter `mode: faces`)
//! aligns every detected face from its 5 landmarks and embeds the faces with the face encoder
//! the same way.
//!
//! Leaves, pure unless noted:
//! - [`config`]: the model config parameters (by mode), validated once at load;
//! - [`tensors`]: reading raw request tensors (shapes, byte sizes, values);
//! - [`crop_batch`]: a batch's crops laid out request after request, and their rows mapped back;
//! - [`encoder`]: the instance's link to its encoder and the chunked in-process calls to it
//!   (Triton API).
//!
//! Box mode: [`box_plan`] (a request's tensors -> crop plan), [`box_inputs`] and
//! [`box_outputs`] (the Triton side of its tensors), and its two paths, [`box_cpu`] (KIND_CPU,
//! host memory) and [`box_gpu`] (KIND_GPU, on the device, over the CUDA plumbing in
//! [`device`]). Face mode: [`face_plan`] (landmarks -> warp maps or rejections) and
//! [`face_cpu`] (KIND_CPU). Both CPU paths run the same loop, [`host_encode`]. The dispatcher
//! [`execute`] imports the paths; no path imports it.
//!
//! Cropping itself (letterbox mapping, crop policies, ROI-align, face warps) lives in
//! `crop-core` and its CUDA kernels in `cuda-kernels`; the Triton API in `triton-backend`.
//! This file holds only the [`Backend`](triton_backend::backend::Backend) implementation the
//! entry points are exported from.
//!
//! Layer: a Triton backend (cdylib loaded by tritonserver). Imports `triton-backend` (never the raw
//! `-sys` crate), `crop-core` and `cuda-kernels`; nothing imports it.

pub mod box_cpu;
pub mod box_gpu;
pub mod box_inputs;
pub mod box_outputs;
pub mod box_plan;
pub mod config;
pub mod crop_batch;
pub mod device;
pub mod encoder;
pub mod execute;
pub mod face_cpu;
pub mod face_plan;
pub mod host_encode;
pub mod tensors;

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
            (ModelConfig::Faces(config), _) => InstanceState::face_cpu(config, server),
            // KIND_MODEL leaves placement to the backend: the CPU path, as before GPU support.
            (ModelConfig::Boxes(config), InstanceKind::Cpu | InstanceKind::Other) => {
                InstanceState::box_cpu(config, server)
            }
            (ModelConfig::Boxes(config), InstanceKind::Gpu) => {
                let device_id = instance.device_id()?;
                let state = InstanceState::box_gpu(config, server, device_id)
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
