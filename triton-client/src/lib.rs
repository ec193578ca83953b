//! Triton KServe v2 gRPC client.
//!
//! The protocol messages are written in the project (`proto`, from Triton's
//! `grpc_service.proto`) and sent with tonic's generic unary client and the
//! prost codec: no protoc, no build script. `TritonClient` owns one pooled
//! channel to one server; `TritonPool` spreads calls over several servers and
//! moves a call to another when its server is gone; `retry` is the retry budget
//! both follow; `tensor` turns typed data into raw little-endian tensors and
//! back; `error` classifies failures so that callers can tell a server that is
//! gone (retried) from a request Triton rejected (never retried).
//!
//! Layer: a client library with no workspace dependencies (no knowledge of the models).
//! Imported by the gateway.

mod client;
mod error;
mod pool;
pub mod proto;
mod retry;
mod tensor;

pub use client::{ClientConfig, TritonClient};
pub use error::ClientError;
pub use pool::{EndpointStatus, ProbeConfig, TritonPool};
pub use tensor::{DataType, InferRequest, InferResponse, InputTensor, ModelMetadata, OutputTensor, TensorMetadata};
