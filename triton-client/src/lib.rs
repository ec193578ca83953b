//! Triton KServe v2 gRPC client.
