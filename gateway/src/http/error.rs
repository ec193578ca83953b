//! `AppError`: what a handler returns on failure — a service's `ServiceError`, or an
//! extractor's own rejection (malformed JSON, a wrong content type, an oversized body) —
//! answered once as the status and the JSON body `{"error": "..."}`; plus `ApiJson`, the
//! JSON extractor whose rejections take the same shape.

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::service::{json_depth, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// An extractor's own rejection, keeping its status (413 for an oversized body...).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError::Service(ServiceError::BadRequest(message.into()))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Service(err) => err.status(),
            AppError::Rejected { status, .. } => *status,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(%status, error = %self, "request failed");
        }
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

impl From<MultipartError> for AppError {
    fn from(err: MultipartError) -> Self {
        AppError::Rejected { status: err.status(), message: format!("multipart body: {}", err.body_text()) }
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        AppError::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<MultipartRejection> for AppError {
    fn from(rejection: MultipartRejection) -> Self {
        AppError::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        AppError::Rejected { status: rejection.status(), message: rejection.body_text() }
    }
}

/// The nesting depth a JSON body may have (`limits.max_json_depth`), put into each
/// request's extensions by the request-bounds layer for `ApiJson`.
#[derive(Clone, Copy, Debug)]
pub struct JsonDepthLimit(pub usize);

/// `Json<T>` whose rejections are `AppError`s, refusing bodies nested deeper than the
/// request's `JsonDepthLimit` before parsing them.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
        if !is_json {
            return Err(AppError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: "Expected request with `Content-Type: application/json`".into(),
            });
        }
        let max_depth = req.extensions().get::<JsonDepthLimit>().map(|limit| limit.0);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| AppError::Rejected { status: rejection.status(), message: rejection.body_text() })?;
        if let Some(max_depth) = max_depth.filter(|&max| json_depth::exceeds(&bytes, max)) {
            return Err(AppError::bad_request(format!(
                "the JSON body nests deeper than {max_depth} levels (limits.max_json_depth)"
            )));
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(ApiJson(value))
    }
}
