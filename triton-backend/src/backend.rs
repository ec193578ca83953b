//! What a backend library implements ([`Backend`]) and the Triton entry points built from it
//! once for every library ([`export_backend!`](crate::export_backend)).

use crate::entry::{check_api_version, guard, log};
use crate::model::{Model, ModelInstance};
use crate::request::Request;
use crate::{sys, TritonError};
use std::fmt::Debug;

/// A backend: how a model and its instances are loaded, and how an instance executes.
pub trait Backend {
    /// Names the library in errors and log lines, e.g. "box_embed".
    const NAME: &'static str;
    /// Parsed once per model at load (its config, validated) and shared by its instances.
    type ModelState: Debug + 'static;
    /// One per model instance; execute never runs concurrently for one instance.
    type InstanceState: 'static;

    fn load_model(model: &Model) -> Result<Self::ModelState, TritonError>;

    fn load_instance(instance: &ModelInstance, model: &Self::ModelState) -> Result<Self::InstanceState, TritonError>;

    /// Answers and releases every request; per-request errors go on their own responses.
    fn execute(instance: ModelInstance, state: &mut Self::InstanceState, requests: Vec<Request>);
}

type RawError = *mut sys::TRITONSERVER_Error;

/// `TRITONBACKEND_Initialize`.
pub fn initialize<B: Backend>() -> RawError {
    guard("TRITONBACKEND_Initialize", || check_api_version(B::NAME))
}

/// `TRITONBACKEND_ModelInitialize`.
///
/// # Safety
/// `model` is the handle Triton passed to this call.
pub unsafe fn model_initialize<B: Backend>(model: *mut sys::TRITONBACKEND_Model) -> RawError {
    guard("TRITONBACKEND_ModelInitialize", || {
        // SAFETY: handle from Triton for this call.
        let model = unsafe { Model::from_raw(model) };
        let name = model.name()?;
        let state = B::load_model(&model).map_err(|e| e.context(format!("model '{name}'")))?;
        log(sys::TRITONSERVER_LOG_INFO, &format!("{} model '{name}': {state:?}", B::NAME));
        model.set_state(Box::new(state))
    })
}

/// `TRITONBACKEND_ModelFinalize`.
///
/// # Safety
/// `model` is the handle Triton passed to this call; its instances are finalized.
pub unsafe fn model_finalize<B: Backend>(model: *mut sys::TRITONBACKEND_Model) -> RawError {
    guard("TRITONBACKEND_ModelFinalize", || {
        // SAFETY: the state was set by model_initialize with this type.
        unsafe { drop(Model::from_raw(model).take_state::<B::ModelState>()?) };
        Ok(())
    })
}

/// `TRITONBACKEND_ModelInstanceInitialize`.
///
/// # Safety
/// `instance` is the handle Triton passed to this call.
pub unsafe fn instance_initialize<B: Backend>(instance: *mut sys::TRITONBACKEND_ModelInstance) -> RawError {
    guard("TRITONBACKEND_ModelInstanceInitialize", || {
        // SAFETY: handle from Triton for this call; the model state outlives its instances.
        let instance = unsafe { ModelInstance::from_raw(instance) };
        let model_state = unsafe { instance.model()?.state::<B::ModelState>()? };
        let state = B::load_instance(&instance, model_state)?;
        instance.set_state(Box::new(state))
    })
}

/// `TRITONBACKEND_ModelInstanceFinalize`.
///
/// # Safety
/// `instance` is the handle Triton passed to this call.
pub unsafe fn instance_finalize<B: Backend>(instance: *mut sys::TRITONBACKEND_ModelInstance) -> RawError {
    guard("TRITONBACKEND_ModelInstanceFinalize", || {
        // SAFETY: the state was set by instance_initialize with this type.
        unsafe { drop(ModelInstance::from_raw(instance).take_state::<B::InstanceState>()?) };
        Ok(())
    })
}

/// `TRITONBACKEND_ModelInstanceExecute`. Always returns null: the requests are ours from the
/// first line, and returning an error would make Triton release them a second time, so a
/// failure is logged instead.
///
/// # Safety
/// The arguments are those Triton passed to this call: `request_count` valid requests.
pub unsafe fn instance_execute<B: Backend>(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    requests: *mut *mut sys::TRITONBACKEND_Request,
    request_count: u32,
) -> RawError {
    // Wrapped first, so that they are released even if the rest fails.
    // SAFETY: Triton hands over `request_count` valid requests.
    let owned: Vec<Request> = unsafe {
        std::slice::from_raw_parts(requests, request_count as usize).iter().map(|&r| Request::from_raw(r)).collect()
    };
    let error = guard("TRITONBACKEND_ModelInstanceExecute", move || {
        // SAFETY: handle from Triton; execute never runs concurrently for one instance.
        let instance = unsafe { ModelInstance::from_raw(instance) };
        let state = unsafe { instance.state_mut::<B::InstanceState>()? };
        B::execute(instance, state, owned);
        Ok(())
    });
    if !error.is_null() {
        // SAFETY: we own the error.
        let error = unsafe { TritonError::from_raw(error) };
        log(sys::TRITONSERVER_LOG_ERROR, &format!("{} execute failed: {error}", B::NAME));
    }
    std::ptr::null_mut()
}

/// Exports the `TRITONBACKEND_*` entry points of a library for a type implementing
/// [`Backend`]. Use once per cdylib: `triton_backend::export_backend!(MyBackend);`
#[macro_export]
macro_rules! export_backend {
    ($backend:ty) => {
        /// # Safety
        /// Called by Triton only.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_Initialize(
            _backend: *mut $crate::sys::TRITONBACKEND_Backend,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            $crate::backend::initialize::<$backend>()
        }

        /// # Safety
        /// Called by Triton only, with a handle valid for the call.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInitialize(
            model: *mut $crate::sys::TRITONBACKEND_Model,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            unsafe { $crate::backend::model_initialize::<$backend>(model) }
        }

        /// # Safety
        /// Called by Triton only, with a handle valid for the call.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelFinalize(
            model: *mut $crate::sys::TRITONBACKEND_Model,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            unsafe { $crate::backend::model_finalize::<$backend>(model) }
        }

        /// # Safety
        /// Called by Triton only, with a handle valid for the call.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
            instance: *mut $crate::sys::TRITONBACKEND_ModelInstance,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            unsafe { $crate::backend::instance_initialize::<$backend>(instance) }
        }

        /// # Safety
        /// Called by Triton only, with a handle valid for the call.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
            instance: *mut $crate::sys::TRITONBACKEND_ModelInstance,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            unsafe { $crate::backend::instance_finalize::<$backend>(instance) }
        }

        /// # Safety
        /// Called by Triton only, with `request_count` valid requests it hands over.
        #[no_mangle]
        pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceExecute(
            instance: *mut $crate::sys::TRITONBACKEND_ModelInstance,
            requests: *mut *mut $crate::sys::TRITONBACKEND_Request,
            request_count: u32,
        ) -> *mut $crate::sys::TRITONSERVER_Error {
            unsafe { $crate::backend::instance_execute::<$backend>(instance, requests, request_count) }
        }
    };
}
