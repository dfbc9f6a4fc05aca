//! The API reference page at `GET /docs`: a small self-written renderer for the OpenAPI
//! document served at `/api/v1/openapi.json`.
//!
//! The three assets are compiled into the binary so the page works offline and fetches
//! nothing but same-origin files. The HTML carries its own, slightly wider CSP than the
//! boundary's default (which it only sets when none is present), allowing same-origin
//! scripts, styles and the `fetch` of the document.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The HTML shell: it only links the stylesheet and the script.
const PAGE_HTML: &str = include_str!("docs/index.html");
/// The renderer: fetches the OpenAPI document and builds the page with DOM APIs.
const SCRIPT_JS: &str = include_str!("docs/docs.js");
/// The stylesheet, light and dark.
const STYLE_CSS: &str = include_str!("docs/docs.css");

/// The page's CSP: same-origin script, style and fetch; nothing inline, no framing.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Builds a `200 OK` with the given body, content type and cache policy.
pub(crate) fn asset(
    body: &'static str,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

/// `GET /docs`: the reference page shell, revalidated on every load, with its own CSP.
pub(crate) async fn page() -> Response {
    let mut res = asset(PAGE_HTML, "text/html; charset=utf-8", "no-cache");
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    res
}

/// `GET /docs/docs.js`: the renderer script.
pub(crate) async fn script() -> Response {
    asset(
        SCRIPT_JS,
        "text/javascript; charset=utf-8",
        "public, max-age=300",
    )
}

/// `GET /docs/docs.css`: the stylesheet.
pub(crate) async fn style() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8", "public, max-age=300")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(res: &Response, name: header::HeaderName) -> Option<&str> {
        res.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn page_sets_its_own_csp_and_no_cache() {
        let res = page().await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header_of(&res, header::CONTENT_TYPE),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(header_of(&res, header::CACHE_CONTROL), Some("no-cache"));
        let csp = header_of(&res, header::CONTENT_SECURITY_POLICY);
        assert!(csp.is_some_and(|c| c.contains("script-src 'self'")));
    }

    #[tokio::test]
    async fn assets_are_cached_with_their_types() {
        let js = script().await;
        assert_eq!(
            header_of(&js, header::CONTENT_TYPE),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(
            header_of(&js, header::CACHE_CONTROL),
            Some("public, max-age=300")
        );
        let css = style().await;
        assert_eq!(
            header_of(&css, header::CONTENT_TYPE),
            Some("text/css; charset=utf-8")
        );
        assert!(header_of(&css, header::CONTENT_SECURITY_POLICY).is_none());
    }

    #[test]
    fn shell_links_only_same_origin_assets_and_nothing_inline() {
        assert!(PAGE_HTML.contains("src=\"/docs/docs.js\""));
        assert!(PAGE_HTML.contains("href=\"/docs/docs.css\""));
        assert!(!PAGE_HTML.contains("<style"));
        assert!(!PAGE_HTML.contains("<script>"));
        assert!(!SCRIPT_JS.contains("innerHTML"));
        assert!(!SCRIPT_JS.contains("http://") && !SCRIPT_JS.contains("https://"));
    }
}
