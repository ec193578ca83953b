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
//! the exported entry points.

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
use triton_backend::entry::{check_api_version, guard, log};
use triton_backend::model::{InstanceKind, Model, ModelInstance};
use triton_backend::request::Request;
use triton_backend::{sys, ErrorCode, TritonError};

type RawError = *mut sys::TRITONSERVER_Error;

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_Initialize(_backend: *mut sys::TRITONBACKEND_Backend) -> RawError {
    guard("TRITONBACKEND_Initialize", || check_api_version("box_embed"))
}

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(model: *mut sys::TRITONBACKEND_Model) -> RawError {
    guard("TRITONBACKEND_ModelInitialize", || {
        // SAFETY: handle from Triton for this call.
        let model = unsafe { Model::from_raw(model) };
        let name = model.name()?;
        let config = ModelConfig::from_model_config(&model.config()?)
            .map_err(|e| TritonError::invalid_arg(format!("model '{name}': {e}")))?;
        log(sys::TRITONSERVER_LOG_INFO, &format!("box_embed model '{name}': {config:?}"));
        model.set_state(Box::new(config))
    })
}

/// # Safety
/// Called by Triton only, with handles that are valid for the duration of the call.
#[no_mangle]
pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(model: *mut sys::TRITONBACKEND_Model) -> RawError {
    guard("TRITONBACKEND_ModelFinalize", || {
        // SAFETY: the state was set in ModelInitialize with this type; instances are gone.
        unsafe { drop(Model::from_raw(model).take_state::<ModelConfig>()?) };
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
        let model = instance.model()?;
        let config = unsafe { model.state::<ModelConfig>()? }.clone();
        let name = instance.name()?;
        let config = match config {
            ModelConfig::Boxes(config) => config,
            ModelConfig::Faces(config) => {
                // The face warp kernel exists (cuda-kernels `face_warp_f32`); the device path
                // for faces does not yet, so a GPU instance refuses to load rather than
                // silently running on the CPU.
                if instance.kind()? == InstanceKind::Gpu {
                    return Err(TritonError::new(
                        ErrorCode::Unsupported,
                        format!("instance '{name}': face mode runs on KIND_CPU instances only"),
                    ));
                }
                return instance.set_state(Box::new(InstanceState::faces(config, model.server()?)?));
            }
        };
        let state = match instance.kind()? {
            // KIND_MODEL leaves placement to the backend: the CPU path, as before GPU support.
            InstanceKind::Cpu | InstanceKind::Other => InstanceState::cpu(config, model.server()?)?,
            InstanceKind::Gpu => {
                let device_id = instance.device_id()?;
                let state = InstanceState::gpu(config, model.server()?, device_id)
                    .map_err(|e| e.context(format!("instance '{name}' (KIND_GPU)")))?;
                log(sys::TRITONSERVER_LOG_INFO, &format!("box_embed instance '{name}': crop kernels built for GPU {device_id}"));
                state
            }
        };
        instance.set_state(Box::new(state))
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
    // From here the requests are ours: they are wrapped first, so that they are released
    // even if the rest fails (returning an error would make Triton release them too).
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
        // The requests were released (on unwind or by execute); Triton must not release them
        // again, so log instead of returning the error.
        // SAFETY: we own the error.
        let error = unsafe { TritonError::from_raw(error) };
        log(sys::TRITONSERVER_LOG_ERROR, &format!("box_embed execute failed: {error}"));
    }
    std::ptr::null_mut()
}
