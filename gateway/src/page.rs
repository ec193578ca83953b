//! GET / : the browser search page, one self-contained HTML file (inline CSS and
//! script, no CDN, no build step) that calls /search/text and draws the matched boxes.

use axum::response::Html;

const PAGE: &str = include_str!("page.html");

pub async fn search_page() -> Html<&'static str> {
    Html(PAGE)
}
