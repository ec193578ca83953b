//! Safe layer over `triton-backend-sys`, written once and shared by every backend of the
//! project.
//!
//! - [`error`]: `TritonError`, the one error type, and the conversions to and from
//!   `TRITONSERVER_Error*` (messages are never lost);
//! - [`entry`]: [`entry::guard`], which every `extern "C"` entry point and callback goes
//!   through so that a panic or an error becomes a Triton error instead of aborting the server;
//! - [`backend`]: the [`backend::Backend`] trait a library implements and
//!   [`export_backend!`], which writes its `TRITONBACKEND_*` entry points;
//! - [`model_config`]: reading parameters and tensors from a model config's JSON;
//! - [`model`]: borrowed handles to the model and model instance, their configs and statistics;
//! - [`request`] / [`response`]: RAII requests (released on drop) and responses (sent once);
//! - [`responder`]: one execute call's responses, errors and timings, answered exactly once
//!   (also when execute unwinds);
//! - [`infer`]: in-process inference against other models (requests, responses and the
//!   response allocator, each releasing itself), waiting on [`completion`], the pure
//!   wait-with-deadline between a waiter and Triton's callbacks.
//!
//! Handles that Triton owns are borrowed (`Model`, `ModelInstance`); handles the backend owns are
//! released by `Drop`.
//!
//! Layer: the safe wrapper, importing only `triton-backend-sys`. Imported by both backends.

pub mod backend;
pub mod completion;
pub mod entry;
pub mod error;
pub mod infer;
pub mod message;
pub mod model;
pub mod model_config;
pub mod request;
pub mod responder;
pub mod response;
pub mod time;

pub use error::{ErrorCode, TritonError};
pub use triton_backend_sys as sys;

/// Element types this project exchanges with Triton.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    Uint8,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Other(sys::TRITONSERVER_DataType),
}

impl DataType {
    pub fn from_raw(raw: sys::TRITONSERVER_DataType) -> Self {
        match raw {
            sys::TRITONSERVER_TYPE_BOOL => Self::Bool,
            sys::TRITONSERVER_TYPE_UINT8 => Self::Uint8,
            sys::TRITONSERVER_TYPE_INT32 => Self::Int32,
            sys::TRITONSERVER_TYPE_INT64 => Self::Int64,
            sys::TRITONSERVER_TYPE_FP16 => Self::Fp16,
            sys::TRITONSERVER_TYPE_FP32 => Self::Fp32,
            other => Self::Other(other),
        }
    }

    pub fn to_raw(self) -> sys::TRITONSERVER_DataType {
        match self {
            Self::Bool => sys::TRITONSERVER_TYPE_BOOL,
            Self::Uint8 => sys::TRITONSERVER_TYPE_UINT8,
            Self::Int32 => sys::TRITONSERVER_TYPE_INT32,
            Self::Int64 => sys::TRITONSERVER_TYPE_INT64,
            Self::Fp16 => sys::TRITONSERVER_TYPE_FP16,
            Self::Fp32 => sys::TRITONSERVER_TYPE_FP32,
            Self::Other(raw) => raw,
        }
    }

    /// Bytes per element, `None` for types this project does not size (strings and unknowns).
    pub fn size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::Uint8 => Some(1),
            Self::Fp16 => Some(2),
            Self::Int32 | Self::Fp32 => Some(4),
            Self::Int64 => Some(8),
            Self::Other(_) => None,
        }
    }
}

/// Where a tensor's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    Cpu,
    CpuPinned,
    Gpu,
}

impl MemoryType {
    pub fn from_raw(raw: sys::TRITONSERVER_MemoryType) -> Self {
        match raw {
            sys::TRITONSERVER_MEMORY_CPU_PINNED => Self::CpuPinned,
            sys::TRITONSERVER_MEMORY_GPU => Self::Gpu,
            _ => Self::Cpu,
        }
    }

    pub fn to_raw(self) -> sys::TRITONSERVER_MemoryType {
        match self {
            Self::Cpu => sys::TRITONSERVER_MEMORY_CPU,
            Self::CpuPinned => sys::TRITONSERVER_MEMORY_CPU_PINNED,
            Self::Gpu => sys::TRITONSERVER_MEMORY_GPU,
        }
    }

    pub fn is_host(self) -> bool {
        matches!(self, Self::Cpu | Self::CpuPinned)
    }
}

/// Converts a Rust string to a C string, reporting interior NULs as invalid arguments.
pub(crate) fn c_string(text: &str) -> Result<std::ffi::CString, TritonError> {
    std::ffi::CString::new(text).map_err(|_| TritonError::invalid_arg(format!("name contains a NUL byte: {text:?}")))
}

/// Copies a C string owned by Triton; a null pointer reads as empty.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string valid for the duration of the call.
pub(crate) unsafe fn str_from_c(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        String::new()
    } else {
        std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
    }
}
