//! The GraphQL query page at `GET /api/v1/graphql` (for browsers): self-written, compiled
//! into the binary, so it works offline and fetches only same-origin files.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const PAGE_HTML: &str = include_str!("graphql_page/index.html");
const SCRIPT_JS: &str = include_str!("graphql_page/page.js");
const STYLE_CSS: &str = include_str!("graphql_page/page.css");

/// Same-origin script, style and fetch; nothing inline, no framing.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (header::VARY, HeaderValue::from_static("Accept")),
        ],
        body,
    )
        .into_response()
}

/// The page shell, revalidated on every load, with its own CSP.
pub(crate) fn page() -> Response {
    let mut res = asset(PAGE_HTML, "text/html; charset=utf-8", "no-cache");
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
