//! CUDA plumbing of the GPU path, over cudarc (through `cuda-kernels`, loaded at run time so
//! that the backend still loads on machines without CUDA):
//!
//! - [`Device`]: one instance's context, stream and compiled crop kernels, plus the few raw
//!   copies the path needs (any memory to any memory, by unified addressing);
//! - [`DeviceBuffer`]: a grow-only buffer reused across execute calls, allocated with
//!   `cuMemAlloc` rather than cudarc's stream-ordered pool, because the Python backend maps
//!   the encoder's GPU inputs (and outputs it writes) with CUDA IPC, which pool memory refuses;
//! - [`StreamGuard`]: synchronises an instance's stream when dropped, unwinding included;
//! - [`CudaMemory`]: the device memory behind the encoder's response allocator.

use cuda_kernels::cudarc::driver::{
    result, sys, CudaContext, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, DriverError, SyncOnDrop,
};
use cuda_kernels::{cuda_context, KernelSet};
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;
use triton_backend::infer::DeviceMemory;
use triton_backend::request::InputBuffer;
use triton_backend::TritonError;

fn driver_error(action: &str) -> impl FnOnce(DriverError) -> TritonError + '_ {
    move |e| TritonError::internal(format!("CUDA driver call failed while {action}: {e}"))
}

/// The GPU one instance runs on.
pub struct Device {
    pub id: i32,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: KernelSet,
}

impl Device {
    /// Opens device `id`, compiles the crop kernels for it (once per instance) and creates the
    /// instance's stream. Every failure says what is missing (driver, GPU, NVRTC).
    pub fn open(id: i32) -> Result<Self, TritonError> {
        let failed = |what: String| TritonError::unavailable(format!("GPU {id}: {what}"));
        let ordinal = usize::try_from(id).map_err(|_| failed("not a valid device id".into()))?;
        let ctx = cuda_context(ordinal).map_err(|e| failed(e.to_string()))?;
        let kernels = KernelSet::compile(&ctx).map_err(|e| failed(format!("cannot build the crop kernels: {e}")))?;
        let stream = ctx.new_stream().map_err(|e| failed(format!("cannot create a stream: {e}")))?;
        Ok(Self { id, ctx, stream, kernels })
    }

    /// Makes the instance's context current on the calling (execute) thread, for raw calls.
    pub fn bind(&self) -> Result<(), TritonError> {
        self.ctx.bind_to_thread().map_err(driver_error("binding the context"))
    }

    /// Enqueues a copy of `bytes` from `src` (host or any device) to `dst` on the stream.
    ///
    /// # Safety
    /// `dst` and `src` are valid for `bytes` until the stream has been synchronised, and the
    /// context is bound ([`Device::bind`]).
    pub unsafe fn copy_async(
        &self,
        dst: sys::CUdeviceptr,
        src: *const c_void,
        bytes: usize,
    ) -> Result<(), TritonError> {
        if bytes == 0 {
            return Ok(());
        }
        sys::cuMemcpyAsync(dst, src as sys::CUdeviceptr, bytes, self.stream.cu_stream())
            .result()
            .map_err(driver_error("enqueueing a copy"))
    }

    /// Enqueues zeroing `bytes` of device memory at `dst`.
    ///
    /// # Safety
    /// As for [`Device::copy_async`].
    pub unsafe fn zero_async(&self, dst: sys::CUdeviceptr, bytes: usize) -> Result<(), TritonError> {
        if bytes == 0 {
            return Ok(());
        }
        result::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()).map_err(driver_error("zeroing an output"))
    }

    /// Copies an input buffer Triton holds in device memory to `dst` (its size), blocking.
    pub fn read_to_host(&self, buffer: &InputBuffer<'_>, dst: &mut [u8]) -> Result<(), TritonError> {
        if dst.len() != buffer.byte_size {
            return Err(TritonError::internal(format!("{} bytes to read into {}", buffer.byte_size, dst.len())));
        }
        self.bind()?;
        // SAFETY: Triton keeps the buffer valid while the request lives; `dst` is ours and of
        // the same size; cuMemcpy is synchronous and infers the direction.
        unsafe { sys::cuMemcpy(dst.as_mut_ptr() as sys::CUdeviceptr, buffer.ptr as sys::CUdeviceptr, dst.len()) }
            .result()
            .map_err(driver_error("reading an input from GPU memory"))
    }

    pub fn synchronize(&self) -> Result<(), TritonError> {
        self.stream.synchronize().map_err(driver_error("synchronising the instance stream"))
    }
}

/// Synchronises the instance's stream when dropped, so that no copy queued on it outlives the
/// memory it reads or writes (request inputs, response outputs, encoder responses), even when
/// execute unwinds. [`StreamGuard::synchronize`] is the checked synchronisation of the normal
/// path; the one in `Drop` can only ignore a failure.
pub struct StreamGuard {
    stream: Arc<CudaStream>,
}

impl StreamGuard {
    pub fn new(device: &Device) -> Self {
        Self { stream: device.stream.clone() }
    }

    pub fn synchronize(&self) -> Result<(), TritonError> {
        self.stream.synchronize().map_err(driver_error("synchronising the instance stream"))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
    }
}

/// A grow-only device buffer of `T`, used only on its device's stream (so the stream orders
/// every use and no events are needed).
pub struct DeviceBuffer<T> {
    ptr: sys::CUdeviceptr,
    len: usize,
    capacity: usize,
    stream: Arc<CudaStream>,
    _type: PhantomData<T>,
}

impl<T> DeviceBuffer<T> {
    pub fn new(stream: &Arc<CudaStream>) -> Self {
        Self { ptr: 0, len: 0, capacity: 0, stream: stream.clone(), _type: PhantomData }
    }

    /// Sets the length to `len` elements, reallocating (contents lost) when it exceeds the
    /// capacity. Elements are uninitialised until written.
    pub fn resize(&mut self, len: usize) -> Result<(), TritonError> {
        if len > self.capacity {
            let capacity = len.next_power_of_two();
            let bytes = capacity
                .checked_mul(std::mem::size_of::<T>())
                .ok_or_else(|| TritonError::internal(format!("device buffer of {capacity} elements overflows")))?;
            self.release()?;
            self.stream.context().bind_to_thread().map_err(driver_error("binding the context"))?;
            // SAFETY: a plain allocation in the bound context; freed in `release`.
            self.ptr = unsafe { result::malloc_sync(bytes) }
                .map_err(|e| TritonError::unavailable(format!("cannot allocate {bytes} bytes of GPU memory: {e}")))?;
            self.capacity = capacity;
        }
        self.len = len;
        Ok(())
    }

    /// The device address of element 0.
    pub fn ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }

    /// The device address of element `index` (<= len).
    pub fn ptr_at(&self, index: usize) -> sys::CUdeviceptr {
        assert!(index <= self.len, "index {index} past a device buffer of {}", self.len);
        self.ptr + (index * std::mem::size_of::<T>()) as u64
    }

    fn release(&mut self) -> Result<(), TritonError> {
        if self.capacity == 0 {
            return Ok(());
        }
        // No queued work may still use the memory.
        self.stream.synchronize().map_err(driver_error("synchronising before a free"))?;
        // SAFETY: allocated by malloc_sync in `resize`, unused after the synchronisation.
        let freed = unsafe { result::free_sync(self.ptr) };
        self.ptr = 0;
        self.capacity = 0;
        self.len = 0;
        freed.map_err(driver_error("freeing a device buffer"))
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl<T> DeviceSlice<T> for DeviceBuffer<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

// Used on its own stream only: stream order replaces cudarc's per-buffer events.
impl<T> DevicePtr<T> for DeviceBuffer<T> {
    fn device_ptr<'a>(&'a self, _stream: &'a CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}

impl<T> DevicePtrMut<T> for DeviceBuffer<T> {
    fn device_ptr_mut<'a>(&'a mut self, _stream: &'a CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}

/// Device memory for encoder outputs. Triton calls the allocator from its own threads, so
/// each call pushes the instance's context and pops it again, leaving the thread as it was.
pub struct CudaMemory {
    ctx: Arc<CudaContext>,
    device_id: i64,
}

impl CudaMemory {
    pub fn new(device: &Device) -> Self {
        Self { ctx: device.ctx.clone(), device_id: device.id.into() }
    }

    fn in_context<R>(&self, f: impl FnOnce() -> Result<R, DriverError>) -> Result<R, DriverError> {
        // SAFETY: pushes a live context (held by `self.ctx`) and pops exactly that push.
        unsafe {
            sys::cuCtxPushCurrent_v2(self.ctx.cu_ctx()).result()?;
            let outcome = f();
            let mut popped = std::ptr::null_mut();
            sys::cuCtxPopCurrent_v2(&mut popped).result()?;
            outcome
        }
    }
}

impl DeviceMemory for CudaMemory {
    fn device_id(&self) -> i64 {
        self.device_id
    }

    fn alloc(&self, byte_size: usize) -> Result<*mut c_void, String> {
        // SAFETY: a plain allocation, freed by `free`.
        self.in_context(|| unsafe { result::malloc_sync(byte_size) })
            .map(|ptr| ptr as *mut c_void)
            .map_err(|e| e.to_string())
    }

    unsafe fn free(&self, ptr: *mut c_void) {
        // Nothing to report to: Triton's release callback has no one to tell.
        let _ = self.in_context(|| result::free_sync(ptr as sys::CUdeviceptr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where there is no usable GPU (CI), opening one is an error that says why, not a
    /// panic: that error is what fails a KIND_GPU instance's load.
    #[test]
    fn a_missing_gpu_is_a_clear_error() {
        let err = Device::open(-1).err().expect("device -1 does not exist");
        assert!(err.to_string().contains("not a valid device id"), "{err}");
        // On a GPU machine with NVRTC this opens the device; elsewhere it must say what is missing.
        if let Err(e) = Device::open(0) {
            let message = e.to_string();
            assert!(message.starts_with("GPU 0: ") && message.len() > 10, "{message}");
        }
    }
}
