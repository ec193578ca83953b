//! The rerank plugin: a shared library with the C ABI of docs/faces.md ("Rerank plugin
//! ABI"), loaded once at start with `libloading` when `faces.rerank_library` is set, in
//! place of the native scorer of `rerank`. A library that cannot be loaded, lacks a
//! symbol or declares another ABI version is a start-up error naming the path.
//!
//! The library stays loaded for the life of the process (`PluginScorer` owns it), so the
//! function pointer taken from it at load time stays valid.

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

    /// Scores `flat` (rows of `dim`) against `query` into `scores` (one per row).
    pub fn score(&self, query: &[f32], flat: &[f32], dim: usize, scores: &mut [f32]) -> Result<(), PluginError> {
        assert_eq!(query.len(), dim, "query length is the dimension");
        assert_eq!(flat.len(), scores.len() * dim, "one score per row");
        // SAFETY: the pointers cover exactly the lengths the ABI reads and writes (asserted
        // above), and `scores` does not overlap the inputs.
        let code = unsafe { (self.score_fn)(query.as_ptr(), flat.as_ptr(), scores.len(), dim, scores.as_mut_ptr()) };
        match code {
            0 => Ok(()),
            code => Err(PluginError::Failed { path: self.path.clone(), code }),
        }
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
}
