//! GET / : the browser search page, one self-contained HTML file (inline CSS and script, no
//! CDN, no build step): every kind of search, a detail view with "more like this", upload
//! with progress. It only calls the public API, so it holds no logic of its own to test
//! apart from the browser flows (tests/test_page.py).

use axum::response::Html;

const PAGE: &str = include_str!("page.html");

/// The search page.
#[utoipa::path(get, path = "/", tag = "service", responses(
    (status = 200, description = "The page", body = String, content_type = "text/html"),
))]
pub async fn search_page() -> Html<&'static str> {
    Html(PAGE)
}
