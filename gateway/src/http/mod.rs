//! The HTTP layer: the axum router (`routes::app`), the handlers (extract, call a service,
//! convert), the body readers (`forms`), the one error mapping (`error::AppError`), the
//! layers around every route (`middleware`), the generated OpenAPI document (`openapi`)
//! and the search page (`page`).
//!
//! May import: `service`, `api`, `config`, `inference` (the trait), `blobs`, `metrics`,
//! `rerank`. Imported by: `serve` and tests.

pub mod error;
pub mod forms;
pub mod middleware;
pub mod openapi;
pub mod page;
pub mod routes;
pub mod state;

pub use routes::app;
pub use state::AppState;
