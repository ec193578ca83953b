//! The single wrapper for every `extern "C"` function Triton calls: the entry points a backend
//! exports and the callbacks of in-process inference.

use crate::{call, sys, ErrorCode, TritonError};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body` and converts its outcome into what Triton expects from an entry point: null on
/// success, an owned `TRITONSERVER_Error*` on error. A panic is caught and reported as an
/// INTERNAL error, because unwinding across the C boundary would abort the whole server.
pub fn guard<F>(entry_point: &str, body: F) -> *mut sys::TRITONSERVER_Error
where
    F: FnOnce() -> Result<(), TritonError>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(error)) => error.into_raw(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            TritonError::new(ErrorCode::Internal, format!("{entry_point} panicked: {what}")).into_raw()
        }
    }
}

/// [`guard`] for a callback that returns nothing to Triton: an error or a panic can only be
/// logged.
pub fn guard_callback<F>(callback: &str, body: F)
where
    F: FnOnce(),
{
    let error = guard(callback, || {
        body();
        Ok(())
    });
    if !error.is_null() {
        // SAFETY: `guard` returned an error we own.
        let error = unsafe { TritonError::from_raw(error) };
        log(sys::TRITONSERVER_LOG_ERROR, &error.to_string());
    }
}

/// For `TRITONBACKEND_Initialize`: the server must offer the backend API these declarations
/// were written for (same major, at least our minor); `backend` names the library in the error.
pub fn check_api_version(backend: &str) -> Result<(), TritonError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: valid out-pointers.
    unsafe { call!(TRITONBACKEND_ApiVersion(&mut major, &mut minor))? };
    if major != sys::TRITONBACKEND_API_VERSION_MAJOR || minor < sys::TRITONBACKEND_API_VERSION_MINOR {
        return Err(TritonError::new(
            ErrorCode::Unsupported,
            format!(
                "{backend} needs backend API {}.{}+, the server offers {major}.{minor}",
                sys::TRITONBACKEND_API_VERSION_MAJOR,
                sys::TRITONBACKEND_API_VERSION_MINOR
            ),
        ));
    }
    Ok(())
}

/// Writes a line to Triton's log at the given level (the message names its backend).
pub fn log(level: sys::TRITONSERVER_LogLevel, message: &str) {
    let Ok(text) = std::ffi::CString::new(message.replace('\0', " ")) else { return };
    let file = c"rust-backend";
    // SAFETY: both strings outlive the call; a logging failure is not worth reporting.
    unsafe {
        if sys::TRITONSERVER_LogIsEnabled(level) {
            let err = sys::TRITONSERVER_LogMessage(level, file.as_ptr(), 0, text.as_ptr());
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
        }
    }
}
