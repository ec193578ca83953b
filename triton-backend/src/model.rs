//! Borrowed handles to the Triton model and model instance a backend is serving, and the
//! per-model / per-instance state slots Triton keeps for it.

use crate::infer::Server;
use crate::message::Message;
use crate::request::Request;
use crate::{call, sys, TritonError};
use std::ffi::c_void;

/// The model Triton is loading or serving. Triton owns it; this is a copyable borrow.
#[derive(Clone, Copy)]
pub struct Model {
    raw: *mut sys::TRITONBACKEND_Model,
}

impl Model {
    /// # Safety
    /// `raw` is the model handle Triton passed to an entry point, valid for that call.
    pub unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Model) -> Self {
        Self { raw }
    }

    pub fn name(&self) -> Result<String, TritonError> {
        let mut name = std::ptr::null();
        // SAFETY: valid handle; the name is copied before returning.
        unsafe {
            call!(TRITONBACKEND_ModelName(self.raw, &mut name))?;
            Ok(crate::str_from_c(name))
        }
    }

    /// The model configuration as JSON (protobuf JSON mapping, config version 1).
    pub fn config(&self) -> Result<serde_json::Value, TritonError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: we own the returned message and wrap it for deletion.
        unsafe {
            call!(TRITONBACKEND_ModelConfig(self.raw, 1, &mut raw))?;
            Message::from_raw(raw).to_json()
        }
    }

    pub fn server(&self) -> Result<Server, TritonError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid handle; the server outlives every model it serves.
        unsafe {
            call!(TRITONBACKEND_ModelServer(self.raw, &mut raw))?;
            Ok(Server::from_raw(raw))
        }
    }

    /// Stores boxed state for this model; [`Model::take_state`] must reclaim it at finalize.
    pub fn set_state<T>(&self, state: Box<T>) -> Result<(), TritonError> {
        let ptr = Box::into_raw(state) as *mut c_void;
        // SAFETY: valid handle; on failure we reclaim the box so nothing leaks.
        unsafe {
            call!(TRITONBACKEND_ModelSetState(self.raw, ptr)).inspect_err(|_| {
                drop(Box::from_raw(ptr as *mut T));
            })
        }
    }

    /// # Safety
    /// The state was stored by [`Model::set_state`] with the same `T` and is not borrowed
    /// elsewhere for the lifetime of the returned reference.
    pub unsafe fn state<'a, T>(&self) -> Result<&'a T, TritonError> {
        let mut ptr = std::ptr::null_mut();
        call!(TRITONBACKEND_ModelState(self.raw, &mut ptr))?;
        (ptr as *const T).as_ref().ok_or_else(|| TritonError::internal("model state is missing"))
    }

    /// # Safety
    /// As for [`Model::state`]; afterwards no reference to the state may remain.
    pub unsafe fn take_state<T>(&self) -> Result<Option<Box<T>>, TritonError> {
        let mut ptr = std::ptr::null_mut();
        call!(TRITONBACKEND_ModelState(self.raw, &mut ptr))?;
        call!(TRITONBACKEND_ModelSetState(self.raw, std::ptr::null_mut()))?;
        Ok((!ptr.is_null()).then(|| Box::from_raw(ptr as *mut T)))
    }
}

/// Instance kinds a model config can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    Cpu,
    Gpu,
    Other,
}

/// One instance of the model (Triton calls execute on it from one thread at a time).
#[derive(Clone, Copy)]
pub struct ModelInstance {
    raw: *mut sys::TRITONBACKEND_ModelInstance,
}

impl ModelInstance {
    /// # Safety
    /// `raw` is the instance handle Triton passed to an entry point, valid for that call.
    pub unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_ModelInstance) -> Self {
        Self { raw }
    }

    pub fn name(&self) -> Result<String, TritonError> {
        let mut name = std::ptr::null();
        // SAFETY: valid handle; the name is copied.
        unsafe {
            call!(TRITONBACKEND_ModelInstanceName(self.raw, &mut name))?;
            Ok(crate::str_from_c(name))
        }
    }

    pub fn model(&self) -> Result<Model, TritonError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid handle; the model outlives its instances.
        unsafe {
            call!(TRITONBACKEND_ModelInstanceModel(self.raw, &mut raw))?;
            Ok(Model::from_raw(raw))
        }
    }

    pub fn kind(&self) -> Result<InstanceKind, TritonError> {
        let mut kind = 0;
        // SAFETY: valid handle and out-pointer.
        unsafe { call!(TRITONBACKEND_ModelInstanceKind(self.raw, &mut kind))? };
        Ok(match kind {
            sys::TRITONSERVER_INSTANCEGROUPKIND_CPU => InstanceKind::Cpu,
            sys::TRITONSERVER_INSTANCEGROUPKIND_GPU => InstanceKind::Gpu,
            _ => InstanceKind::Other,
        })
    }

    pub fn device_id(&self) -> Result<i32, TritonError> {
        let mut id = 0;
        // SAFETY: valid handle and out-pointer.
        unsafe { call!(TRITONBACKEND_ModelInstanceDeviceId(self.raw, &mut id))? };
        Ok(id)
    }

    /// Stores boxed state for this instance; [`ModelInstance::take_state`] reclaims it.
    pub fn set_state<T>(&self, state: Box<T>) -> Result<(), TritonError> {
        let ptr = Box::into_raw(state) as *mut c_void;
        // SAFETY: valid handle; on failure we reclaim the box.
        unsafe {
            call!(TRITONBACKEND_ModelInstanceSetState(self.raw, ptr)).inspect_err(|_| {
                drop(Box::from_raw(ptr as *mut T));
            })
        }
    }

    /// # Safety
    /// The state was stored by [`ModelInstance::set_state`] with the same `T`. Triton never
    /// runs execute concurrently for one instance, so one mutable borrow at a time holds.
    pub unsafe fn state_mut<'a, T>(&self) -> Result<&'a mut T, TritonError> {
        let mut ptr = std::ptr::null_mut();
        call!(TRITONBACKEND_ModelInstanceState(self.raw, &mut ptr))?;
        (ptr as *mut T).as_mut().ok_or_else(|| TritonError::internal("model instance state is missing"))
    }

    /// # Safety
    /// As for [`ModelInstance::state_mut`]; afterwards no reference to the state may remain.
    pub unsafe fn take_state<T>(&self) -> Result<Option<Box<T>>, TritonError> {
        let mut ptr = std::ptr::null_mut();
        call!(TRITONBACKEND_ModelInstanceState(self.raw, &mut ptr))?;
        call!(TRITONBACKEND_ModelInstanceSetState(self.raw, std::ptr::null_mut()))?;
        Ok((!ptr.is_null()).then(|| Box::from_raw(ptr as *mut T)))
    }

    /// Records one request's outcome and timings (shown by /v2/models/<m>/stats and /metrics).
    pub fn report_request(&self, request: &Request, success: bool, times: &ExecTimes) -> Result<(), TritonError> {
        // SAFETY: both handles are valid; the request has not been released yet.
        unsafe {
            call!(TRITONBACKEND_ModelInstanceReportStatistics(
                self.raw,
                request.as_raw(),
                success,
                times.exec_start_ns,
                times.compute_start_ns,
                times.compute_end_ns,
                times.exec_end_ns,
            ))
        }
    }

    /// Records one execution of `batch_size` requests (the batch_stats of the stats endpoint).
    pub fn report_batch(&self, batch_size: u64, times: &ExecTimes) -> Result<(), TritonError> {
        // SAFETY: valid handle.
        unsafe {
            call!(TRITONBACKEND_ModelInstanceReportBatchStatistics(
                self.raw,
                batch_size,
                times.exec_start_ns,
                times.compute_start_ns,
                times.compute_end_ns,
                times.exec_end_ns,
            ))
        }
    }
}

/// The four timestamps of one execute call, as Triton's statistics define them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecTimes {
    pub exec_start_ns: u64,
    pub compute_start_ns: u64,
    pub compute_end_ns: u64,
    pub exec_end_ns: u64,
}
