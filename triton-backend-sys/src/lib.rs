//! Raw FFI declarations of the parts of Triton's C API (`tritonserver.h`, `tritonbackend.h`,
//! backend API 1.19) that this project's backends call or implement.
//!
//! Written by hand so that building never needs Triton headers or libraries: a backend cdylib
//! leaves these symbols undefined and the dynamic loader resolves them from the
//! `libtritonserver.so` already loaded in the server process. Nothing here is safe to call
//! directly; the `triton-backend` crate wraps every function once.
//!
//! C enums are declared as integer aliases with constants, because Triton may pass values a
//! Rust enum would not know, which would be undefined behaviour.
//!
//! Layer: the bottom one, no workspace dependencies. Imported only by `triton-backend`.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

macro_rules! opaque {
    ($($name:ident),* $(,)?) => {
        $(
            #[repr(C)]
            pub struct $name {
                _private: [u8; 0],
            }
        )*
    };
}

opaque!(
    TRITONSERVER_Error,
    TRITONSERVER_Message,
    TRITONSERVER_Server,
    TRITONSERVER_InferenceRequest,
    TRITONSERVER_InferenceResponse,
    TRITONSERVER_InferenceTrace,
    TRITONSERVER_ResponseAllocator,
    TRITONBACKEND_Backend,
    TRITONBACKEND_Model,
    TRITONBACKEND_ModelInstance,
    TRITONBACKEND_Request,
    TRITONBACKEND_Response,
    TRITONBACKEND_Input,
    TRITONBACKEND_Output,
);

pub const TRITONBACKEND_API_VERSION_MAJOR: u32 = 1;
pub const TRITONBACKEND_API_VERSION_MINOR: u32 = 19;

pub type TRITONSERVER_Error_Code = u32;
pub const TRITONSERVER_ERROR_UNKNOWN: TRITONSERVER_Error_Code = 0;
pub const TRITONSERVER_ERROR_INTERNAL: TRITONSERVER_Error_Code = 1;
pub const TRITONSERVER_ERROR_NOT_FOUND: TRITONSERVER_Error_Code = 2;
pub const TRITONSERVER_ERROR_INVALID_ARG: TRITONSERVER_Error_Code = 3;
pub const TRITONSERVER_ERROR_UNAVAILABLE: TRITONSERVER_Error_Code = 4;
pub const TRITONSERVER_ERROR_UNSUPPORTED: TRITONSERVER_Error_Code = 5;
pub const TRITONSERVER_ERROR_ALREADY_EXISTS: TRITONSERVER_Error_Code = 6;
pub const TRITONSERVER_ERROR_CANCELLED: TRITONSERVER_Error_Code = 7;

pub type TRITONSERVER_DataType = u32;
pub const TRITONSERVER_TYPE_INVALID: TRITONSERVER_DataType = 0;
pub const TRITONSERVER_TYPE_BOOL: TRITONSERVER_DataType = 1;
pub const TRITONSERVER_TYPE_UINT8: TRITONSERVER_DataType = 2;
pub const TRITONSERVER_TYPE_UINT16: TRITONSERVER_DataType = 3;
pub const TRITONSERVER_TYPE_UINT32: TRITONSERVER_DataType = 4;
pub const TRITONSERVER_TYPE_UINT64: TRITONSERVER_DataType = 5;
pub const TRITONSERVER_TYPE_INT8: TRITONSERVER_DataType = 6;
pub const TRITONSERVER_TYPE_INT16: TRITONSERVER_DataType = 7;
pub const TRITONSERVER_TYPE_INT32: TRITONSERVER_DataType = 8;
pub const TRITONSERVER_TYPE_INT64: TRITONSERVER_DataType = 9;
pub const TRITONSERVER_TYPE_FP16: TRITONSERVER_DataType = 10;
pub const TRITONSERVER_TYPE_FP32: TRITONSERVER_DataType = 11;
pub const TRITONSERVER_TYPE_FP64: TRITONSERVER_DataType = 12;
pub const TRITONSERVER_TYPE_BYTES: TRITONSERVER_DataType = 13;
pub const TRITONSERVER_TYPE_BF16: TRITONSERVER_DataType = 14;

pub type TRITONSERVER_MemoryType = u32;
pub const TRITONSERVER_MEMORY_CPU: TRITONSERVER_MemoryType = 0;
pub const TRITONSERVER_MEMORY_CPU_PINNED: TRITONSERVER_MemoryType = 1;
pub const TRITONSERVER_MEMORY_GPU: TRITONSERVER_MemoryType = 2;

pub type TRITONSERVER_InstanceGroupKind = u32;
pub const TRITONSERVER_INSTANCEGROUPKIND_AUTO: TRITONSERVER_InstanceGroupKind = 0;
pub const TRITONSERVER_INSTANCEGROUPKIND_CPU: TRITONSERVER_InstanceGroupKind = 1;
pub const TRITONSERVER_INSTANCEGROUPKIND_GPU: TRITONSERVER_InstanceGroupKind = 2;
pub const TRITONSERVER_INSTANCEGROUPKIND_MODEL: TRITONSERVER_InstanceGroupKind = 3;

pub type TRITONSERVER_LogLevel = u32;
pub const TRITONSERVER_LOG_INFO: TRITONSERVER_LogLevel = 0;
pub const TRITONSERVER_LOG_WARN: TRITONSERVER_LogLevel = 1;
pub const TRITONSERVER_LOG_ERROR: TRITONSERVER_LogLevel = 2;
pub const TRITONSERVER_LOG_VERBOSE: TRITONSERVER_LogLevel = 3;

/// `TRITONSERVER_RequestReleaseFlag` / `TRITONBACKEND_RequestReleaseFlag`.
pub const TRITONSERVER_REQUEST_RELEASE_ALL: u32 = 1;
/// `TRITONSERVER_ResponseCompleteFlag` / `TRITONSERVER_ResponseCompleteFlag` for sends.
pub const TRITONSERVER_RESPONSE_COMPLETE_FINAL: u32 = 1;

pub type TRITONSERVER_ResponseAllocatorAllocFn_t = unsafe extern "C" fn(
    allocator: *mut TRITONSERVER_ResponseAllocator,
    tensor_name: *const c_char,
    byte_size: usize,
    memory_type: TRITONSERVER_MemoryType,
    memory_type_id: i64,
    userp: *mut c_void,
    buffer: *mut *mut c_void,
    buffer_userp: *mut *mut c_void,
    actual_memory_type: *mut TRITONSERVER_MemoryType,
    actual_memory_type_id: *mut i64,
) -> *mut TRITONSERVER_Error;

pub type TRITONSERVER_ResponseAllocatorReleaseFn_t = unsafe extern "C" fn(
    allocator: *mut TRITONSERVER_ResponseAllocator,
    buffer: *mut c_void,
    buffer_userp: *mut c_void,
    byte_size: usize,
    memory_type: TRITONSERVER_MemoryType,
    memory_type_id: i64,
) -> *mut TRITONSERVER_Error;

pub type TRITONSERVER_ResponseAllocatorStartFn_t =
    unsafe extern "C" fn(allocator: *mut TRITONSERVER_ResponseAllocator, userp: *mut c_void) -> *mut TRITONSERVER_Error;

pub type TRITONSERVER_InferenceRequestReleaseFn_t =
    unsafe extern "C" fn(request: *mut TRITONSERVER_InferenceRequest, flags: u32, userp: *mut c_void);

pub type TRITONSERVER_InferenceResponseCompleteFn_t =
    unsafe extern "C" fn(response: *mut TRITONSERVER_InferenceResponse, flags: u32, userp: *mut c_void);

extern "C" {
    // Errors and messages.
    pub fn TRITONSERVER_ErrorNew(code: TRITONSERVER_Error_Code, msg: *const c_char) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_ErrorDelete(error: *mut TRITONSERVER_Error);
    pub fn TRITONSERVER_ErrorCode(error: *mut TRITONSERVER_Error) -> TRITONSERVER_Error_Code;
    pub fn TRITONSERVER_ErrorMessage(error: *mut TRITONSERVER_Error) -> *const c_char;
    pub fn TRITONSERVER_MessageSerializeToJson(
        message: *mut TRITONSERVER_Message,
        base: *mut *const c_char,
        byte_size: *mut usize,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_MessageDelete(message: *mut TRITONSERVER_Message) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_LogIsEnabled(level: TRITONSERVER_LogLevel) -> bool;
    pub fn TRITONSERVER_LogMessage(
        level: TRITONSERVER_LogLevel,
        filename: *const c_char,
        line: i32,
        msg: *const c_char,
    ) -> *mut TRITONSERVER_Error;

    // Server queries used for in-process inference.
    pub fn TRITONSERVER_ServerModelIsReady(
        server: *mut TRITONSERVER_Server,
        model_name: *const c_char,
        model_version: i64,
        ready: *mut bool,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_ServerModelConfig(
        server: *mut TRITONSERVER_Server,
        model_name: *const c_char,
        model_version: i64,
        config_version: u32,
        model_config: *mut *mut TRITONSERVER_Message,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_ServerInferAsync(
        server: *mut TRITONSERVER_Server,
        inference_request: *mut TRITONSERVER_InferenceRequest,
        trace: *mut TRITONSERVER_InferenceTrace,
    ) -> *mut TRITONSERVER_Error;

    // Response allocator.
    pub fn TRITONSERVER_ResponseAllocatorNew(
        allocator: *mut *mut TRITONSERVER_ResponseAllocator,
        alloc_fn: TRITONSERVER_ResponseAllocatorAllocFn_t,
        release_fn: TRITONSERVER_ResponseAllocatorReleaseFn_t,
        start_fn: Option<TRITONSERVER_ResponseAllocatorStartFn_t>,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_ResponseAllocatorDelete(
        allocator: *mut TRITONSERVER_ResponseAllocator,
    ) -> *mut TRITONSERVER_Error;

    // In-process inference requests.
    pub fn TRITONSERVER_InferenceRequestNew(
        inference_request: *mut *mut TRITONSERVER_InferenceRequest,
        server: *mut TRITONSERVER_Server,
        model_name: *const c_char,
        model_version: i64,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestDelete(
        inference_request: *mut TRITONSERVER_InferenceRequest,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestSetId(
        inference_request: *mut TRITONSERVER_InferenceRequest,
        id: *const c_char,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestSetTimeoutMicroseconds(
        inference_request: *mut TRITONSERVER_InferenceRequest,
        timeout_us: u64,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestAddInput(
        inference_request: *mut TRITONSERVER_InferenceRequest,
        name: *const c_char,
        datatype: TRITONSERVER_DataType,
        shape: *const i64,
        dim_count: u64,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestAppendInputData(
        inference_request: *mut TRITONSERVER_InferenceRequest,
        name: *const c_char,
        base: *const c_void,
        byte_size: usize,
        memory_type: TRITONSERVER_MemoryType,
        memory_type_id: i64,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestAddRequestedOutput(
        inference_request: *mut TRITONSERVER_InferenceRequest,
        name: *const c_char,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestSetReleaseCallback(
        inference_request: *mut TRITONSERVER_InferenceRequest,
        request_release_fn: TRITONSERVER_InferenceRequestReleaseFn_t,
        request_release_userp: *mut c_void,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceRequestSetResponseCallback(
        inference_request: *mut TRITONSERVER_InferenceRequest,
        response_allocator: *mut TRITONSERVER_ResponseAllocator,
        response_allocator_userp: *mut c_void,
        response_fn: TRITONSERVER_InferenceResponseCompleteFn_t,
        response_userp: *mut c_void,
    ) -> *mut TRITONSERVER_Error;

    // In-process inference responses.
    pub fn TRITONSERVER_InferenceResponseDelete(
        inference_response: *mut TRITONSERVER_InferenceResponse,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceResponseError(
        inference_response: *mut TRITONSERVER_InferenceResponse,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceResponseOutputCount(
        inference_response: *mut TRITONSERVER_InferenceResponse,
        count: *mut u32,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONSERVER_InferenceResponseOutput(
        inference_response: *mut TRITONSERVER_InferenceResponse,
        index: u32,
        name: *mut *const c_char,
        datatype: *mut TRITONSERVER_DataType,
        shape: *mut *const i64,
        dim_count: *mut u64,
        base: *mut *const c_void,
        byte_size: *mut usize,
        memory_type: *mut TRITONSERVER_MemoryType,
        memory_type_id: *mut i64,
        userp: *mut *mut c_void,
    ) -> *mut TRITONSERVER_Error;

    // Backend API: versions, models and instances.
    pub fn TRITONBACKEND_ApiVersion(major: *mut u32, minor: *mut u32) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelName(
        model: *mut TRITONBACKEND_Model,
        name: *mut *const c_char,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelVersion(model: *mut TRITONBACKEND_Model, version: *mut u64) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelConfig(
        model: *mut TRITONBACKEND_Model,
        config_version: u32,
        model_config: *mut *mut TRITONSERVER_Message,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelServer(
        model: *mut TRITONBACKEND_Model,
        server: *mut *mut TRITONSERVER_Server,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelState(
        model: *mut TRITONBACKEND_Model,
        state: *mut *mut c_void,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelSetState(model: *mut TRITONBACKEND_Model, state: *mut c_void) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceName(
        instance: *mut TRITONBACKEND_ModelInstance,
        name: *mut *const c_char,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceKind(
        instance: *mut TRITONBACKEND_ModelInstance,
        kind: *mut TRITONSERVER_InstanceGroupKind,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceDeviceId(
        instance: *mut TRITONBACKEND_ModelInstance,
        device_id: *mut i32,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceModel(
        instance: *mut TRITONBACKEND_ModelInstance,
        model: *mut *mut TRITONBACKEND_Model,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceState(
        instance: *mut TRITONBACKEND_ModelInstance,
        state: *mut *mut c_void,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceSetState(
        instance: *mut TRITONBACKEND_ModelInstance,
        state: *mut c_void,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceReportStatistics(
        instance: *mut TRITONBACKEND_ModelInstance,
        request: *mut TRITONBACKEND_Request,
        success: bool,
        exec_start_ns: u64,
        compute_start_ns: u64,
        compute_end_ns: u64,
        exec_end_ns: u64,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ModelInstanceReportBatchStatistics(
        instance: *mut TRITONBACKEND_ModelInstance,
        batch_size: u64,
        exec_start_ns: u64,
        compute_start_ns: u64,
        compute_end_ns: u64,
        exec_end_ns: u64,
    ) -> *mut TRITONSERVER_Error;

    // Backend API: requests and their inputs.
    pub fn TRITONBACKEND_RequestId(
        request: *mut TRITONBACKEND_Request,
        id: *mut *const c_char,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_RequestInput(
        request: *mut TRITONBACKEND_Request,
        name: *const c_char,
        input: *mut *mut TRITONBACKEND_Input,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_RequestInputCount(
        request: *mut TRITONBACKEND_Request,
        count: *mut u32,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_RequestInputName(
        request: *mut TRITONBACKEND_Request,
        index: u32,
        input_name: *mut *const c_char,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_RequestRelease(
        request: *mut TRITONBACKEND_Request,
        release_flags: u32,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_InputProperties(
        input: *mut TRITONBACKEND_Input,
        name: *mut *const c_char,
        datatype: *mut TRITONSERVER_DataType,
        shape: *mut *const i64,
        dims_count: *mut u32,
        byte_size: *mut u64,
        buffer_count: *mut u32,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_InputBuffer(
        input: *mut TRITONBACKEND_Input,
        index: u32,
        buffer: *mut *const c_void,
        buffer_byte_size: *mut u64,
        memory_type: *mut TRITONSERVER_MemoryType,
        memory_type_id: *mut i64,
    ) -> *mut TRITONSERVER_Error;

    // Backend API: responses and their outputs.
    pub fn TRITONBACKEND_ResponseNew(
        response: *mut *mut TRITONBACKEND_Response,
        request: *mut TRITONBACKEND_Request,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ResponseDelete(response: *mut TRITONBACKEND_Response) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ResponseOutput(
        response: *mut TRITONBACKEND_Response,
        output: *mut *mut TRITONBACKEND_Output,
        name: *const c_char,
        datatype: TRITONSERVER_DataType,
        shape: *const i64,
        dims_count: u32,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_ResponseSend(
        response: *mut TRITONBACKEND_Response,
        send_flags: u32,
        error: *mut TRITONSERVER_Error,
    ) -> *mut TRITONSERVER_Error;
    pub fn TRITONBACKEND_OutputBuffer(
        output: *mut TRITONBACKEND_Output,
        buffer: *mut *mut c_void,
        buffer_byte_size: u64,
        memory_type: *mut TRITONSERVER_MemoryType,
        memory_type_id: *mut i64,
    ) -> *mut TRITONSERVER_Error;
}
