//! The router: `app(state) -> Router` wires every endpoint to its handler (`handlers`, the
//! page, the OpenAPI document) and puts the layers around them (tracing, metrics, access
//! control, load shedding, request bounds, JSON errors, compression); `ops_app` is the
//! key-less health and metrics router of `server.ops_listen`.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::http::access::{guard, AccessControl};
use crate::http::handlers::{
    classes, delete_image, detect_objects, face_embeddings, face_rerank, get_image, get_image_file, health,
    ingest_batch, ingest_image, metrics_text, ops_health, search_faces, search_hybrid, search_objects, search_region,
    search_similar, search_text, similar_to_face, similar_to_image, similar_to_object,
};
use crate::http::middleware::{bound_request, json_errors, shed_load, track_http, LoadShedder, RequestBounds};
use crate::http::state::AppState;
use crate::http::{openapi, page};

/// The public router. `access` is built (and its config checked) by the caller.
pub fn app(state: Arc<AppState>, access: Arc<AccessControl>) -> Router {
    let bounds = RequestBounds::new(&state.config.server, &state.config.limits);
    let shedder = Arc::new(LoadShedder::new(&state.config.server));
    let metrics = state.metrics.clone();
    Router::new()
        .route("/", get(page::search_page))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi::document))
        .route("/ingest", post(ingest_image))
        .route("/ingest/batch", post(ingest_batch))
        .route("/search/text", get(search_text))
        .route("/search/hybrid", post(search_hybrid))
        .route("/search/similar", post(search_similar))
        .route("/search/objects", post(search_objects))
        .route("/search/region", post(search_region))
        .route("/search/faces", post(search_faces))
        .route("/detect", post(detect_objects))
        .route("/classes", get(classes))
        .route("/faces/embeddings", post(face_embeddings))
        .route("/faces/rerank", post(face_rerank))
        .route("/images/{id}", get(get_image).delete(delete_image))
        .route("/images/{id}/file", get(get_image_file))
        .route("/images/{id}/similar", get(similar_to_image))
        .route("/images/{id}/objects/{index}/similar", get(similar_to_object))
        .route("/images/{id}/faces/{index}/similar", get(similar_to_face))
        .with_state(state)
        // Innermost first. bound_request reads the body within its limits, so axum's own
        // body limit is off.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(json_errors))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(bounds, bound_request))
        .layer(middleware::from_fn_with_state(shedder, shed_load))
        .layer(middleware::from_fn_with_state(access, guard))
        .layer(middleware::from_fn_with_state(metrics, track_http))
        .layer(TraceLayer::new_for_http())
}

/// `/health` (the full report) and `/metrics` without keys, for probes and scrapers on
/// `server.ops_listen`, which should not be reachable from outside.
pub fn ops_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(ops_health))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .layer(middleware::from_fn(json_errors))
}
