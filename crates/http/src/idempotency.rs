//! `Idempotency-Key` on POST (SPEC §7): a retried request with the same key gets the
//! first request's answer instead of writing twice.
//!
//! Keys are scoped to the caller (user id, or client address for anonymous callers) and
//! kept in the database for 24 hours, so every node sees them. The first request claims
//! the key; a second one while it runs gets `409 CONFLICT`, a different request with the
//! same key `422 IDEMPOTENCY_KEY_REUSED`, and the same request after it finished the
//! stored response with `Idempotent-Replayed: true`. Only successful responses are kept:
//! a request that failed wrote nothing, so its key is released for a retry.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferrobase_auth::secrets::fingerprint;
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{Claim, IdempotencyClaim, StoredResponse};

use crate::error::ApiError;
use crate::state::AppState;

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a key is remembered.
const KEEP: time::Duration = time::Duration::hours(24);

/// Headers of a response worth replaying.
const REPLAYED_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// Largest response body kept for replay.
const MAX_STORED_BODY: usize = 4 << 20;

/// The stored status of a request that succeeded with a response too large to keep.
const TOO_LARGE: u16 = 0;

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
        "this Idempotency-Key was used for a different request; use a new key for a new request",
    )
}

/// Middleware for POST routes that honour `Idempotency-Key`.
pub(crate) async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(&IDEMPOTENCY_KEY) else {
        return next.run(req).await;
    };
    let key = match raw.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return ApiError::bad_request(
                "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)",
            )
            .into_response();
        }
    };
    // The quota's owner is the idempotency scope too: an API key's keys are its own.
    let scope = crate::ratelimit::client(&state, &req);
    let (parts, body) = req.into_parts();
    let limit = state.settings.server.body_limit;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than {limit} bytes"),
        )
        .into_response();
    };
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], HeaderValue::as_bytes);
    let request_hash = fingerprint(&[
        parts.method.as_str().as_bytes(),
        target.as_bytes(),
        content_type,
        &bytes,
    ]);
    let stored_key = fingerprint(&[scope.as_bytes(), key.as_bytes()]);
    let now = state.clock.now();
    let abandon_after = time::Duration::try_from(state.settings.server.request_timeout * 2)
        .unwrap_or(time::Duration::minutes(1));
    let claim = IdempotencyClaim {
        key: stored_key.clone(),
        request_hash,
        now: format_datetime(now),
        expired_before: format_datetime(now - KEEP),
        abandoned_before: format_datetime(now - abandon_after),
    };
    match state.store.idempotency().claim_idempotency(claim).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Claim::InFlight) => ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )
        .into_response(),
        Ok(Claim::Mismatch) => reused().into_response(),
        Ok(Claim::Done(stored)) => replay(stored),
        Ok(Claim::Fresh) => {
            let req = Request::from_parts(parts, Body::from(bytes));
            let res = next.run(req).await;
            remember(&state, stored_key, res).await
        }
    }
}

/// Keeps a successful response for replay and passes it on; releases the key otherwise.
async fn remember(state: &AppState, key: String, res: Response) -> Response {
    if !res.status().is_success() {
        if let Err(e) = state.store.idempotency().release_idempotency(key).await {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        return res;
    }
    let (parts, body) = res.into_parts();
    // Our handlers build their bodies in memory: reading them back cannot run away.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // The write happened; keep the key claimed (a retry must not write again).
            tracing::error!(error = %e, "reading a response to remember it");
            return ApiError::internal(format!("reading a response to remember it: {e}"))
                .into_response();
        }
    };
    if bytes.len() > MAX_STORED_BODY {
        // Too large to keep: remember that the request succeeded, so a retry is told so
        // instead of writing a second time.
        let marker = StoredResponse {
            status: TOO_LARGE,
            headers: "[]".into(),
            body: Vec::new(),
        };
        if let Err(e) = state
            .store
            .idempotency()
            .complete_idempotency(key, marker)
            .await
        {
            tracing::warn!(error = %e, "could not store an idempotent response");
        }
        return Response::from_parts(parts, Body::from(bytes));
    }
    let headers: Vec<(&str, &str)> = REPLAYED_HEADERS
        .iter()
        .filter_map(|h| Some((h.as_str(), parts.headers.get(h)?.to_str().ok()?)))
        .collect();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers: serde_json::to_string(&headers).unwrap_or_else(|_| "[]".into()),
        body: bytes.to_vec(),
    };
    if let Err(e) = state
        .store
        .idempotency()
        .complete_idempotency(key, stored)
        .await
    {
        // The write happened; the client has its answer. A retry would now run again,
        // which is what happens without a key: log it rather than fail the request.
        tracing::warn!(error = %e, "could not store an idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(stored: StoredResponse) -> Response {
    if stored.status == TOO_LARGE {
        return ApiError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            "the request with this Idempotency-Key succeeded, but its response was too large to keep; read the result instead of retrying",
        )
        .into_response();
    }
    let mut res = Response::new(Body::from(Bytes::from(stored.body)));
    *res.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers: Vec<(String, String)> = serde_json::from_str(&stored.headers).unwrap_or_default();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            res.headers_mut().insert(name, value);
        }
    }
    res.headers_mut()
        .insert(REPLAYED.clone(), HeaderValue::from_static("true"));
    res
}
