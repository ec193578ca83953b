//! Layers around every route: JSON bodies for the errors axum and tower answer themselves
//! (an unknown route's 404, a wrong method's 405), request metrics, the body and request
//! deadlines with the size limit, the query-string limit, and load shedding per endpoint
//! class.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::config::{LimitsConfig, ServerConfig};
use crate::http::access::{LoadClass, RoutePolicy};
use crate::http::error::JsonDepthLimit;
use crate::metrics::Metrics;

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Any error response not already JSON gets the `{"error": ...}` body every handler
/// error has.
pub async fn json_errors(request: Request, next: Next) -> Response {
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
/// not explode the label set; unmatched paths and methods outside the standard ones each
/// share the label `other`, so no client can create series at will.
pub async fn track_http(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "other".to_owned());
    let method = method_label(request.method()).to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_http(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Time and size bounds of one request (`server.*_timeout_ms`, `server.max_request_bytes`,
/// `limits.max_query_string_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct RequestBounds {
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_query_string_bytes: usize,
    pub max_json_depth: usize,
}

impl RequestBounds {
    pub fn new(server: &ServerConfig, limits: &LimitsConfig) -> RequestBounds {
        RequestBounds {
            body_read_timeout: Duration::from_millis(server.body_read_timeout_ms),
            request_timeout: Duration::from_millis(server.request_timeout_ms),
            max_body_bytes: server.max_request_bytes,
            max_query_string_bytes: limits.max_query_string_bytes,
            max_json_depth: limits.max_json_depth,
        }
    }
}

/// The query string is bounded (414), the body is read whole within its deadline (408) and
/// size (413) before any handler sees it, and the handler must answer within the request
/// deadline (503). A handler dropped at its deadline cancels no Triton call: those run in
/// tasks of their own (`triton`).
pub async fn bound_request(State(bounds): State<RequestBounds>, request: Request, next: Next) -> Response {
    let query_bytes = request.uri().query().map_or(0, str::len);
    if query_bytes > bounds.max_query_string_bytes {
        return error(
            StatusCode::URI_TOO_LONG,
            format!(
                "query string of {query_bytes} bytes; the limit is {} (limits.max_query_string_bytes)",
                bounds.max_query_string_bytes
            ),
        );
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, bounds.max_body_bytes).collect();
    let body = match tokio::time::timeout(bounds.body_read_timeout, read).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms (server.body_read_timeout_ms)",
                    bounds.body_read_timeout.as_millis()
                ),
            )
        }
        Ok(Err(err)) if err.is::<LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body too large: the limit is {} bytes (server.max_request_bytes)",
                    bounds.max_body_bytes
                ),
            )
        }
        Ok(Err(err)) => return error(StatusCode::BAD_REQUEST, format!("reading the request body: {err}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(JsonDepthLimit(bounds.max_json_depth));
    match tokio::time::timeout(bounds.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} ms (server.request_timeout_ms)",
                bounds.request_timeout.as_millis()
            ),
        ),
    }
}

/// The requests of one endpoint class served at once, and the config key that sets it.
struct ClassSlots {
    permits: Arc<Semaphore>,
    limit: usize,
    key: &'static str,
}

impl ClassSlots {
    fn new(limit: usize, key: &'static str) -> ClassSlots {
        ClassSlots { permits: Arc::new(Semaphore::new(limit)), limit, key }
    }
}

/// One semaphore per endpoint class: a request beyond its class's limit is refused at once
/// with 503 and Retry-After, not queued.
pub struct LoadShedder {
    ingest: ClassSlots,
    search: ClassSlots,
    faces: ClassSlots,
    retry_after: HeaderValue,
}

impl LoadShedder {
    pub fn new(server: &ServerConfig) -> LoadShedder {
        LoadShedder {
            ingest: ClassSlots::new(server.max_concurrent_ingest, "server.max_concurrent_ingest"),
            search: ClassSlots::new(server.max_concurrent_search, "server.max_concurrent_search"),
            faces: ClassSlots::new(server.max_concurrent_faces, "server.max_concurrent_faces"),
            retry_after: HeaderValue::from(server.retry_after_s),
        }
    }

    fn slots(&self, class: LoadClass) -> &ClassSlots {
        match class {
            LoadClass::Ingest => &self.ingest,
            LoadClass::Search => &self.search,
            LoadClass::Faces => &self.faces,
        }
    }
}

/// Runs after `access::guard`, which put the route's `RoutePolicy` into the extensions.
pub async fn shed_load(State(shedder): State<Arc<LoadShedder>>, request: Request, next: Next) -> Response {
    let Some(class) = request.extensions().get::<RoutePolicy>().and_then(|p| p.class) else {
        return next.run(request).await;
    };
    let ClassSlots { permits, limit, key } = shedder.slots(class);
    let Ok(_permit) = permits.clone().try_acquire_owned() else {
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("overloaded: {limit} requests of this kind are already in progress ({key}); retry shortly"),
        );
        response.headers_mut().insert(header::RETRY_AFTER, shedder.retry_after.clone());
        return response;
    };
    let mut response = next.run(request).await;
    // Every 503 of these endpoints (Triton or a budget overloaded) tells clients when to retry.
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().entry(header::RETRY_AFTER).or_insert_with(|| shedder.retry_after.clone());
    }
    response
}
