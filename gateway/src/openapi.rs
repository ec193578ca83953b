//! GET /openapi.json: the hand-written OpenAPI 3.1 document of the REST API
//! (`openapi.json` beside this file). A test holds it and the router to the same
//! routes and methods.

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], DOCUMENT)
}
