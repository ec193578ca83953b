//! CI check that every kernel compiles: NVRTC alone (no GPU, no driver)
//! compiles `kernels.cu` to PTX for the architectures the backend targets.
//!
//! Needs libnvrtc.so.13 on the loader's path: `eval "$(scripts/setup_nvrtc.sh)"`.
//! Without it the test fails under the test command and is reported skipped elsewhere.

use cuda_kernels::{compile_ptx, nvrtc_available, KernelError};

#[test]
fn ptx_compiles() {
    if !nvrtc_available() {
        test_skip::unavailable("ptx_compiles", &KernelError::NvrtcNotFound.to_string());
        return;
    }
    // Turing (T4), Ampere (A100, A6000 = 8.6), Hopper (H100/H200).
    for (major, minor) in [(7, 5), (8, 0), (8, 6), (9, 0)] {
        let ptx = compile_ptx((major, minor)).unwrap_or_else(|e| panic!("compute_{major}{minor}: {e}")).to_src();
        let target = format!(".target sm_{major}{minor}");
        assert!(ptx.contains(&target), "compute_{major}{minor}: no `{target}` in the PTX");
        for kernel in ["roi_align_f32", "roi_align_f16", "face_warp_f32"] {
            assert!(
                ptx.contains(&format!(".entry {kernel}(")),
                "compute_{major}{minor}: kernel {kernel} missing from the PTX"
            );
        }
        eprintln!("ptx_compiles: compute_{major}{minor}: {} bytes of PTX", ptx.len());
    }
}
