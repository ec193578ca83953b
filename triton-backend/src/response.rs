//! Responses to backend requests: created first in execute, filled, then sent exactly once.

use crate::request::Request;
use crate::{c_string, call, sys, DataType, MemoryType, TritonError};

/// A response that has not been sent yet. Dropping it unsent deletes it, so a request whose
/// response was set aside still gets no dangling response object.
pub struct Response {
    raw: *mut sys::TRITONBACKEND_Response,
}

impl Response {
    pub fn new(request: &Request) -> Result<Self, TritonError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: the request is valid and not yet released.
        unsafe { call!(TRITONBACKEND_ResponseNew(&mut raw, request.as_raw()))? };
        Ok(Self { raw })
    }

    /// Creates an output and returns its host buffer of exactly `shape`'s byte size.
    pub fn output_buffer(&mut self, name: &str, datatype: DataType, shape: &[i64]) -> Result<&mut [u8], TritonError> {
        let elem = datatype
            .size()
            .ok_or_else(|| TritonError::internal(format!("output '{name}' has an unsized data type")))?;
        let bytes = shape.iter().try_fold(elem, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
        let bytes = bytes.ok_or_else(|| TritonError::internal(format!("output '{name}' has a bad shape {shape:?}")))?;
        let cname = c_string(name)?;
        let mut output = std::ptr::null_mut();
        let mut buffer = std::ptr::null_mut();
        let (mut memory_type, mut memory_id) = (sys::TRITONSERVER_MEMORY_CPU, 0i64);
        // SAFETY: valid response; the buffer belongs to the output, which lives as long as the
        // response, and `&mut self` keeps it from being sent while the slice is borrowed.
        unsafe {
            call!(TRITONBACKEND_ResponseOutput(
                self.raw,
                &mut output,
                cname.as_ptr(),
                datatype.to_raw(),
                shape.as_ptr(),
                shape.len() as u32,
            ))?;
            call!(TRITONBACKEND_OutputBuffer(output, &mut buffer, bytes as u64, &mut memory_type, &mut memory_id))?;
            if !MemoryType::from_raw(memory_type).is_host() {
                return Err(TritonError::internal(format!("output '{name}' was placed in GPU memory")));
            }
            if bytes == 0 {
                return Ok(&mut []);
            }
            Ok(std::slice::from_raw_parts_mut(buffer as *mut u8, bytes))
        }
    }

    /// Sends the response as final, carrying `outcome`'s error if any. A send failure is
    /// returned (the response is gone either way).
    pub fn send(self, outcome: Result<(), TritonError>) -> Result<(), TritonError> {
        let raw = self.raw;
        std::mem::forget(self);
        let error = match outcome {
            Ok(()) => std::ptr::null_mut(),
            Err(e) => e.into_raw(),
        };
        // SAFETY: send takes ownership of the response but not of the error, which we delete
        // afterwards (as Triton's own backends do).
        unsafe {
            let result = call!(TRITONBACKEND_ResponseSend(raw, sys::TRITONSERVER_RESPONSE_COMPLETE_FINAL, error));
            if !error.is_null() {
                sys::TRITONSERVER_ErrorDelete(error);
            }
            result
        }
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // SAFETY: the response was never sent, so we still own it.
        unsafe {
            let err = sys::TRITONBACKEND_ResponseDelete(self.raw);
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
        }
    }
}
