//! The client's error type and the mapping from gRPC status codes to it.
//!
//! The split that callers act on: `Unavailable` (Triton not reachable or not
//! ready yet) and `ConnectionLost` (the connection broke during the call, as when
//! the server is killed), both retried, then reported: HTTP 503 territory;
//! `DeadlineExceeded`; `Rejected` / `ModelNotFound` (the request's own fault;
//! Triton's message is kept verbatim and nothing is retried); and `Server`
//! (Triton failed internally).

use std::time::Duration;

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Triton endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },

    #[error("Triton at {endpoint} unavailable for {method} after {attempts} attempt(s): {message}")]
    Unavailable { endpoint: String, method: &'static str, attempts: u32, message: String },

    /// The HTTP/2 connection failed under a call that was already sent: the request may
    /// have reached the server, which then died (kill -9 shows up as "connection reset"
    /// or "broken pipe").
    #[error("Triton at {endpoint} lost the connection during {method} after {attempts} attempt(s): {message}")]
    ConnectionLost { endpoint: String, method: &'static str, attempts: u32, message: String },

    #[error("Triton {method} exceeded its deadline of {timeout:?}")]
    DeadlineExceeded { method: &'static str, timeout: Duration },

    #[error("Triton rejected the {method} request for model {model:?} ({code}): {message}")]
    Rejected { method: &'static str, model: String, code: String, message: String },

    #[error("Triton has no model {model:?} ({method}): {message}")]
    ModelNotFound { method: &'static str, model: String, message: String },

    #[error("Triton failed {method} for model {model:?} ({code}): {message}")]
    Server { method: &'static str, model: String, code: String, message: String },

    #[error("input tensor {name:?} is malformed: {reason}")]
    InvalidInput { name: String, reason: String },

    #[error("model {model:?} returned no output {name:?} (outputs present: {present:?})")]
    OutputMissing { model: String, name: String, present: Vec<String> },

    #[error("output tensor {name:?} does not match what was expected: {reason}")]
    OutputMismatch { name: String, reason: String },

    #[error("malformed response from Triton: {0}")]
    Protocol(String),

    #[error("a Triton pool needs at least one endpoint")]
    NoEndpoint,
}

impl ClientError {
    /// Only a server that cannot be reached (or says it is unavailable), or whose
    /// connection broke, is worth asking again, there or elsewhere; every other failure
    /// would fail the same way. Every call the gateway makes may be repeated: ingest is
    /// idempotent by content hash and the rest are reads.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. } | ClientError::ConnectionLost { .. })
    }

    /// A copy of an `Unavailable` or `ConnectionLost` error counting every attempt of the
    /// call and naming every endpoint it tried (a pool's call spans several); others as
    /// they are.
    pub(crate) fn after_attempts(self, total: u32, endpoints: &str) -> ClientError {
        match self {
            ClientError::Unavailable { method, message, .. } => {
                ClientError::Unavailable { endpoint: endpoints.to_owned(), method, attempts: total, message }
            }
            ClientError::ConnectionLost { method, message, .. } => {
                ClientError::ConnectionLost { endpoint: endpoints.to_owned(), method, attempts: total, message }
            }
            other => other,
        }
    }
}

/// Context of one RPC, for turning a failed status into a `ClientError`.
pub(crate) struct CallContext<'a> {
    pub endpoint: &'a str,
    pub method: &'static str,
    /// Empty for server-level calls.
    pub model: &'a str,
    pub timeout: Duration,
    pub attempts: u32,
}

pub(crate) fn from_status(status: &Status, call: &CallContext<'_>) -> ClientError {
    let message = status.message().to_owned();
    let model = call.model.to_owned();
    let code = format!("{:?}", status.code());
    match status.code() {
        Code::Unavailable => ClientError::Unavailable {
            endpoint: call.endpoint.to_owned(),
            method: call.method,
            attempts: call.attempts,
            message: describe_transport(status),
        },
        Code::DeadlineExceeded => ClientError::DeadlineExceeded { method: call.method, timeout: call.timeout },
        // tonic reports its own client-side deadline (the grpc-timeout it
        // enforces) as CANCELLED with a TimeoutExpired source.
        Code::Cancelled if caused_by_timeout(status) => {
            ClientError::DeadlineExceeded { method: call.method, timeout: call.timeout }
        }
        // Not a status Triton sent: tonic's own code (UNKNOWN "transport error") for a
        // connection that failed under the call, e.g. reset by a killed server.
        _ if transport_failed(status) => ClientError::ConnectionLost {
            endpoint: call.endpoint.to_owned(),
            method: call.method,
            attempts: call.attempts,
            message: describe_transport(status),
        },
        Code::NotFound => ClientError::ModelNotFound { method: call.method, model, message },
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::AlreadyExists
        | Code::ResourceExhausted
        | Code::PermissionDenied
        | Code::Unauthenticated => ClientError::Rejected { method: call.method, model, code, message },
        _ => ClientError::Server { method: call.method, model, code, message },
    }
}

fn caused_by_timeout(status: &Status) -> bool {
    source_chain_holds::<tonic::TimeoutExpired>(status)
}

/// A status Triton sends carries no source; one tonic makes from a failed HTTP/2
/// connection carries the transport error (and below it hyper's and the socket's).
fn transport_failed(status: &Status) -> bool {
    source_chain_holds::<tonic::transport::Error>(status)
}

fn source_chain_holds<E: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<E>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The status message plus its source chain: a refused connection shows up
/// only in the sources ("tcp connect error: Connection refused").
fn describe_transport(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let part = error.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallContext<'static> {
        CallContext {
            endpoint: "http://127.0.0.1:1",
            method: "ModelInfer",
            model: "clip_image",
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }

    #[test]
    fn invalid_argument_is_rejected_with_tritons_message() {
        let status = Status::invalid_argument("unexpected shape for input 'images'");
        let err = from_status(&status, &call());
        match &err {
            ClientError::Rejected { model, message, .. } => {
                assert_eq!(model, "clip_image");
                assert_eq!(message, "unexpected shape for input 'images'");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert!(!err.is_retryable());
    }

    #[test]
    fn unavailable_is_retryable_and_names_the_endpoint() {
        let err = from_status(&Status::unavailable("connection refused"), &call());
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1") && text.contains("3 attempt"), "{text}");
    }

    #[test]
    fn other_codes_map_to_their_kind() {
        assert!(matches!(from_status(&Status::not_found("unknown model"), &call()), ClientError::ModelNotFound { .. }));
        assert!(matches!(
            from_status(&Status::deadline_exceeded("late"), &call()),
            ClientError::DeadlineExceeded { .. }
        ));
        assert!(matches!(from_status(&Status::internal("boom"), &call()), ClientError::Server { .. }));
        assert!(matches!(from_status(&Status::unimplemented("no such rpc"), &call()), ClientError::Rejected { .. }));
        // A plain cancellation (not tonic's timer) is not a deadline.
        assert!(matches!(from_status(&Status::cancelled("gone"), &call()), ClientError::Server { .. }));
        // UNKNOWN sent by Triton (no transport error beneath) is Triton's answer, not a lost
        // connection: not retried (tests/triton_grpc.rs has the lost connection).
        let err = from_status(&Status::unknown("model crashed"), &call());
        assert!(matches!(err, ClientError::Server { .. }) && !err.is_retryable(), "{err:?}");
    }
}
