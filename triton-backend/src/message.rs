//! `TRITONSERVER_Message` (JSON documents such as model configs), owned and deleted on drop.

use crate::{call, sys, TritonError};

pub struct Message {
    raw: *mut sys::TRITONSERVER_Message,
}

impl Message {
    /// # Safety
    /// `raw` is a message the caller owns (e.g. from `TRITONBACKEND_ModelConfig`).
    pub unsafe fn from_raw(raw: *mut sys::TRITONSERVER_Message) -> Self {
        Self { raw }
    }

    pub fn to_json(&self) -> Result<serde_json::Value, TritonError> {
        let mut base = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: the serialized bytes belong to the message, which outlives this borrow.
        unsafe {
            call!(TRITONSERVER_MessageSerializeToJson(self.raw, &mut base, &mut size))?;
            let bytes = std::slice::from_raw_parts(base as *const u8, size);
            serde_json::from_slice(bytes)
                .map_err(|e| TritonError::internal(format!("model config is not valid JSON: {e}")))
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: we own the message; a failed delete only leaks.
        unsafe {
            let err = sys::TRITONSERVER_MessageDelete(self.raw);
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
        }
    }
}
