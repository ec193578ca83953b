//! [`KernelError`]: everything that can go wrong compiling or launching the
//! crop kernels, with the context needed to act on it.

use cudarc::driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "libnvrtc (libnvrtc.so.13) was not found by the dynamic loader; put its folder on \
         LD_LIBRARY_PATH (scripts/setup_nvrtc.sh installs one from PyPI)"
    )]
    NvrtcNotFound,
    #[error("libcuda was not found by the dynamic loader: no NVIDIA driver on this machine")]
    DriverNotFound,
    #[error(
        "NVRTC could not compile the crop kernels for {arch} ({status}; options {options:?}); compiler log:\n{log}"
    )]
    Compile { arch: String, status: String, options: Vec<String>, log: String },
    #[error("NVRTC failed for {arch}: {detail}")]
    Nvrtc { arch: String, detail: String },
    #[error("CUDA driver call failed while {action}: {source}")]
    Driver {
        action: &'static str,
        #[source]
        source: DriverError,
    },
    #[error("the stream belongs to another CUDA context than the one the kernels were loaded into")]
    ForeignStream,
    #[error("{buffer} buffer holds {len} elements, {needed} are needed")]
    BufferTooSmall { buffer: &'static str, len: usize, needed: u64 },
    #[error("invalid {name} {value}: {reason}")]
    InvalidArgument { name: &'static str, value: u64, reason: &'static str },
}

impl KernelError {
    pub(crate) fn driver(action: &'static str) -> impl FnOnce(DriverError) -> Self {
        move |source| Self::Driver { action, source }
    }
}
