//! `librerank_plugin.so`: the project's own face rerank scorer behind the gateway's C ABI
//! (docs/faces.md, "Rerank plugin ABI"). It exists to prove the plugin path: the gateway
//! loads it with `libloading` when `faces.rerank_library` names it, and a test holds its
//! scores equal to the gateway's native scorer (`gateway::rerank::native_scores`).
//!
//! The arithmetic is the native scorer's, in the same order and precision (f64 sums,
//! one rounding to f32 at the end), so both give identical bits, not just close values.
//!
//! Layer: a C-ABI cdylib with no workspace dependencies; the gateway loads it at run time,
//! never links it.

use std::os::raw::c_float;

/// The ABI this library implements; the gateway refuses any other.
pub const RERANK_ABI_VERSION: u32 = 1;

/// Success.
pub const RERANK_OK: i32 = 0;
/// A pointer was null.
pub const RERANK_NULL_POINTER: i32 = 1;
/// `dim` was 0, or `count * dim` overflows.
pub const RERANK_BAD_SHAPE: i32 = 2;
/// The query or a candidate has a zero or non-finite norm (no direction to compare).
pub const RERANK_NO_DIRECTION: i32 = 3;

/// `uint32_t rerank_abi_version(void)`.
#[no_mangle]
pub extern "C" fn rerank_abi_version() -> u32 {
    RERANK_ABI_VERSION
}

/// `int32_t rerank_score(const float* query, const float* candidates, size_t count,
/// size_t dim, float* scores_out)`: for each of the `count` rows of `candidates`
/// (row-major, `dim` floats each) writes `(1 + cos) / 2` clamped to [0, 1] into
/// `scores_out[i]`, where cos is the cosine similarity of the row and `query`. Returns 0, or
/// an error code above with `scores_out` unspecified. `count` 0 is a success that writes
/// nothing (`candidates` and `scores_out` may then be null).
///
/// # Safety
/// `query` must point to `dim` floats, `candidates` to `count * dim` floats and
/// `scores_out` to `count` writable floats, none of them overlapping `scores_out`.
#[no_mangle]
pub unsafe extern "C" fn rerank_score(
    query: *const c_float,
    candidates: *const c_float,
    count: usize,
    dim: usize,
    scores_out: *mut c_float,
) -> i32 {
    if query.is_null() {
        return RERANK_NULL_POINTER;
    }
    let Some(total) = count.checked_mul(dim).filter(|_| dim > 0) else {
        return RERANK_BAD_SHAPE;
    };
    if count == 0 {
        return RERANK_OK;
    }
    if candidates.is_null() || scores_out.is_null() {
        return RERANK_NULL_POINTER;
    }
    // SAFETY: the caller guarantees the lengths (see the function's contract).
    let (query, candidates, scores) = unsafe {
        (
            std::slice::from_raw_parts(query, dim),
            std::slice::from_raw_parts(candidates, total),
            std::slice::from_raw_parts_mut(scores_out, count),
        )
    };
    let query_norm = norm(query);
    if !query_norm.is_finite() || query_norm == 0.0 {
        return RERANK_NO_DIRECTION;
    }
    for (row, score) in candidates.chunks_exact(dim).zip(scores.iter_mut()) {
        let row_norm = norm(row);
        if !row_norm.is_finite() || row_norm == 0.0 {
            return RERANK_NO_DIRECTION;
        }
        let dot: f64 = query.iter().zip(row).map(|(&q, &c)| f64::from(q) * f64::from(c)).sum();
        let cosine = dot / (query_norm * row_norm);
        *score = ((1.0 + cosine) / 2.0).clamp(0.0, 1.0) as f32;
    }
    RERANK_OK
}

fn norm(vector: &[f32]) -> f64 {
    vector.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(query: &[f32], candidates: &[f32], dim: usize) -> (i32, Vec<f32>) {
        let count = candidates.len() / dim;
        let mut out = vec![f32::NAN; count];
        let code = unsafe { rerank_score(query.as_ptr(), candidates.as_ptr(), count, dim, out.as_mut_ptr()) };
        (code, out)
    }

    #[test]
    fn same_opposite_and_orthogonal_directions() {
        let (code, scores) = score(&[2.0, 0.0], &[1.0, 0.0, -3.0, 0.0, 0.0, 5.0], 2);
        assert_eq!(code, RERANK_OK);
        assert_eq!(scores, vec![1.0, 0.0, 0.5]);
    }

    #[test]
    fn errors_are_codes_not_crashes() {
        assert_eq!(score(&[0.0, 0.0], &[1.0, 0.0], 2).0, RERANK_NO_DIRECTION);
        assert_eq!(score(&[1.0, 0.0], &[f32::NAN, 0.0], 2).0, RERANK_NO_DIRECTION);
        let mut out = [0.0f32];
        let code = unsafe { rerank_score(std::ptr::null(), [1.0f32].as_ptr(), 1, 1, out.as_mut_ptr()) };
        assert_eq!(code, RERANK_NULL_POINTER);
        let code = unsafe { rerank_score([1.0f32].as_ptr(), [1.0f32].as_ptr(), 1, 0, out.as_mut_ptr()) };
        assert_eq!(code, RERANK_BAD_SHAPE);
        assert_eq!(rerank_abi_version(), 1);
    }
}
