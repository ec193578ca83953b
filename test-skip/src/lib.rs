//! How a Rust test that cannot run on this machine says so.
//!
//! The harness has no "skipped" outcome: a test that returns early passes, and its output
//! is hidden. So under the project's test command (`scripts/test.sh` sets
//! `REQUIRE_ALL_TESTS=1`) a missing prerequisite is a failure ([`unavailable`] panics),
//! except a missing GPU: [`no_gpu`] writes one line to the file named by `GPU_SKIP_LOG`,
//! which the test command counts into its "N GPU tests skipped: no GPU" summary.
//! Outside the test command both print a `SKIPPED` line to stderr and let the test return.
//! Depends on nothing; used as a dev-dependency only.

use std::io::Write;

/// Set by the test command: every test must run, only GPU tests may skip.
pub const REQUIRE_ALL_ENV: &str = "REQUIRE_ALL_TESTS";
/// A file the GPU skips are appended to, one line each.
pub const GPU_SKIP_LOG_ENV: &str = "GPU_SKIP_LOG";

fn require_all() -> bool {
    std::env::var(REQUIRE_ALL_ENV).is_ok_and(|v| v == "1")
}

/// Writes to the stderr handle itself: `eprintln!` is captured and hidden for passing tests.
fn say(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// `test` cannot run because `reason` (no server URL, no compiler...): panics under the
/// test command, otherwise says so; the caller returns after it.
pub fn unavailable(test: &str, reason: &str) {
    if require_all() {
        panic!("{test} cannot run: {reason} (a skip is a failure under {REQUIRE_ALL_ENV}=1)");
    }
    say(&format!("SKIPPED: {test}: {reason}"));
}

/// `test` needs a GPU and there is none (`reason` says why): a visible, counted skip,
/// never a failure; the caller returns after it.
pub fn no_gpu(test: &str, reason: &str) {
    let line = format!("SKIPPED (no GPU): {test}: {reason}");
    say(&line);
    if let Ok(path) = std::env::var(GPU_SKIP_LOG_ENV) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut log| log.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            panic!("{test}: cannot record the GPU skip in {path}: {e}");
        }
    }
}
