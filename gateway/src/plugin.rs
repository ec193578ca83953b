//! The rerank plugin: a shared library with the C ABI of docs/faces.md ("Rerank plugin
//! ABI"), loaded once at start with `libloading` when `faces.rerank_library` is set, in
//! place of the native scorer of `rerank`. A library that cannot be loaded, lacks a
//! symbol or declares another ABI version is a start-up error naming the path.
//!
//! The library stays loaded for the life of the process (`PluginScorer` owns it), so the
//! function pointer taken from it at load time stays valid.
//!
//! What the library writes is checked before it is used: every score must be finite and in
//! [0, 1] (the ABI's `(1 + cos) / 2`), else the call fails naming the library, the
//! candidate and the value (a 500), rather than a NaN sorting to an arbitrary place or a
//! score above 1 passing every threshold.

use std::os::raw::c_float;
use std::path::{Path, PathBuf};

/// The ABI version the gateway speaks; `rerank_abi_version()` must return it.
pub const ABI_VERSION: u32 = 1;
pub const ABI_VERSION_SYMBOL: &str = "rerank_abi_version";
pub const SCORE_SYMBOL: &str = "rerank_score";

type AbiVersionFn = unsafe extern "C" fn() -> u32;
type ScoreFn = unsafe extern "C" fn(*const c_float, *const c_float, usize, usize, *mut c_float) -> i32;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load the rerank library {path}: {source}")]
    Load { path: PathBuf, source: libloading::Error },
    #[error("the rerank library {path} has no symbol {symbol:?} (the C ABI of docs/faces.md): {source}")]
    MissingSymbol { path: PathBuf, symbol: &'static str, source: libloading::Error },
    #[error("the rerank library {path} implements ABI version {found}; the gateway needs {ABI_VERSION}")]
    AbiVersion { path: PathBuf, found: u32 },
    #[error("the rerank library {path} failed: rerank_score returned {code}")]
    Failed { path: PathBuf, code: i32 },
    #[error(
        "the rerank library {path} returned score {score} for candidate {index}: a score must be finite and in [0, 1]"
    )]
    BadScore { path: PathBuf, index: usize, score: f32 },
}

pub struct PluginScorer {
    score_fn: ScoreFn,
    path: PathBuf,
    /// Keeps `score_fn`'s code mapped; never read.
    _library: libloading::Library,
}

impl PluginScorer {
    /// Loads the library, checks its ABI version and takes its score function.
    pub fn load(path: &Path) -> Result<PluginScorer, PluginError> {
        let path = path.to_path_buf();
        // SAFETY: loading runs the library's initialisers; configuring a library means
        // trusting it, as with any plugin. The symbols are taken with the ABI's types.
        unsafe {
            let library = libloading::Library::new(path.as_os_str())
                .map_err(|source| PluginError::Load { path: path.clone(), source })?;
            let missing = |symbol: &'static str| {
                let path = path.clone();
                move |source| PluginError::MissingSymbol { path, symbol, source }
            };
            let version: AbiVersionFn =
                *library.get::<AbiVersionFn>(ABI_VERSION_SYMBOL).map_err(missing(ABI_VERSION_SYMBOL))?;
            let found = version();
            if found != ABI_VERSION {
                return Err(PluginError::AbiVersion { path: path.clone(), found });
            }
            let score_fn: ScoreFn = *library.get::<ScoreFn>(SCORE_SYMBOL).map_err(missing(SCORE_SYMBOL))?;
            Ok(PluginScorer { score_fn, path, _library: library })
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scores `flat` (rows of `dim`) against `query` into `scores` (one per row); fails when
    /// the library reports an error or writes a score that is not finite and in [0, 1].
    pub fn score(&self, query: &[f32], flat: &[f32], dim: usize, scores: &mut [f32]) -> Result<(), PluginError> {
        assert_eq!(query.len(), dim, "query length is the dimension");
        assert_eq!(flat.len(), scores.len() * dim, "one score per row");
        // SAFETY: the pointers cover exactly the lengths the ABI reads and writes (asserted
        // above), and `scores` does not overlap the inputs.
        let code = unsafe { (self.score_fn)(query.as_ptr(), flat.as_ptr(), scores.len(), dim, scores.as_mut_ptr()) };
        match code {
            0 => check_scores(&self.path, scores),
            code => Err(PluginError::Failed { path: self.path.clone(), code }),
        }
    }
}

/// The first score of `path`'s answer that is not finite and in [0, 1], as an error.
fn check_scores(path: &Path, scores: &[f32]) -> Result<(), PluginError> {
    match scores.iter().position(|score| !(0.0..=1.0).contains(score)) {
        None => Ok(()),
        Some(index) => Err(PluginError::BadScore { path: path.to_path_buf(), index, score: scores[index] }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_an_error_naming_its_path() {
        let err = PluginScorer::load(Path::new("/no/such/librerank.so")).err().expect("must fail");
        let text = err.to_string();
        assert!(text.contains("cannot load the rerank library /no/such/librerank.so"), "{text}");
    }

    /// A misbehaving library's `rerank_score`: succeeds, but writes NaN for the second
    /// candidate and 0.5 for the others.
    unsafe extern "C" fn nan_for_the_second(
        _query: *const c_float,
        _candidates: *const c_float,
        count: usize,
        _dim: usize,
        scores: *mut c_float,
    ) -> i32 {
        // SAFETY: `PluginScorer::score` passes `count` writable floats.
        let scores = unsafe { std::slice::from_raw_parts_mut(scores, count) };
        for (i, score) in scores.iter_mut().enumerate() {
            *score = if i == 1 { f32::NAN } else { 0.5 };
        }
        0
    }

    /// The call through the ABI function pointer is checked: a NaN written by the library
    /// fails it (the request's 500), naming the library. The handle kept is the program's
    /// own (nothing is loaded); the function pointer is the misbehaving one above.
    #[test]
    fn a_library_writing_a_nan_fails_the_call() {
        let scorer = PluginScorer {
            score_fn: nan_for_the_second,
            path: PathBuf::from("/opt/libnan_rerank.so"),
            _library: libloading::os::unix::Library::this().into(),
        };
        let mut scores = [0.0; 3];
        let err = scorer.score(&[1.0, 0.0], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 2, &mut scores).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the rerank library /opt/libnan_rerank.so returned score NaN for candidate 1: a score must be finite and in [0, 1]"
        );
    }

    #[test]
    fn scores_outside_zero_to_one_are_errors_naming_the_library() {
        let path = Path::new("/opt/librerank.so");
        assert!(check_scores(path, &[0.0, 0.5, 1.0]).is_ok());
        assert!(check_scores(path, &[]).is_ok());
        let cases: [(&[f32], &str); 5] = [
            (&[0.2, f32::NAN], "score NaN for candidate 1"),
            (&[f32::INFINITY], "score inf for candidate 0"),
            (&[0.1, 0.2, -0.0001], "score -0.0001 for candidate 2"),
            (&[1.5, f32::NAN], "score 1.5 for candidate 0"),
            (&[0.3, f32::NEG_INFINITY], "score -inf for candidate 1"),
        ];
        for (scores, expected) in cases {
            let err = check_scores(path, scores).unwrap_err();
            assert!(matches!(err, PluginError::BadScore { .. }), "{err}");
            let text = err.to_string();
            assert!(text.starts_with("the rerank library /opt/librerank.so returned "), "{text}");
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
            assert!(text.ends_with("a score must be finite and in [0, 1]"), "{text}");
        }
    }
}
