//! `AppError`: every failure a handler can return, mapped once to an HTTP status and
//! the JSON body `{"error": "..."}`; plus `ApiJson`, the JSON extractor whose
//! rejections (malformed JSON, wrong content type) take the same shape.

use axum::extract::multipart::MultipartError;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use triton_client::ClientError;
use visual_store::StoreError;

use crate::pipeline::PipelineError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but its content cannot be processed, e.g. an upload
    /// that is not an image (422).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A dependency (Triton, the store) cannot be reached now (503).
    #[error("{0}")]
    Unavailable(String),
    /// A dependency answered with something the gateway cannot use (502).
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Internal(String),
    /// An extractor's own rejection, keeping its status (413 for an oversized body...).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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

impl From<ClientError> for AppError {
    fn from(err: ClientError) -> Self {
        match err {
            // Triton's message names the problem (e.g. "cannot decode image"): pass it on.
            ClientError::Rejected { .. } => AppError::Unprocessable(err.to_string()),
            ClientError::Unavailable { .. } | ClientError::DeadlineExceeded { .. } => {
                AppError::Unavailable(err.to_string())
            }
            ClientError::ModelNotFound { .. } => AppError::Unavailable(err.to_string()),
            _ => AppError::BadGateway(err.to_string()),
        }
    }
}

impl From<PipelineError> for AppError {
    fn from(err: PipelineError) -> Self {
        match err {
            PipelineError::Triton(err) => err.into(),
            PipelineError::Contract { .. } => AppError::BadGateway(err.to_string()),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::InvalidQuery(_) | StoreError::InvalidRecord(_) => AppError::BadRequest(err.to_string()),
            StoreError::Unavailable(_) => AppError::Unavailable(err.to_string()),
            StoreError::SchemaMismatch(_) | StoreError::Io(_) => AppError::Internal(err.to_string()),
        }
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

/// `Json<T>` whose rejections are `AppError`s.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triton_rejection_is_422_with_tritons_message() {
        let err = AppError::from(ClientError::Rejected {
            method: "ModelInfer",
            model: "visual_ingest".into(),
            code: "InvalidArgument".into(),
            message: "preprocess: not a JPEG, PNG or WebP image".into(),
        });
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.to_string().contains("not a JPEG"));
    }

    #[test]
    fn unreachable_triton_is_503() {
        let err = AppError::from(ClientError::Unavailable {
            endpoint: "http://127.0.0.1:1".into(),
            method: "ModelInfer",
            attempts: 4,
            message: "connection refused".into(),
        });
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
