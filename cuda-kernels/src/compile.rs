//! NVRTC compilation of `kernels.cu` to PTX. Needs libnvrtc only, no GPU and
//! no driver, so CI compiles the kernels on machines without CUDA.
//!
//! The PTX is JIT-compiled by the driver when [`KernelSet`](crate::KernelSet)
//! loads it, so NVRTC must not be newer than the driver's CUDA version (a
//! driver rejects a newer PTX ISA): the GPU machines run CUDA 13.0 drivers and
//! `scripts/setup_nvrtc.sh` pins NVRTC 13.0.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

/// The CUDA C++ source of every crop kernel.
pub const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// Whether the dynamic loader finds libnvrtc (on `LD_LIBRARY_PATH` or the
/// system's library paths). cudarc panics on first use when it does not.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen() the library names cudarc would use;
    // loading libnvrtc runs no code beyond its own initialisers.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`KERNEL_SOURCE`] to PTX for `compute_{major}{minor}` (e.g.
/// `(9, 0)` for H100). Host only: no GPU or driver is involved.
pub fn compile_ptx(compute_capability: (u32, u32)) -> Result<Ptx, crate::KernelError> {
    compile_source(KERNEL_SOURCE, compute_capability)
}

pub(crate) fn compile_source(source: &str, (major, minor): (u32, u32)) -> Result<Ptx, crate::KernelError> {
    if !nvrtc_available() {
        return Err(crate::KernelError::NvrtcNotFound);
    }
    let arch = format!("compute_{major}{minor}");
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".to_owned()],
        name: Some("kernels.cu".to_owned()),
        ..Default::default()
    };
    compile_ptx_with_opts(source, opts).map_err(|e| match e {
        CompileError::CompileError { nvrtc, options, log } => crate::KernelError::Compile {
            arch,
            status: nvrtc.to_string(),
            options,
            log: log.to_string_lossy().into_owned(),
        },
        other => crate::KernelError::Nvrtc { arch, detail: other.to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_error_carries_the_log() {
        if !nvrtc_available() {
            test_skip::unavailable("compile_error_carries_the_log", &crate::KernelError::NvrtcNotFound.to_string());
            return;
        }
        let err = compile_source("extern \"C\" __global__ void k() { undeclared_name = 1; }", (9, 0))
            .expect_err("the source is invalid");
        let message = err.to_string();
        assert!(matches!(err, crate::KernelError::Compile { .. }), "{message}");
        assert!(message.contains("undeclared_name"), "the log is missing: {message}");
    }
}
