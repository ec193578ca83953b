//! `ServiceError`: every way a service call can fail, in the API's vocabulary (bad request,
//! not found, dependency unavailable, ...). Each kind has the HTTP status the API contract
//! gives it (`status`), which per-item results of batch endpoints carry too; the HTTP layer
//! turns the error into a response (`http::error`).

use http::StatusCode;
use triton_client::ClientError;
use visual_store::StoreError;

use crate::inference::InferenceError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
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
}

impl ServiceError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ClientError> for ServiceError {
    fn from(err: ClientError) -> Self {
        match err {
            // Triton's message names the problem (e.g. "cannot decode image"): pass it on.
            ClientError::Rejected { .. } => ServiceError::Unprocessable(err.to_string()),
            ClientError::Unavailable { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::DeadlineExceeded { .. } => ServiceError::Unavailable(err.to_string()),
            ClientError::ModelNotFound { .. } => ServiceError::Unavailable(err.to_string()),
            _ => ServiceError::BadGateway(err.to_string()),
        }
    }
}

impl From<InferenceError> for ServiceError {
    fn from(err: InferenceError) -> Self {
        match err {
            InferenceError::Triton(err) => err.into(),
            InferenceError::Contract { .. } => ServiceError::BadGateway(err.to_string()),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::InvalidQuery(_) | StoreError::InvalidRecord(_) => ServiceError::BadRequest(err.to_string()),
            StoreError::Unavailable(_) => ServiceError::Unavailable(err.to_string()),
            StoreError::SchemaMismatch(_) | StoreError::Io(_) => ServiceError::Internal(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triton_rejection_is_422_with_tritons_message() {
        let err = ServiceError::from(ClientError::Rejected {
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
        let err = ServiceError::from(ClientError::Unavailable {
            endpoint: "http://127.0.0.1:1".into(),
            method: "ModelInfer",
            attempts: 4,
            message: "connection refused".into(),
        });
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A server killed under the call: the photo may be sent again, so 503 too.
        let err = ServiceError::from(ClientError::ConnectionLost {
            endpoint: "http://127.0.0.1:1, http://127.0.0.1:2".into(),
            method: "ModelInfer",
            attempts: 2,
            message: "connection reset".into(),
        });
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
