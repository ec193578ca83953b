//! Responses to backend requests: created first in execute, filled, then sent exactly once.

use crate::request::Request;
use crate::{c_string, call, sys, DataType, MemoryType, TritonError};
use std::marker::PhantomData;

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
        let buffer = self.output_buffer_in(name, datatype, shape, MemoryType::Cpu, 0)?;
        buffer.into_host().ok_or_else(|| TritonError::internal(format!("output '{name}' was placed in GPU memory")))
    }

    /// Creates an output and returns its buffer of exactly `shape`'s byte size, in
    /// `preferred` memory if Triton can place it there (the caller handles either).
    pub fn output_buffer_in(
        &mut self,
        name: &str,
        datatype: DataType,
        shape: &[i64],
        preferred: MemoryType,
        preferred_id: i64,
    ) -> Result<OutputBuffer<'_>, TritonError> {
        let elem = datatype
            .size()
            .ok_or_else(|| TritonError::internal(format!("output '{name}' has an unsized data type")))?;
        let bytes = shape.iter().try_fold(elem, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)));
        let bytes = bytes.ok_or_else(|| TritonError::internal(format!("output '{name}' has a bad shape {shape:?}")))?;
        let cname = c_string(name)?;
        let mut output = std::ptr::null_mut();
        let mut buffer = std::ptr::null_mut();
        let (mut memory_type, mut memory_id) = (preferred.to_raw(), preferred_id);
        // SAFETY: valid response; the buffer belongs to the output, which lives as long as the
        // response, and the returned borrow of `self` keeps it from being sent meanwhile.
        unsafe {
            call!(TRITONBACKEND_ResponseOutput(
                self.raw,
                &mut output,
                cname.as_ptr(),
                datatype.to_raw(),
                shape.as_ptr(),
                shape.len() as u32,
            ))?;
            call!(TRITONBACKEND_OutputBuffer(output, &mut buffer, bytes as u64, &mut memory_type, &mut memory_id))
                .map_err(|e| e.context(format!("output '{name}'")))?;
        }
        Ok(OutputBuffer {
            ptr: buffer,
            byte_size: bytes,
            memory_type: MemoryType::from_raw(memory_type),
            memory_type_id: memory_id,
            _response: PhantomData,
        })
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

/// An output tensor's buffer, borrowed from its unsent response.
pub struct OutputBuffer<'a> {
    pub ptr: *mut std::ffi::c_void,
    pub byte_size: usize,
    pub memory_type: MemoryType,
    pub memory_type_id: i64,
    _response: PhantomData<&'a mut Response>,
}

impl<'a> OutputBuffer<'a> {
    /// The bytes, if the buffer is in host memory.
    pub fn into_host(self) -> Option<&'a mut [u8]> {
        if !self.memory_type.is_host() {
            return None;
        }
        if self.byte_size == 0 {
            return Some(&mut []);
        }
        // SAFETY: Triton gave `byte_size` writable host bytes that live as long as the
        // response, which this buffer borrows mutably.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.byte_size) })
    }
}
