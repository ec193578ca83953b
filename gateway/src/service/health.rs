//! Readiness: Triton and each model the gateway needs, the store, and the face settings.

use visual_store::Store;

use crate::api::{FacesHealth, HealthResponse, StoreHealth};
use crate::config::FacesConfig;
use crate::inference::Inference;

/// `rerank_scorer` is the active scorer's name (`Scorer::name`).
pub async fn health(
    inference: &dyn Inference,
    store: &dyn Store,
    faces: &FacesConfig,
    rerank_scorer: String,
) -> HealthResponse {
    let triton = inference.health().await;
    let kind = store.kind().to_owned();
    let quarantined = store.quarantined();
    let answer = match store.ready().await {
        Ok(()) => store.count().await,
        Err(err) => Err(err),
    };
    // After the calls above, so the nodes show what those calls found.
    let nodes = store.nodes().into_iter().map(Into::into).collect();
    let store = match answer {
        Ok(images) => StoreHealth { kind, ready: true, images: Some(images), quarantined, error: None, nodes },
        Err(err) => StoreHealth { kind, ready: false, images: None, quarantined, error: Some(err.to_string()), nodes },
    };
    let ready = triton.ready && store.ready;
    HealthResponse {
        status: if ready { "ok" } else { "unavailable" },
        triton,
        store,
        faces: FacesHealth { model: faces.model.clone(), index_on_ingest: faces.index_on_ingest, rerank_scorer },
    }
}
