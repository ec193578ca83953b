//! Timestamps in the clock Triton's statistics use (steady clock, nanoseconds).

/// Nanoseconds of CLOCK_MONOTONIC, the clock behind C++'s `steady_clock` on Linux, so that the
/// timestamps we report line up with the ones Triton takes itself.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
