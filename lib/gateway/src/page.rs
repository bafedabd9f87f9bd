//! The page at `/`: one self-contained file (no CDN, works offline) that
//! uses the REST API and its Server-Sent Events.

use axum::response::Html;

pub const HTML: &str = include_str!("page.html");

pub async fn index() -> Html<&'static str> {
    Html(HTML)
}
