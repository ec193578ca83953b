//! The service layer: what the gateway does, independent of HTTP. Each function takes
//! exactly what it needs (`&dyn Store`, `&dyn Inference`, caches, slices of the config)
//! and returns wire types (`crate::api`) or a `ServiceError`; none of it knows axum.
//!
//! May import: `api`, `config`, `inference`, `blobs`, `metrics`, `rerank`, `visual-store`
//! and the pure crates. Imported by: `http` (and tests). Never imports `http` or `triton`.

pub mod aligned_faces;
pub mod dates;
pub mod detect;
pub mod error;
pub mod faces;
pub mod health;
pub mod id_locks;
pub mod images;
pub mod ingest;
pub mod json_depth;
pub mod pixel_budget;
pub mod region;
pub mod search;
pub mod tags;

pub use error::ServiceError;
