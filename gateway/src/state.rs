//! `AppState`: what every handler shares (config, store, Triton pipeline, photo files,
//! metrics, the text-embedding cache, the face rerank scorer).

use std::sync::Arc;

use visual_store::Store;

use crate::blobs::BlobStore;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::pipeline::Inference;
use crate::rerank::Scorer;
use crate::search::TextEmbeddingCache;

pub struct AppState {
    pub config: GatewayConfig,
    pub store: Arc<dyn Store>,
    pub inference: Arc<dyn Inference>,
    pub blobs: BlobStore,
    pub metrics: Arc<Metrics>,
    pub text_cache: TextEmbeddingCache,
    pub scorer: Scorer,
}

impl AppState {
    pub fn new(
        config: GatewayConfig,
        store: Arc<dyn Store>,
        inference: Arc<dyn Inference>,
        blobs: BlobStore,
        metrics: Arc<Metrics>,
    ) -> AppState {
        let text_cache = TextEmbeddingCache::new(config.search.text_cache_size);
        AppState { config, store, inference, blobs, metrics, text_cache, scorer: Scorer::Native }
    }

    /// Replaces the native rerank scorer (with a loaded plugin).
    pub fn with_scorer(self, scorer: Scorer) -> AppState {
        AppState { scorer, ..self }
    }
}
