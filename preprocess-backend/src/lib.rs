//! `libtriton_preprocess.so`: the Triton backend of the ingest pipeline's first stage.
//! One request = one encoded photo (JPEG, PNG, WebP); it answers with the YOLO letterbox
//! input, the CLIP input, the capped original, the letterbox transform and the photo's size
//! (contract in `docs/preprocess.md`).
//!
//! - [`config`]: the model config parameters and tensors, validated once at load;
//! - [`execute`]: the execute call over a dynamic batch (photos decoded in parallel).
//!
//! Pixel work lives in `preprocess-core` (no FFI); the Triton API in `triton-backend`. This
//! file holds only the exported entry points.
//!
//! Instances: KIND_CPU (and KIND_MODEL, which leaves placement to the backend) run the CPU
//! path. KIND_GPU instances fail their load with a clear error: the nvJPEG path is not
//! written yet, and silently decoding on the CPU under a GPU instance group would hide that
//! from whoever sized the deployment.

pub mod config;
pub mod execute;

use config::PreprocessConfig;
use execute::InstanceState;
use triton_backend::entry::{check_api_version, guard, log};
use triton_backend::model::{InstanceKind, Model, ModelInstance};
use triton_backend::request::Request;
use triton_backend::{sys, ErrorCode, TritonError};

type RawError = *mut sys::TRITONSERVER_Error;

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Initialize(_backend: *mut sys::TRITONBACKEND_Backend) -> RawError {
    guard("TRITONBACKEND_Initialize", || check_api_version("preprocess"))
}

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(model: *mut sys::TRITONBACKEND_Model) -> RawError {
    guard("TRITONBACKEND_ModelInitialize", || {
        // SAFETY: handle from Triton for this call.
        let model = unsafe { Model::from_raw(model) };
        let name = model.name()?;
        let config = PreprocessConfig::from_model_config(&model.config()?)
            .map_err(|e| TritonError::invalid_arg(format!("model '{name}': {e}")))?;
        log(sys::TRITONSERVER_LOG_INFO, &format!("preprocess model '{name}': {config:?}"));
        model.set_state(Box::new(config))
    })
}

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(model: *mut sys::TRITONBACKEND_Model) -> RawError {
    guard("TRITONBACKEND_ModelFinalize", || {
        // SAFETY: the state was set in ModelInitialize with this type; instances are gone.
        unsafe { drop(Model::from_raw(model).take_state::<PreprocessConfig>()?) };
        Ok(())
    })
}

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceInitialize(instance: *mut sys::TRITONBACKEND_ModelInstance) -> RawError {
    guard("TRITONBACKEND_ModelInstanceInitialize", || {
        // SAFETY: handle from Triton for this call; the model state outlives its instances.
        let instance = unsafe { ModelInstance::from_raw(instance) };
        let config = unsafe { instance.model()?.state::<PreprocessConfig>()? };
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
        instance.set_state(Box::new(InstanceState::new(config)))
    })
}

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceFinalize(instance: *mut sys::TRITONBACKEND_ModelInstance) -> RawError {
    guard("TRITONBACKEND_ModelInstanceFinalize", || {
        // SAFETY: the state was set in ModelInstanceInitialize with this type.
        unsafe { drop(ModelInstance::from_raw(instance).take_state::<InstanceState>()?) };
        Ok(())
    })
}

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    requests: *mut *mut sys::TRITONBACKEND_Request,
    request_count: u32,
) -> RawError {
    // The requests are wrapped first, so that they are released even if the rest fails
    // (returning an error would make Triton release them a second time).
    // SAFETY: Triton passes `request_count` valid requests that it hands over to us.
    let owned: Vec<Request> = unsafe {
        std::slice::from_raw_parts(requests, request_count as usize).iter().map(|&r| Request::from_raw(r)).collect()
    };
    let error = guard("TRITONBACKEND_ModelInstanceExecute", move || {
        // SAFETY: handle from Triton; execute never runs concurrently for one instance.
        let instance = unsafe { ModelInstance::from_raw(instance) };
        let state = unsafe { instance.state_mut::<InstanceState>()? };
        execute::execute(instance, state, owned);
        Ok(())
    });
    if !error.is_null() {
        // The requests were released (on unwind or by execute); log instead of returning.
        // SAFETY: we own the error.
        let error = unsafe { TritonError::from_raw(error) };
        log(sys::TRITONSERVER_LOG_ERROR, &format!("preprocess execute failed: {error}"));
    }
    std::ptr::null_mut()
}
