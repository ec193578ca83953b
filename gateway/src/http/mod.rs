//! The HTTP layer: the axum router (`router::app`), who may call what (`access`), the handlers (`handlers`: extract, call
//! a service, convert), the body readers (`forms`), the one error mapping (`error::AppError`), the
//! layers around every route (`middleware`), the generated OpenAPI document (`openapi`)
//! and the search page (`page`).
//!
//! May import: `service`, `api`, `config`, `inference` (the trait), `blobs`, `metrics`,
//! `rerank`. Imported by: `serve` and tests.

pub mod access;
pub mod error;
pub mod forms;
pub mod handlers;
pub mod middleware;
pub mod openapi;
pub mod page;
pub mod router;
pub mod server;
pub mod state;

pub use router::{app, ops_app};
pub use state::AppState;
