//! `libtriton_preprocess.so`: the Triton backend of the ingest pipeline's first stage.
//! One request = one encoded photo (JPEG, PNG, WebP); it answers with the YOLO letterbox
//! input, the CLIP input, the capped original, the letterbox transform and the photo's size
//! (contract in `docs/preprocess.md`).
//!
//! - [`config`]: the model config parameters and tensors, validated once at load;
//! - [`execute`]: the execute call over a dynamic batch (photos decoded in parallel).
//!
//! Pixel work lives in `preprocess-core` (no FFI); the Triton API in `triton-backend`. This
//! file holds only the [`Backend`](triton_backend::backend::Backend) implementation the
//! entry points are exported from.
//!
//! Instances: KIND_CPU (and KIND_MODEL, which leaves placement to the backend) run the CPU
//! path. KIND_GPU instances fail their load with a clear error: the nvJPEG path is not
//! written yet, and silently decoding on the CPU under a GPU instance group would hide that
//! from whoever sized the deployment.
//!
//! Layer: a Triton backend (cdylib loaded by tritonserver). Imports `triton-backend` and
//! `preprocess-core`; nothing imports it.

pub mod config;
pub mod execute;

use config::PreprocessConfig;
use execute::InstanceState;
use triton_backend::backend::Backend;
use triton_backend::model::{InstanceKind, Model, ModelInstance};
use triton_backend::request::Request;
use triton_backend::{ErrorCode, TritonError};

pub struct Preprocess;

impl Backend for Preprocess {
    const NAME: &'static str = "preprocess";
    type ModelState = PreprocessConfig;
    type InstanceState = InstanceState;

    fn load_model(model: &Model) -> Result<PreprocessConfig, TritonError> {
        PreprocessConfig::from_model_config(&model.config()?).map_err(|e| TritonError::invalid_arg(e.to_string()))
    }

    fn load_instance(instance: &ModelInstance, config: &PreprocessConfig) -> Result<InstanceState, TritonError> {
        if instance.kind()? == InstanceKind::Gpu {
            return Err(TritonError::new(
                ErrorCode::Unsupported,
                format!(
                    "instance '{}': preprocess has no KIND_GPU path yet (nvJPEG decode is not implemented); \
                     use instance_group kind: KIND_CPU",
                    instance.name()?
                ),
            ));
        }
        Ok(InstanceState::new(config))
    }

    fn execute(instance: ModelInstance, state: &mut InstanceState, requests: Vec<Request>) {
        execute::execute(instance, state, requests)
    }
}

triton_backend::export_backend!(Preprocess);
