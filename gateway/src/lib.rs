//! The visual-search gateway: the axum HTTP service users talk to (ingest, search,
//! records, photos, health, metrics, OpenAPI, a search page), its Triton pipeline and
//! the `gateway` command line. Storage comes from `visual-store`, Triton from
//! `triton-client`, text tokens from `clip-tokenizer`.
//!
//! Modules: `config` (TOML + overrides), `api` (wire types), `error`
//! (HTTP error mapping), `pipeline` (Triton calls), `search` (query building and
//! execution), `ingest` (upload form and storing photos), `faces` (the face endpoints
//! and faces on ingest), `rerank` (face rerank scoring), `plugin` (the C-ABI rerank
//! library), `blobs` (photo files),
//! `metrics`, `routes` (the router), `page` (GET /), `openapi`, `serve` (process
//! lifetime), `cli` (commands and the ingest client).

pub mod api;
pub mod blobs;
pub mod cli;
pub mod coco;
pub mod config;
pub mod error;
pub mod faces;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod pipeline;
pub mod plugin;
pub mod rerank;
pub mod routes;
pub mod search;
pub mod serve;
pub mod state;
