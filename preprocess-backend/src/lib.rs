//! `libtriton_preprocess.so`: the Triton backend of the ingest pipeline's first stage.
//! One request = one encoded photo (JPEG, PNG, WebP); it answers with the YOLO letterbox
//! input, the CLIP input, the capped original, the letterbox transform and the photo's size
//! (contract in `docs/preprocess.md`).
//!
//! - [`config`]: the model config parameters and tensors, validated once at load;
//! - [`shared_budget`]: the decode pixel budget every preprocess model of the process shares;
//! - [`execute`]: the execute call over a dynamic batch (photos decoded in parallel, each
//!   within the budget).
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
pub mod shared_budget;

use config::PreprocessConfig;
use execute::InstanceState;
use preprocess_core::PixelBudget;
use std::sync::Arc;
use triton_backend::backend::Backend;
use triton_backend::model::{InstanceKind, Model, ModelInstance};
use triton_backend::request::Request;
use triton_backend::{ErrorCode, TritonError};

pub struct Preprocess;

/// A loaded model: its config and the process-wide budget its decodes reserve from.
#[derive(Debug)]
pub struct PreprocessModel {
    pub config: PreprocessConfig,
    pub budget: Arc<PixelBudget>,
}

impl Backend for Preprocess {
    const NAME: &'static str = "preprocess";
    type ModelState = PreprocessModel;
    type InstanceState = InstanceState;

    fn load_model(model: &Model) -> Result<PreprocessModel, TritonError> {
        let config = PreprocessConfig::from_model_config(&model.config()?)
            .map_err(|e| TritonError::invalid_arg(e.to_string()))?;
        let budget = shared_budget::process_budget(config.decode_pixel_budget).map_err(TritonError::invalid_arg)?;
        Ok(PreprocessModel { config, budget })
    }

    fn load_instance(instance: &ModelInstance, model: &PreprocessModel) -> Result<InstanceState, TritonError> {
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
        Ok(InstanceState::new(model))
    }

    fn execute(instance: ModelInstance, state: &mut InstanceState, requests: Vec<Request>) {
        execute::execute(instance, state, requests)
    }
}

triton_backend::export_backend!(Preprocess);
