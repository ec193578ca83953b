//! `AppState`: what the handlers share (config, store, inference, photo files, metrics,
//! the text-embedding cache, the face rerank scorer). Handlers hand each service only the
//! parts it needs.

use std::sync::Arc;
use std::time::Duration;

use visual_store::Store;

use crate::blobs::BlobStore;
use crate::config::GatewayConfig;
use crate::inference::Inference;
use crate::metrics::Metrics;
use crate::rerank::Scorer;
use crate::service::faces::FaceIndexing;
use crate::service::id_locks::IdLocks;
use crate::service::ingest::IngestDeps;
use crate::service::pixel_budget::PixelBudget;
use crate::service::search::TextEmbeddingCache;

pub struct AppState {
    pub config: GatewayConfig,
    pub store: Arc<dyn Store>,
    pub inference: Arc<dyn Inference>,
    pub blobs: BlobStore,
    pub metrics: Arc<Metrics>,
    pub text_cache: TextEmbeddingCache,
    pub scorer: Scorer,
    pub id_locks: IdLocks,
    /// Pixels the gateway decodes at once (`limits.decode_pixel_budget`).
    pub pixel_budget: PixelBudget,
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
        let pixel_budget =
            PixelBudget::new(config.limits.decode_pixel_budget, Duration::from_millis(config.limits.decode_wait_ms));
        AppState {
            config,
            store,
            inference,
            blobs,
            metrics,
            text_cache,
            scorer: Scorer::Native,
            id_locks: IdLocks::new(),
            pixel_budget,
        }
    }

    /// Replaces the native rerank scorer (with a loaded plugin).
    pub fn with_scorer(self, scorer: Scorer) -> AppState {
        AppState { scorer, ..self }
    }

    pub fn ingest_deps(&self) -> IngestDeps<'_> {
        IngestDeps {
            store: self.store.as_ref(),
            inference: self.inference.as_ref(),
            blobs: &self.blobs,
            locks: &self.id_locks,
            metrics: &self.metrics,
            class_names: &self.config.models.class_names,
            batch_concurrency: self.config.server.batch_concurrency,
            faces: FaceIndexing {
                enabled: self.config.faces.index_on_ingest,
                store_dim: self.config.models.embedding_dim,
            },
        }
    }
}
