//! Requests handed to a backend's execute, released back to Triton on drop, and their inputs.

use crate::{c_string, call, sys, DataType, MemoryType, TritonError};
use std::borrow::Cow;
use std::marker::PhantomData;

/// One inference request. Dropping it releases it (`TRITONBACKEND_RequestRelease`), which
/// must happen after its response was created and its statistics reported.
pub struct Request {
    raw: *mut sys::TRITONBACKEND_Request,
}

impl Request {
    /// Takes ownership of a request Triton passed to execute.
    ///
    /// # Safety
    /// `raw` is a request from the current execute call, owned by nobody else.
    pub unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Request) -> Self {
        Self { raw }
    }

    pub(crate) fn as_raw(&self) -> *mut sys::TRITONBACKEND_Request {
        self.raw
    }

    /// The client's request id, empty if it gave none.
    pub fn id(&self) -> String {
        let mut id = std::ptr::null();
        // SAFETY: valid request; the id is copied.
        unsafe {
            match call!(TRITONBACKEND_RequestId(self.raw, &mut id)) {
                Ok(()) => crate::str_from_c(id),
                Err(_) => String::new(),
            }
        }
    }

    /// The named input, with its properties read once.
    pub fn input(&self, name: &str) -> Result<Input<'_>, TritonError> {
        let cname = c_string(name)?;
        let mut raw = std::ptr::null_mut();
        let (mut datatype, mut shape, mut dims, mut byte_size, mut buffers) =
            (0, std::ptr::null(), 0u32, 0u64, 0u32);
        // SAFETY: valid request; the shape is copied before the input could go away.
        unsafe {
            call!(TRITONBACKEND_RequestInput(self.raw, cname.as_ptr(), &mut raw))
                .map_err(|e| e.context(format!("input '{name}'")))?;
            call!(TRITONBACKEND_InputProperties(
                raw,
                std::ptr::null_mut(),
                &mut datatype,
                &mut shape,
                &mut dims,
                &mut byte_size,
                &mut buffers,
            ))?;
            let shape = if dims == 0 { Vec::new() } else { std::slice::from_raw_parts(shape, dims as usize).to_vec() };
            Ok(Input {
                raw,
                name: name.to_string(),
                datatype: DataType::from_raw(datatype),
                shape,
                byte_size,
                buffer_count: buffers,
                _request: PhantomData,
            })
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: we own the request; release failures cannot be reported anywhere useful.
        unsafe {
            let err = sys::TRITONBACKEND_RequestRelease(self.raw, sys::TRITONSERVER_REQUEST_RELEASE_ALL);
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
        }
    }
}

/// An input tensor of a request; its buffers live as long as the request.
pub struct Input<'r> {
    raw: *mut sys::TRITONBACKEND_Input,
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub byte_size: u64,
    buffer_count: u32,
    _request: PhantomData<&'r Request>,
}

impl<'r> Input<'r> {
    /// The tensor's bytes in host memory: borrowed when Triton holds them in one host buffer,
    /// gathered into one allocation when they arrive in several.
    pub fn host_bytes(&self) -> Result<Cow<'r, [u8]>, TritonError> {
        let mut pieces = Vec::with_capacity(self.buffer_count as usize);
        for index in 0..self.buffer_count {
            let (mut ptr, mut size) = (std::ptr::null(), 0u64);
            let (mut memory_type, mut memory_id) = (sys::TRITONSERVER_MEMORY_CPU, 0i64);
            // SAFETY: index < buffer_count; the buffer lives as long as the request ('r).
            let piece: &'r [u8] = unsafe {
                call!(TRITONBACKEND_InputBuffer(self.raw, index, &mut ptr, &mut size, &mut memory_type, &mut memory_id))?;
                if size == 0 {
                    &[]
                } else {
                    std::slice::from_raw_parts(ptr as *const u8, size as usize)
                }
            };
            if !MemoryType::from_raw(memory_type).is_host() {
                return Err(TritonError::internal(format!(
                    "input '{}' is in GPU memory; this instance reads host memory",
                    self.name
                )));
            }
            pieces.push(piece);
        }
        Ok(match pieces.as_slice() {
            [] => Cow::Borrowed(&[]),
            [one] => Cow::Borrowed(one),
            many => Cow::Owned(many.concat()),
        })
    }
}
