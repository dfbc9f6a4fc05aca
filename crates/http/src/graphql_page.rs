//! The GraphQL query page at `GET /api/v1/graphql` (for browsers): self-written, compiled
//! into the binary, so it works offline and fetches only same-origin files.

use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::docs::{PAGE_CSP, asset};

const PAGE_HTML: &str = include_str!("graphql_page/index.html");
const SCRIPT_JS: &str = include_str!("graphql_page/page.js");
const STYLE_CSS: &str = include_str!("graphql_page/page.css");

/// The page shell, revalidated on every load, with its own CSP.
pub(crate) fn page() -> Response {
    let mut res = asset(PAGE_HTML, "text/html; charset=utf-8", "no-cache");
    // GET /api/v1/graphql answers JSON too: caches must tell the two apart.
    res.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    res
}

/// `GET /api/v1/graphql/page.js`.
pub(crate) async fn script() -> Response {
    asset(
        SCRIPT_JS,
        "text/javascript; charset=utf-8",
        "public, max-age=300",
    )
}

/// `GET /api/v1/graphql/page.css`.
pub(crate) async fn style() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8", "public, max-age=300")
}
