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

    /// Whether the client sent the named input (for inputs the config marks optional).
    pub fn has_input(&self, name: &str) -> Result<bool, TritonError> {
        let mut count = 0u32;
        // SAFETY: valid request; each name is compared before the next call.
        unsafe {
            call!(TRITONBACKEND_RequestInputCount(self.raw, &mut count))?;
            for index in 0..count {
                let mut input_name = std::ptr::null();
                call!(TRITONBACKEND_RequestInputName(self.raw, index, &mut input_name))?;
                if crate::str_from_c(input_name) == name {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The named input, with its properties read once.
    pub fn input(&self, name: &str) -> Result<Input<'_>, TritonError> {
        let cname = c_string(name)?;
        let mut raw = std::ptr::null_mut();
        let (mut datatype, mut shape, mut dims, mut byte_size, mut buffers) = (0, std::ptr::null(), 0u32, 0u64, 0u32);
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

/// One buffer of an input tensor, where Triton holds it.
#[derive(Debug, Clone, Copy)]
pub struct InputBuffer<'r> {
    pub ptr: *const std::ffi::c_void,
    pub byte_size: usize,
    pub memory_type: MemoryType,
    pub memory_type_id: i64,
    _request: PhantomData<&'r Request>,
}

impl<'r> InputBuffer<'r> {
    /// The bytes, if the buffer is in host memory.
    pub fn host(&self) -> Option<&'r [u8]> {
        if !self.memory_type.is_host() {
            return None;
        }
        if self.byte_size == 0 {
            return Some(&[]);
        }
        // SAFETY: Triton guarantees `byte_size` readable host bytes while the request lives.
        Some(unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.byte_size) })
    }
}

impl<'r> Input<'r> {
    /// The tensor's buffers in order. `preferred` is a hint: Triton returns each buffer
    /// where it holds it (a GPU instance asks for its device and still gets host buffers
    /// from HTTP clients).
    pub fn buffers(&self, preferred: MemoryType, preferred_id: i64) -> Result<Vec<InputBuffer<'r>>, TritonError> {
        (0..self.buffer_count)
            .map(|index| {
                let (mut ptr, mut size) = (std::ptr::null(), 0u64);
                let (mut memory_type, mut memory_id) = (preferred.to_raw(), preferred_id);
                // SAFETY: index < buffer_count; the buffer lives as long as the request ('r).
                unsafe {
                    call!(TRITONBACKEND_InputBuffer(
                        self.raw,
                        index,
                        &mut ptr,
                        &mut size,
                        &mut memory_type,
                        &mut memory_id
                    ))
                    .map_err(|e| e.context(format!("input '{}' buffer {index}", self.name)))?
                };
                Ok(InputBuffer {
                    ptr,
                    byte_size: size as usize,
                    memory_type: MemoryType::from_raw(memory_type),
                    memory_type_id: memory_id,
                    _request: PhantomData,
                })
            })
            .collect()
    }

    /// The tensor's bytes in host memory: borrowed when Triton holds them in one host buffer,
    /// gathered into one allocation when they arrive in several. A buffer in GPU memory is an
    /// error; [`Input::host_bytes_with`] reads those through the caller's device API.
    pub fn host_bytes(&self) -> Result<Cow<'r, [u8]>, TritonError> {
        self.host_bytes_with(|buffer, _| {
            Err(TritonError::internal(format!(
                "input '{}' is in GPU memory (device {}); this instance reads host memory",
                self.name, buffer.memory_type_id
            )))
        })
    }

    /// As [`Input::host_bytes`], with buffers outside host memory copied into the given
    /// slice (of the buffer's size) by `read_device`.
    pub fn host_bytes_with(
        &self,
        mut read_device: impl FnMut(&InputBuffer<'r>, &mut [u8]) -> Result<(), TritonError>,
    ) -> Result<Cow<'r, [u8]>, TritonError> {
        let buffers = self.buffers(MemoryType::Cpu, 0)?;
        if let [one] = buffers.as_slice() {
            if let Some(bytes) = one.host() {
                return Ok(Cow::Borrowed(bytes));
            }
        }
        let mut gathered = Vec::with_capacity(self.byte_size as usize);
        for buffer in &buffers {
            match buffer.host() {
                Some(bytes) => gathered.extend_from_slice(bytes),
                None => {
                    let start = gathered.len();
                    gathered.resize(start + buffer.byte_size, 0);
                    read_device(buffer, &mut gathered[start..])?;
                }
            }
        }
        Ok(Cow::Owned(gathered))
    }
}
