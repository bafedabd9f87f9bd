//! The page at `/`: one self-contained file (no CDN, works offline) that
//! uses the REST API and its Server-Sent Events.
//!
//! It is served with a Content-Security-Policy that allows its own script
//! and style block by their SHA-256 (computed once from the file, so an
//! edit cannot forget the policy) and nothing else inline: an injected
//! `<script>`, `on*=` attribute or `style=` does not run. It may fetch only
//! its own origin, may not be framed, and sends no referrer elsewhere.

use std::sync::LazyLock;

use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use http::HeaderValue;
use http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_FRAME_OPTIONS};
use sha2::{Digest, Sha256};

pub const HTML: &str = include_str!("page.html");

/// The page's policy, with the hashes of its inline blocks.
pub static POLICY: LazyLock<String> = LazyLock::new(|| policy(HTML));

pub async fn index() -> Response {
    let mut response = Html(HTML).into_response();
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&POLICY) {
        headers.insert(CONTENT_SECURITY_POLICY, policy);
    }
    // For browsers that predate frame-ancestors.
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn policy(html: &str) -> String {
    let hashes = |tag: &str| {
        blocks(html, tag)
            .map(|block| {
                let digest = Sha256::digest(block.as_bytes());
                let hash = base64::engine::general_purpose::STANDARD.encode(digest);
                format!(" 'sha256-{hash}'")
            })
            .collect::<String>()
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hashes("script"),
        hashes("style"),
    )
}

/// The contents of each `<tag>...</tag>` (attribute-less, as the page writes them).
fn blocks<'a>(html: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut rest = html;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = start + rest[start..].find(&close)?;
        let block = &rest[start..end];
        rest = &rest[end + close.len()..];
        Some(block)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_hashes_each_inline_block_and_allows_nothing_else() {
        let policy = policy("<style>a{}</style><script>x()</script><script>y()</script>");
        // echo -n 'x()' | openssl dgst -sha256 -binary | base64
        let x = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"x()"));
        assert!(policy.contains(&format!("'sha256-{x}'")), "{policy}");
        assert_eq!(policy.matches("'sha256-").count(), 3, "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }

    #[test]
    fn the_shipped_page_has_one_script_and_one_style_hashed() {
        assert_eq!(blocks(HTML, "script").count(), 1);
        assert_eq!(blocks(HTML, "style").count(), 1);
        assert!(
            !HTML.contains(" style=\""),
            "an inline style attribute would be blocked"
        );
        assert!(
            !HTML.contains(" onclick=\""),
            "an inline handler would be blocked"
        );
        assert_eq!(POLICY.matches("'sha256-").count(), 2);
    }
}
