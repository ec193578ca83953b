//! The visual-search gateway: the axum HTTP service users talk to (ingest, search,
//! records, photos, health, metrics, OpenAPI, a search page) over Triton and a vector
//! store. Layers, each importing only those below it:
//!
//! ```text
//!  serve, cli          process: config, listeners, shutdown; the `gateway serve` flags
//!  http                router, access (keys, Host, Origin), deadlines and load shedding,
//!                      accept loop, handlers, body readers, AppError, OpenAPI, page
//!  service             ingest, search, faces, images, health: no axum, explicit deps
//!  triton              the Triton adapter: implements `inference::Inference` over gRPC
//!  inference, api,     the inference seam; wire types; config; photo files; metrics;
//!  config, blobs,      rerank scoring and its C-ABI plugin; COCO class names
//!  metrics, rerank, plugin, coco
//! ```
//!
//! Storage comes from `visual-store`, Triton from `triton-client`, text tokens from
//! `clip-tokenizer`, pixel work from `preprocess-core` and `crop-core`. The uploader
//! (`gateway ingest`) is its own crate, `uploader`.

pub mod api;
pub mod blobs;
pub mod cli;
pub mod coco;
pub mod config;
pub mod http;
pub mod inference;
pub mod metrics;
pub mod plugin;
pub mod rerank;
pub mod serve;
pub mod service;
pub mod triton;
