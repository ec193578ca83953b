//! Layers around every route: JSON bodies for the errors axum and tower answer themselves
//! (a body limit's 413, an unknown route's 404, a wrong method's 405), and request metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::metrics::Metrics;

/// Any error response not already JSON gets the `{"error": ...}` body every handler
/// error has. `max_body` is `server.max_request_bytes`, named in the 413 message.
pub async fn json_errors(State(max_body): State<usize>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = match (status, text.is_empty()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!("request body too large: the limit is {max_body} bytes"),
        (StatusCode::NOT_FOUND, true) => "no such endpoint".to_owned(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_owned(),
        (_, false) => text,
    };
    let mut response = (status, Json(json!({ "error": message }))).into_response();
    for (name, value) in parts.headers.iter().filter(|(name, _)| *name == header::ALLOW) {
        response.headers_mut().insert(name, value.clone());
    }
    response
}

/// Counts and times every request under its route template (`/images/{id}`), so ids do
/// not explode the label set; unmatched paths share one label.
pub async fn track_http(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_http(&method, &route, response.status().as_u16(), started.elapsed());
    response
}
