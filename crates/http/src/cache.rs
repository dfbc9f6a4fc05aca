//! HTTP caching of reads: `Cache-Control`, list ETags with `If-None-Match`, and the
//! optional server-side cache of public reads.
//!
//! A read is *public* when the caller is anonymous: its answer then depends on the URL
//! alone, so shared caches may keep it (`public`, with the configured `max-age`;
//! `Vary` keeps it apart from signed-in callers). Anything read with credentials is
//! `private, no-cache`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferrobase_cluster::cache::CachedResponse;

use crate::error::ApiError;
use crate::identity::Identity;
use crate::state::AppState;

/// Largest answer the server-side cache keeps; larger ones are served uncached.
const MAX_CACHED_BODY: usize = 256 << 10;

/// `Cache-Control` of authenticated reads.
pub(crate) const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-cache");

/// The `Cache-Control` of `public, max-age` reads, from the settings.
pub(crate) fn public_cache_control(max_age: std::time::Duration) -> HeaderValue {
    match max_age.as_secs() {
        0 => HeaderValue::from_static("public, no-cache"),
        secs => HeaderValue::from_str(&format!("public, max-age={secs}"))
            .unwrap_or(HeaderValue::from_static("public, no-cache")),
    }
}

/// Adds `Cache-Control` (and `Vary`) for a read of `res` by this caller.
pub(crate) fn mark(
    state: &AppState,
    res: ferrobase_store::ResourceId,
    identity: &Identity,
    headers: &mut HeaderMap,
) {
    let value = match (identity.caller(), state.public_cache_control.get(res.0)) {
        (None, Some(public)) => public.clone(),
        _ => PRIVATE,
    };
    headers.insert(header::CACHE_CONTROL, value);
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
}

/// A weak ETag for a list answer: a hash of its bytes (the same page of the same data
/// always hashes the same, on every node).
///
/// XXH3-128, seeded from the server's secret (every node has the same): a list's
/// ETag is computed on every list request, and SHA-256 over the page took a fourteenth
/// of a list's CPU. A validator needs no more than a collision-free hash in practice;
/// the secret seed keeps anyone from searching offline for two pages that collide.
pub(crate) fn list_etag(seed: u64, body: &[u8]) -> HeaderValue {
    let hash = xxhash_rust::xxh3::xxh3_128_with_seed(body, seed);
    HeaderValue::from_str(&format!("W/\"{hash:032x}\""))
        .unwrap_or(HeaderValue::from_static("W/\"0\""))
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2).
pub(crate) fn matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(sent) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = opaque(etag);
    sent.trim() == "*" || sent.split(',').any(|t| opaque(t) == etag)
}

/// `304 Not Modified` with the validator and caching headers of the full answer.
pub(crate) fn not_modified(etag: HeaderValue, cache_control: Option<HeaderValue>) -> Response {
    let mut res = StatusCode::NOT_MODIFIED.into_response();
    res.headers_mut().insert(header::ETAG, etag);
    if let Some(cc) = cache_control {
        res.headers_mut().insert(header::CACHE_CONTROL, cc);
    }
    res.headers_mut().insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    res
}

/// Middleware on record reads: answers anonymous GETs from the server-side cache, and
/// fills it with public answers.
pub(crate) async fn read_cache(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cache) = state.read_cache.as_ref() else {
        return next.run(req).await;
    };
    let anonymous = req
        .extensions()
        .get::<Identity>()
        .is_some_and(|i| i.caller().is_none());
    if req.method() != Method::GET || !anonymous {
        return next.run(req).await;
    }
    let key = ferrobase_auth::secrets::fingerprint(&[req
        .uri()
        .path_and_query()
        .map_or("", |p| p.as_str())
        .as_bytes()]);
    let Some((generation, hit)) = cache.get(&key).await else {
        return next.run(req).await;
    };
    if let Some(hit) = hit {
        state.metrics.cache_hit(true);
        return from_cache(req.headers(), &hit);
    }
    state.metrics.cache_hit(false);
    let res = next.run(req).await;
    let public = res
        .headers()
        .get(header::CACHE_CONTROL)
        .is_some_and(|v| v.as_bytes().starts_with(b"public"));
    if res.status() != StatusCode::OK || !public {
        return res;
    }
    let (parts, body) = res.into_parts();
    // The handlers build their bodies in memory: reading them back cannot run away.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return ApiError::internal(format!("reading a read back: {e}")).into_response(),
    };
    if bytes.len() > MAX_CACHED_BODY {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if let Ok(text) = std::str::from_utf8(&bytes) {
        let entry = CachedResponse {
            etag: header_text(header::ETAG),
            cache_control: header_text(header::CACHE_CONTROL),
            body: text.to_owned(),
        };
        cache.put(generation, &key, entry).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn from_cache(headers: &HeaderMap, hit: &CachedResponse) -> Response {
    let etag = HeaderValue::from_str(&hit.etag).ok();
    let cache_control = HeaderValue::from_str(&hit.cache_control).ok();
    if let Some(etag) = &etag
        && matches(headers, etag)
    {
        return not_modified(etag.clone(), cache_control);
    }
    let mut res = Response::new(Body::from(hit.body.clone()));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    if let Some(cc) = cache_control {
        h.insert(header::CACHE_CONTROL, cc);
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    h.insert("x-cache", HeaderValue::from_static("hit"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly() {
        let etag = list_etag(7, b"[1,2,3]");
        assert!(etag.to_str().expect("ascii").starts_with("W/\""));
        assert_eq!(etag.len(), 36, "W/ and 32 hex digits in quotes");
        assert_eq!(etag, list_etag(7, b"[1,2,3]"), "stable");
        assert_ne!(etag, list_etag(7, b"[1,2,4]"));
        assert_ne!(etag, list_etag(8, b"[1,2,3]"), "the seed changes it");
        let mut h = HeaderMap::new();
        assert!(!matches(&h, &etag));
        h.insert(header::IF_NONE_MATCH, etag.clone());
        assert!(matches(&h, &etag));
        let strong = etag
            .to_str()
            .expect("ascii")
            .trim_start_matches("W/")
            .to_owned();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", {strong}")).expect("value"),
        );
        assert!(matches(&h, &etag), "weak comparison ignores W/");
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!matches(&h, &etag));
    }

    #[test]
    fn public_max_age_renders() {
        assert_eq!(
            public_cache_control(std::time::Duration::ZERO),
            "public, no-cache"
        );
        assert_eq!(
            public_cache_control(std::time::Duration::from_secs(60)),
            "public, max-age=60"
        );
    }
}
