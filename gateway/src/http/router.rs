//! The router: `app(state) -> Router` wires every endpoint to its handler (`handlers`, the
//! page, the OpenAPI document) and puts the layers around them (body limit, JSON errors,
//! metrics, compression, tracing).

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::http::handlers::{
    delete_image, face_embeddings, face_rerank, get_image, get_image_file, health, ingest_batch, ingest_image,
    metrics_text, search_faces, search_hybrid, search_objects, search_similar, search_text,
};
use crate::http::middleware::{json_errors, track_http};
use crate::http::state::AppState;
use crate::http::{openapi, page};

pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.config.server.max_request_bytes;
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
        .route("/search/faces", post(search_faces))
        .route("/faces/embeddings", post(face_embeddings))
        .route("/faces/rerank", post(face_rerank))
        .route("/images/{id}", get(get_image).delete(delete_image))
        .route("/images/{id}/file", get(get_image_file))
        .with_state(state)
        // Innermost first: the limit's bare 413 is turned into JSON by json_errors.
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(max_body, json_errors))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(metrics, track_http))
        .layer(TraceLayer::new_for_http())
}
