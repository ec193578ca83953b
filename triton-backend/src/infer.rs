//! In-process inference from a backend into another model of the same server (Triton's
//! "BLS" path): the server handle, the response allocator, requests and responses, each
//! releasing itself.
//!
//! Protocol: build an [`InferenceRequest`] that shares ownership of its input bytes,
//! [`Server::infer_async`] it (the call returns at once), and later
//! [`PendingInference::wait`] for the response, or [`PendingInference::wait_until`] a
//! deadline. Sending every chunk before waiting on any lets the target model batch them.
//!
//! Ownership: what Triton may still touch stays alive without the waiter. The request holds
//! the owners of its input bytes until Triton releases it, and the allocator until then too;
//! each response holds the allocator its buffers came from. So a waiter may stop waiting at a
//! deadline and return (its parent request answered with an error) while the target model is
//! still busy: the late response is then dropped where it arrives. A [`PendingInference`]
//! still waits when dropped, so whoever gives up on one keeps it until it finishes (see
//! [`Waited::Running`]).

use crate::completion::{Completion, Outcome};
use crate::entry::{guard, guard_callback};
use crate::{c_string, call, sys, DataType, MemoryType, TritonError};
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server this backend runs in. Triton owns it and it outlives every model.
#[derive(Clone, Copy)]
pub struct Server {
    raw: *mut sys::TRITONSERVER_Server,
}

// SAFETY: the server handle is thread-safe by Triton's contract; we only pass it to Triton.
unsafe impl Send for Server {}
unsafe impl Sync for Server {}

impl Server {
    /// # Safety
    /// `raw` is the server handle Triton gave the backend.
    pub unsafe fn from_raw(raw: *mut sys::TRITONSERVER_Server) -> Self {
        Self { raw }
    }

    /// Whether the latest version of `model` is loaded and ready.
    pub fn model_is_ready(&self, model: &str) -> Result<bool, TritonError> {
        let name = c_string(model)?;
        let mut ready = false;
        // SAFETY: valid server, C string and out-pointer.
        unsafe { call!(TRITONSERVER_ServerModelIsReady(self.raw, name.as_ptr(), -1, &mut ready))? };
        Ok(ready)
    }

    /// The configuration of the latest version of a loaded `model` as JSON.
    pub fn model_config(&self, model: &str) -> Result<serde_json::Value, TritonError> {
        let name = c_string(model)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: we own the returned message and wrap it for deletion.
        unsafe {
            call!(TRITONSERVER_ServerModelConfig(self.raw, name.as_ptr(), -1, 1, &mut raw))?;
            crate::message::Message::from_raw(raw).to_json()
        }
    }

    /// Starts `request`, whose output buffers come from `allocator`; its result arrives
    /// through the returned handle.
    pub fn infer_async(
        &self,
        mut request: InferenceRequest,
        allocator: &Arc<ResponseAllocator>,
    ) -> Result<PendingInference, TritonError> {
        let in_flight = Arc::new(InFlight {
            completion: Completion::default(),
            allocator: allocator.clone(),
            inputs: Mutex::new(std::mem::take(&mut request.inputs)),
        });
        // Each callback owns one strong count, dropped when it fires.
        let for_response = Arc::into_raw(in_flight.clone()) as *mut c_void;
        let for_release = Arc::into_raw(in_flight.clone()) as *mut c_void;
        // SAFETY: the callbacks reclaim exactly the counts leaked above; if Triton refuses the
        // request, no callback will run, so we reclaim them here.
        unsafe {
            let setup =
                call!(TRITONSERVER_InferenceRequestSetReleaseCallback(request.raw, on_request_released, for_release))
                    .and_then(|()| {
                        call!(TRITONSERVER_InferenceRequestSetResponseCallback(
                            request.raw,
                            allocator.raw,
                            allocator.userp(),
                            on_response_complete,
                            for_response,
                        ))
                    })
                    .and_then(|()| call!(TRITONSERVER_ServerInferAsync(self.raw, request.raw, std::ptr::null_mut())));
            if let Err(e) = setup {
                drop(Arc::from_raw(for_response as *const InFlight));
                drop(Arc::from_raw(for_release as *const InFlight));
                return Err(e);
            }
        }
        // From here Triton holds the request; the release callback frees it.
        request.raw = std::ptr::null_mut();
        Ok(PendingInference { in_flight })
    }
}

/// Device memory for in-process response outputs, supplied by a backend that has a CUDA
/// API (this crate has none, so it builds and runs without CUDA).
pub trait DeviceMemory: Send + Sync {
    /// The device whose memory [`DeviceMemory::alloc`] returns.
    fn device_id(&self) -> i64;
    /// Allocates `byte_size` (> 0) bytes of device memory, returning its device address.
    fn alloc(&self, byte_size: usize) -> Result<*mut c_void, String>;
    /// Frees an allocation of [`DeviceMemory::alloc`].
    ///
    /// # Safety
    /// `ptr` came from `alloc` on this object and is not used afterwards.
    unsafe fn free(&self, ptr: *mut c_void);
}

/// Allocates output buffers of in-process responses: host memory (malloc/free), or device
/// memory where the target model asks for GPU memory and a [`DeviceMemory`] was given.
pub struct ResponseAllocator {
    raw: *mut sys::TRITONSERVER_ResponseAllocator,
    /// Passed to the alloc callback as its `userp`; boxed so the pointer is thin and stable.
    device: Option<Box<Arc<dyn DeviceMemory>>>,
}

// SAFETY: the allocator is immutable after creation and Triton may call it from any thread;
// `DeviceMemory` is Send + Sync.
unsafe impl Send for ResponseAllocator {}
unsafe impl Sync for ResponseAllocator {}

impl ResponseAllocator {
    pub fn host() -> Result<Self, TritonError> {
        Self::new(None)
    }

    /// Outputs asked for in GPU memory go to `memory`'s device; the others to host memory.
    pub fn with_device(memory: Arc<dyn DeviceMemory>) -> Result<Self, TritonError> {
        Self::new(Some(Box::new(memory)))
    }

    fn new(device: Option<Box<Arc<dyn DeviceMemory>>>) -> Result<Self, TritonError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: the callbacks are valid for the life of the program.
        unsafe { call!(TRITONSERVER_ResponseAllocatorNew(&mut raw, response_alloc, response_release, None))? };
        Ok(Self { raw, device })
    }

    /// The `userp` handed to [`response_alloc`] for requests using this allocator.
    fn userp(&self) -> *mut c_void {
        self.device.as_deref().map_or(std::ptr::null_mut(), |d| d as *const Arc<dyn DeviceMemory> as *mut c_void)
    }
}

impl Drop for ResponseAllocator {
    fn drop(&mut self) {
        // SAFETY: we own the allocator; no request or response using it is alive (each holds
        // an `Arc` of it). Device buffers hold their own reference to the device memory (see
        // `response_alloc`).
        unsafe {
            let err = sys::TRITONSERVER_ResponseAllocatorDelete(self.raw);
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
        }
    }
}

/// `userp` is null or points to the allocator's `Arc<dyn DeviceMemory>`. A device buffer's
/// `buffer_userp` owns a clone of that Arc, so it can be freed after the allocator is gone.
unsafe extern "C" fn response_alloc(
    _allocator: *mut sys::TRITONSERVER_ResponseAllocator,
    tensor_name: *const std::ffi::c_char,
    byte_size: usize,
    memory_type: sys::TRITONSERVER_MemoryType,
    _memory_type_id: i64,
    userp: *mut c_void,
    buffer: *mut *mut c_void,
    buffer_userp: *mut *mut c_void,
    actual_memory_type: *mut sys::TRITONSERVER_MemoryType,
    actual_memory_type_id: *mut i64,
) -> *mut sys::TRITONSERVER_Error {
    guard("response allocator", || {
        // SAFETY: Triton passes valid out-pointers, a NUL-terminated name and our `userp`.
        unsafe {
            *buffer = std::ptr::null_mut();
            *buffer_userp = std::ptr::null_mut();
            *actual_memory_type = sys::TRITONSERVER_MEMORY_CPU;
            *actual_memory_type_id = 0;
            if byte_size == 0 {
                return Ok(());
            }
            let device = (userp as *const Arc<dyn DeviceMemory>).as_ref();
            if let (sys::TRITONSERVER_MEMORY_GPU, Some(device)) = (memory_type, device) {
                let ptr = device.alloc(byte_size).map_err(|e| {
                    TritonError::unavailable(format!(
                        "cannot allocate {byte_size} bytes on GPU {} for encoder output '{}': {e}",
                        device.device_id(),
                        crate::str_from_c(tensor_name)
                    ))
                })?;
                *buffer = ptr;
                *buffer_userp = Box::into_raw(Box::new(device.clone())) as *mut c_void;
                *actual_memory_type = sys::TRITONSERVER_MEMORY_GPU;
                *actual_memory_type_id = device.device_id();
                return Ok(());
            }
            let ptr = libc::malloc(byte_size);
            if ptr.is_null() {
                return Err(TritonError::unavailable(format!(
                    "cannot allocate {byte_size} bytes for an encoder output"
                )));
            }
            *buffer = ptr;
            Ok(())
        }
    })
}

unsafe extern "C" fn response_release(
    _allocator: *mut sys::TRITONSERVER_ResponseAllocator,
    buffer: *mut c_void,
    buffer_userp: *mut c_void,
    _byte_size: usize,
    _memory_type: sys::TRITONSERVER_MemoryType,
    _memory_type_id: i64,
) -> *mut sys::TRITONSERVER_Error {
    guard("response allocator release", || {
        // SAFETY: `buffer` and `buffer_userp` are what `response_alloc` returned for it.
        unsafe {
            if buffer_userp.is_null() {
                libc::free(buffer);
            } else {
                let device = Box::from_raw(buffer_userp as *mut Arc<dyn DeviceMemory>);
                device.free(buffer);
            }
        }
        Ok(())
    })
}

/// Keeps the bytes of an in-process request's input alive until Triton releases the request.
pub type InputOwner = Arc<dyn Send + Sync>;

/// A request to another model; it shares ownership of its input bytes (see the module doc).
pub struct InferenceRequest {
    raw: *mut sys::TRITONSERVER_InferenceRequest,
    inputs: Vec<InputOwner>,
}

impl InferenceRequest {
    pub fn new(server: &Server, model: &str) -> Result<Self, TritonError> {
        let name = c_string(model)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid server and C string; we own the new request.
        unsafe { call!(TRITONSERVER_InferenceRequestNew(&mut raw, server.raw, name.as_ptr(), -1))? };
        Ok(Self { raw, inputs: Vec::new() })
    }

    /// Asks the target model's scheduler to reject this request when it is still queued after
    /// `timeout`. Triton applies it only where the target's queue policy has
    /// `allow_timeout_override: true` and a `default_timeout_microseconds` above `timeout`.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), TritonError> {
        let micros = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        // SAFETY: valid request.
        unsafe { call!(TRITONSERVER_InferenceRequestSetTimeoutMicroseconds(self.raw, micros)) }
    }

    /// Adds the FP32 elements `elements` of `data` as a host-memory input, without copying.
    /// The request keeps `data` until Triton releases it, and nobody can write through an
    /// `Arc` that is shared.
    pub fn add_fp32_input(
        &mut self,
        name: &str,
        shape: &[i64],
        data: &Arc<Vec<f32>>,
        elements: Range<usize>,
    ) -> Result<(), TritonError> {
        let values = &data[elements];
        let ptr = values.as_ptr() as *const c_void;
        // SAFETY: `values` is host memory inside `data`, which the request owns from here on;
        // a Vec's elements do not move while it is only shared.
        unsafe {
            self.add_input(
                name,
                DataType::Fp32,
                shape,
                ptr,
                std::mem::size_of_val(values),
                MemoryType::Cpu,
                0,
                data.clone(),
            )
        }
    }

    /// Adds an input whose bytes live at `ptr` in the given memory (device memory, say),
    /// keeping `owner` until Triton releases the request.
    ///
    /// # Safety
    /// `ptr` holds `byte_size` readable bytes of `memory_type` on `memory_type_id` that
    /// `owner` keeps valid, and nobody writes them while this request holds `owner`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn add_input(
        &mut self,
        name: &str,
        datatype: DataType,
        shape: &[i64],
        ptr: *const c_void,
        byte_size: usize,
        memory_type: MemoryType,
        memory_type_id: i64,
        owner: InputOwner,
    ) -> Result<(), TritonError> {
        self.inputs.push(owner);
        let cname = c_string(name)?;
        // Valid request; Triton copies the name and shape, and references the data.
        call!(TRITONSERVER_InferenceRequestAddInput(
            self.raw,
            cname.as_ptr(),
            datatype.to_raw(),
            shape.as_ptr(),
            shape.len() as u64
        ))?;
        call!(TRITONSERVER_InferenceRequestAppendInputData(
            self.raw,
            cname.as_ptr(),
            ptr,
            byte_size,
            memory_type.to_raw(),
            memory_type_id
        ))
    }

    pub fn add_requested_output(&mut self, name: &str) -> Result<(), TritonError> {
        let cname = c_string(name)?;
        // SAFETY: valid request; the name is copied.
        unsafe { call!(TRITONSERVER_InferenceRequestAddRequestedOutput(self.raw, cname.as_ptr())) }
    }
}

impl Drop for InferenceRequest {
    fn drop(&mut self) {
        if self.raw.is_null() {
            return;
        }
        // SAFETY: never handed to the server, so still ours.
        unsafe {
            let err = sys::TRITONSERVER_InferenceRequestDelete(self.raw);
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
        }
    }
}

/// What an in-flight request shares with Triton's callbacks. Fields drop in order: a late
/// response (deleted through the allocator) before the allocator.
struct InFlight {
    completion: Completion<InferenceResponse>,
    allocator: Arc<ResponseAllocator>,
    /// Emptied when Triton releases the request.
    inputs: Mutex<Vec<InputOwner>>,
}

unsafe extern "C" fn on_response_complete(
    response: *mut sys::TRITONSERVER_InferenceResponse,
    flags: u32,
    userp: *mut c_void,
) {
    guard_callback("in-process response callback", || {
        // SAFETY: `userp` is the strong count `infer_async` leaked for this callback.
        let in_flight = unsafe { &*(userp as *const InFlight) };
        let final_response = flags & sys::TRITONSERVER_RESPONSE_COMPLETE_FINAL != 0;
        let response =
            (!response.is_null()).then(|| InferenceResponse { raw: response, _allocator: in_flight.allocator.clone() });
        in_flight.completion.respond(response, final_response);
        if final_response {
            // SAFETY: the final response is the last call with this `userp`.
            drop(unsafe { Arc::from_raw(userp as *const InFlight) });
        }
    })
}

unsafe extern "C" fn on_request_released(
    request: *mut sys::TRITONSERVER_InferenceRequest,
    flags: u32,
    userp: *mut c_void,
) {
    guard_callback("in-process request release callback", || {
        if flags & sys::TRITONSERVER_REQUEST_RELEASE_ALL == 0 {
            return;
        }
        // SAFETY: Triton hands the request back for deletion; `userp` is the strong count
        // `infer_async` leaked for this callback, which runs once with RELEASE_ALL.
        let in_flight = unsafe {
            let err = sys::TRITONSERVER_InferenceRequestDelete(request);
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
            Arc::from_raw(userp as *const InFlight)
        };
        // Triton reads none of the inputs any more.
        in_flight.inputs.lock().unwrap_or_else(|p| p.into_inner()).clear();
        in_flight.completion.release();
    })
}

/// An inference in flight. Dropping it blocks until Triton is done with it, so that a backend
/// that keeps the ones it gave up on (see [`Waited::Running`]) finishes them before its
/// instance goes away.
pub struct PendingInference {
    in_flight: Arc<InFlight>,
}

/// What [`PendingInference::wait_until`] found.
pub enum Waited {
    /// The target model's response, or the error it reported.
    Done(Result<InferenceResponse, TritonError>),
    /// The deadline passed first; the inference goes on.
    Running(PendingInference),
}

impl PendingInference {
    /// Blocks until the response arrived and Triton released the request (so the inputs are
    /// no longer read), then returns the response or the error the target model reported.
    pub fn wait(self) -> Result<InferenceResponse, TritonError> {
        match self.in_flight.completion.wait_until(None) {
            Outcome::Done(response) => Self::checked(response),
            Outcome::DeadlinePassed => unreachable!("a wait without a deadline ends only when done"),
        }
    }

    /// As [`PendingInference::wait`], but gives the inference back at `deadline`.
    pub fn wait_until(self, deadline: Instant) -> Waited {
        match self.in_flight.completion.wait_until(Some(deadline)) {
            Outcome::Done(response) => Waited::Done(Self::checked(response)),
            Outcome::DeadlinePassed => Waited::Running(self),
        }
    }

    /// Whether Triton is done with it (a wait would not block).
    pub fn is_finished(&self) -> bool {
        matches!(self.in_flight.completion.wait_until(Some(Instant::now())), Outcome::Done(_))
    }

    fn checked(response: Option<InferenceResponse>) -> Result<InferenceResponse, TritonError> {
        let response =
            response.ok_or_else(|| TritonError::internal("in-process inference completed without a response"))?;
        response.error()?;
        Ok(response)
    }
}

impl Drop for PendingInference {
    fn drop(&mut self) {
        drop(self.in_flight.completion.wait_until(None));
    }
}

/// A response from another model; deleted (and its output buffers released through the
/// allocator it holds) on drop.
pub struct InferenceResponse {
    raw: *mut sys::TRITONSERVER_InferenceResponse,
    _allocator: Arc<ResponseAllocator>,
}

// SAFETY: a completed response is immutable and owned by exactly one holder.
unsafe impl Send for InferenceResponse {}

/// One output tensor of an [`InferenceResponse`], borrowed from it.
pub struct ResponseOutput<'r> {
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub memory_type: MemoryType,
    pub data: *const c_void,
    pub byte_size: usize,
    _response: PhantomData<&'r InferenceResponse>,
}

impl ResponseOutput<'_> {
    /// The bytes, if they are in host memory.
    pub fn host_bytes(&self) -> Option<&[u8]> {
        if !self.memory_type.is_host() {
            return None;
        }
        if self.byte_size == 0 {
            return Some(&[]);
        }
        // SAFETY: Triton guarantees `byte_size` readable bytes while the response lives.
        Some(unsafe { std::slice::from_raw_parts(self.data as *const u8, self.byte_size) })
    }
}

impl InferenceResponse {
    /// The error the target model reported for this request, if any, with its code (a full
    /// queue stays UNAVAILABLE, a bad input INVALID_ARG).
    pub fn error(&self) -> Result<(), TritonError> {
        // SAFETY: the returned error is owned by the response; copy it, do not delete it.
        unsafe {
            let err = sys::TRITONSERVER_InferenceResponseError(self.raw);
            if err.is_null() {
                return Ok(());
            }
            Err(TritonError::borrowed_from_raw(err))
        }
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Result<ResponseOutput<'_>, TritonError> {
        let mut count = 0u32;
        // SAFETY: valid response; all returned pointers stay valid while it lives.
        unsafe {
            call!(TRITONSERVER_InferenceResponseOutputCount(self.raw, &mut count))?;
            for index in 0..count {
                let (mut cname, mut datatype, mut shape, mut dims) = (std::ptr::null(), 0, std::ptr::null(), 0u64);
                let (mut base, mut size, mut memory_type, mut memory_id) = (std::ptr::null(), 0usize, 0, 0i64);
                let mut userp = std::ptr::null_mut();
                call!(TRITONSERVER_InferenceResponseOutput(
                    self.raw,
                    index,
                    &mut cname,
                    &mut datatype,
                    &mut shape,
                    &mut dims,
                    &mut base,
                    &mut size,
                    &mut memory_type,
                    &mut memory_id,
                    &mut userp,
                ))?;
                if crate::str_from_c(cname) != name {
                    continue;
                }
                let shape =
                    if dims == 0 { Vec::new() } else { std::slice::from_raw_parts(shape, dims as usize).to_vec() };
                return Ok(ResponseOutput {
                    datatype: DataType::from_raw(datatype),
                    shape,
                    memory_type: MemoryType::from_raw(memory_type),
                    data: base,
                    byte_size: size,
                    _response: PhantomData,
                });
            }
        }
        Err(TritonError::internal(format!("response has no output '{name}'")))
    }
}

impl Drop for InferenceResponse {
    fn drop(&mut self) {
        // SAFETY: we own the response.
        unsafe {
            let err = sys::TRITONSERVER_InferenceResponseDelete(self.raw);
            if !err.is_null() {
                sys::TRITONSERVER_ErrorDelete(err);
            }
        }
    }
}
