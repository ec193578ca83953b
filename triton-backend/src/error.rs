//! The project's one Triton error type and its conversions to and from `TRITONSERVER_Error*`.

use crate::sys;
use std::fmt;

/// Triton's error categories; clients see them (e.g. INVALID_ARG becomes HTTP 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unknown,
    Internal,
    NotFound,
    InvalidArg,
    Unavailable,
    Unsupported,
    AlreadyExists,
    Cancelled,
}

impl ErrorCode {
    fn to_raw(self) -> sys::TRITONSERVER_Error_Code {
        match self {
            Self::Unknown => sys::TRITONSERVER_ERROR_UNKNOWN,
            Self::Internal => sys::TRITONSERVER_ERROR_INTERNAL,
            Self::NotFound => sys::TRITONSERVER_ERROR_NOT_FOUND,
            Self::InvalidArg => sys::TRITONSERVER_ERROR_INVALID_ARG,
            Self::Unavailable => sys::TRITONSERVER_ERROR_UNAVAILABLE,
            Self::Unsupported => sys::TRITONSERVER_ERROR_UNSUPPORTED,
            Self::AlreadyExists => sys::TRITONSERVER_ERROR_ALREADY_EXISTS,
            Self::Cancelled => sys::TRITONSERVER_ERROR_CANCELLED,
        }
    }

    fn from_raw(raw: sys::TRITONSERVER_Error_Code) -> Self {
        match raw {
            sys::TRITONSERVER_ERROR_INTERNAL => Self::Internal,
            sys::TRITONSERVER_ERROR_NOT_FOUND => Self::NotFound,
            sys::TRITONSERVER_ERROR_INVALID_ARG => Self::InvalidArg,
            sys::TRITONSERVER_ERROR_UNAVAILABLE => Self::Unavailable,
            sys::TRITONSERVER_ERROR_UNSUPPORTED => Self::Unsupported,
            sys::TRITONSERVER_ERROR_ALREADY_EXISTS => Self::AlreadyExists,
            sys::TRITONSERVER_ERROR_CANCELLED => Self::Cancelled,
            _ => Self::Unknown,
        }
    }
}

/// An owned error: code plus message, independent of Triton's allocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TritonError {
    pub code: ErrorCode,
    pub message: String,
}

impl TritonError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArg, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// Prefixes the message with what was being done, keeping the code.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self { code: self.code, message: format!("{what}: {}", self.message) }
    }

    /// Takes ownership of a Triton error: copies code and message, then deletes it.
    ///
    /// # Safety
    /// `raw` is a non-null error that nobody else will use or delete.
    pub unsafe fn from_raw(raw: *mut sys::TRITONSERVER_Error) -> Self {
        let error = Self::borrowed_from_raw(raw);
        sys::TRITONSERVER_ErrorDelete(raw);
        error
    }

    /// Copies code and message of an error that stays owned elsewhere (a response's error).
    ///
    /// # Safety
    /// `raw` is a non-null, live error.
    pub unsafe fn borrowed_from_raw(raw: *mut sys::TRITONSERVER_Error) -> Self {
        let code = ErrorCode::from_raw(sys::TRITONSERVER_ErrorCode(raw));
        Self { code, message: crate::str_from_c(sys::TRITONSERVER_ErrorMessage(raw)) }
    }

    /// Hands the error to Triton, which takes ownership of the returned pointer.
    pub fn into_raw(self) -> *mut sys::TRITONSERVER_Error {
        let message = std::ffi::CString::new(self.message.replace('\0', " ")).expect("NUL bytes were replaced");
        // SAFETY: ErrorNew copies the message.
        unsafe { sys::TRITONSERVER_ErrorNew(self.code.to_raw(), message.as_ptr()) }
    }
}

/// Turns the return value of a Triton C call into a `Result`, taking ownership of any error.
///
/// # Safety
/// `raw` is null or an error returned by Triton to the caller, not used afterwards.
pub unsafe fn check(raw: *mut sys::TRITONSERVER_Error) -> Result<(), TritonError> {
    if raw.is_null() {
        Ok(())
    } else {
        Err(TritonError::from_raw(raw))
    }
}

/// Calls a Triton C function returning `TRITONSERVER_Error*` and converts the result.
#[macro_export]
macro_rules! call {
    ($f:ident($($arg:expr),* $(,)?)) => {
        $crate::error::check($crate::sys::$f($($arg),*))
            .map_err(|e| e.context(stringify!($f)))
    };
}
