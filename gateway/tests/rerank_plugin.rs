//! The rerank plugin path end to end: builds `rerank-plugin` (the project's C-ABI library),
//! loads it the way `gateway serve` does, and holds its scores bit-equal to the native
//! scorer's; libraries that are missing or lack the ABI are refused with their path named.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gateway::plugin::{PluginError, PluginScorer};
use gateway::rerank::{self, native_scores, RerankLimits, Scorer};

/// Builds the cdylib once per test run, into its own target folder beside this test's:
/// the outer `cargo test` holds the lock on its own folder while tests run.
fn plugin_library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        // <target>/<profile>/deps/<this test> -> <target>
        let exe = std::env::current_exe().expect("test executable path");
        let target = exe.ancestors().nth(3).expect("target folder").to_path_buf();
        let plugin_target = target.join("rerank-plugin-test");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "rerank-plugin", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&plugin_target)
            .status()
            .expect("running cargo build -p rerank-plugin");
        assert!(status.success(), "cargo build -p rerank-plugin failed");
        let library = plugin_target.join("debug").join(format!(
            "{}rerank_plugin{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        assert!(library.exists(), "{} was not built", library.display());
        library
    })
}

/// Deterministic values in [-1, 1), some rows scaled far from unit length.
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if i % 7 == 0 {
                unit * 40.0
            } else {
                unit
            }
        })
        .collect()
}

#[test]
fn plugin_scores_equal_the_native_scores() {
    let plugin = PluginScorer::load(plugin_library()).expect("loading the built plugin");
    for (count, dim, seed) in [(1, 1, 1), (10, 3, 2), (1000, 128, 3), (257, 512, 4)] {
        let query = values(dim, seed);
        let flat = values(count * dim, seed + 100);
        let mut native = vec![0.0; count];
        let mut from_plugin = vec![f32::NAN; count];
        native_scores(&query, &flat, dim, &mut native);
        plugin.score(&query, &flat, dim, &mut from_plugin).expect("plugin scoring");
        let native_bits: Vec<u32> = native.iter().map(|s| s.to_bits()).collect();
        let plugin_bits: Vec<u32> = from_plugin.iter().map(|s| s.to_bits()).collect();
        assert_eq!(native_bits, plugin_bits, "count {count}, dim {dim}");
        assert!(native.iter().all(|s| (0.0..=1.0).contains(s)));
    }
}

#[test]
fn both_scorers_rank_the_same_candidates_the_same_way() {
    let plugin = Scorer::Plugin(PluginScorer::load(plugin_library()).unwrap());
    let dim = 16;
    let query = values(dim, 7);
    let rows = values(200 * dim, 8);
    let ids: Vec<String> = (0..200).map(|i| format!("face-{i}")).collect();
    let candidates: Vec<(&str, &[f32])> = ids.iter().map(String::as_str).zip(rows.chunks(dim)).collect();
    let limits = RerankLimits { max_candidates: 1000, max_dim: 64 };
    let checked = rerank::check(&query, &candidates, Some(0.5), 0.7, limits).unwrap();
    let native = rerank::rank(&Scorer::Native.score(&query, &checked).unwrap(), checked.threshold);
    let from_plugin = rerank::rank(&plugin.score(&query, &checked).unwrap(), checked.threshold);
    assert!(!native.is_empty() && native.len() < 200, "the threshold should keep some: {}", native.len());
    assert_eq!(native, from_plugin);
    assert!(plugin.name().starts_with("plugin:") && plugin.name().ends_with(plugin_library().to_str().unwrap()));
}

#[test]
fn unusable_libraries_are_refused_naming_the_path() {
    let missing = PluginScorer::load(Path::new("/nonexistent/librerank.so")).err().expect("no such file");
    assert!(matches!(missing, PluginError::Load { .. }), "{missing}");
    assert!(missing.to_string().contains("/nonexistent/librerank.so"), "{missing}");
    // A real shared library without the ABI: the C library every test process has loaded.
    let libc = Path::new("libc.so.6");
    let err = PluginScorer::load(libc).err().expect("libc has no rerank ABI");
    assert!(matches!(err, PluginError::MissingSymbol { symbol: "rerank_abi_version", .. }), "{err}");
    assert!(err.to_string().contains("libc.so.6") && err.to_string().contains("rerank_abi_version"), "{err}");
}
