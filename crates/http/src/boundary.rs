//! The request boundary: the one middleware every request passes through.
//!
//! It assigns the request id, enforces the request timeout, turns panics into a plain
//! 500, renders every [`ApiError`] in the one error shape with the request id, adds the
//! security headers, and writes exactly one log line per request.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use crate::error::{ApiError, PendingError, render};
use crate::redact;
use crate::state::AppState;

/// The request id of the current request, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Accepts a client's request id when it is short and plain; otherwise makes one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

fn security_headers(res: &mut Response, hsts: bool) {
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic")
}

/// The GraphQL operation a request ran (its name, or its kind when it has none), for the
/// request log.
#[derive(Debug, Clone)]
pub struct LoggedOperation(pub String);

/// The boundary middleware; install it outermost.
pub async fn boundary(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    // Clones of shared buffers, not copies.
    let uri = req.uri().clone();
    let path = uri.path();
    let query = uri.query().map(redact::query);
    let route = req.extensions().get::<MatchedPath>().cloned();
    let debug_headers =
        tracing::enabled!(tracing::Level::DEBUG).then(|| redact::headers(req.headers()));
    let timeout = state.settings.server.request_timeout;

    let (outcome, db_calls) = ferrobase_store::calls::counted(
        AssertUnwindSafe(tokio::time::timeout(timeout, next.run(req))).catch_unwind(),
    )
    .await;
    let mut res = match outcome {
        Ok(Ok(res)) => res,
        Ok(Err(_elapsed)) => ApiError::unavailable(format!(
            "the request took longer than {}s and was abandoned",
            timeout.as_secs_f64()
        ))
        .into_response(),
        Err(payload) => {
            ApiError::internal(format!("handler panicked: {}", panic_message(&*payload)))
                .into_response()
        }
    };
    if let Some(PendingError(error)) = res.extensions_mut().remove::<PendingError>() {
        let status = error.status;
        let keep = [
            &header::ALLOW,
            &header::WWW_AUTHENTICATE,
            &header::RETRY_AFTER,
        ];
        let kept: Vec<_> = keep
            .into_iter()
            .chain(crate::ratelimit::HEADERS)
            .filter_map(|h| res.headers().get(h).map(|v| (h.clone(), v.clone())))
            .collect();
        res = Response::new(Body::from(render(&error, &id)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in kept {
            res.headers_mut().insert(name, value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    security_headers(&mut res, state.settings.server.hsts);

    let status = res.status();
    if state.settings.metrics.enabled {
        state.metrics.request(
            &method,
            route.as_ref().map(MatchedPath::as_str),
            status.as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    let user_id = res
        .extensions()
        .get::<crate::identity::LoggedUser>()
        .map(|u| u.0.clone());
    let operation = res
        .extensions()
        .get::<LoggedOperation>()
        .map(|o| o.0.clone());
    let latency_ms = started.elapsed().as_micros() as f64 / 1000.0;
    let route = route.as_ref().map_or("-", MatchedPath::as_str);
    let query = query.as_deref().unwrap_or("");
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: "ferrobase::request",
                request_id = %id,
                method = %method,
                path = %path,
                query = %query,
                route = %route,
                status = status.as_u16(),
                latency_ms = latency_ms,
                user_id = user_id.as_deref(),
                operation = operation.as_deref(),
                db_calls = db_calls,
                headers = debug_headers.as_deref(),
                "request"
            )
        };
    }
    if status.is_server_error() {
        line!(error);
    } else {
        line!(info);
    }
    res
}

/// 404 for every path no route matches.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// 405 for a known path with a method it does not support (404 when the path names a
/// resource that does not exist: existence comes first).
pub async fn method_not_allowed(State(state): State<AppState>, req: Request) -> ApiError {
    let path = req.uri().path();
    if let Some(name) = path
        .strip_prefix("/api/v1/")
        .and_then(|rest| rest.split('/').next())
        && state.schema.resource(name).is_none()
        && !["auth", "batch", "openapi.json", "jobs", "admin"].contains(&name)
    {
        return ApiError::not_found(format!("unknown resource '{name}'"));
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::to_bytes;
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use ferrobase_schema::{Settings, SourceFile, schema_from_str, templates};
    use ferrobase_store::Store;
    use tower::ServiceExt;

    use super::*;

    fn state(dir: &std::path::Path) -> AppState {
        let settings = Settings::load(
            &SourceFile::new("ferrobase.toml", "[server]\nrequest_timeout = \"2s\"\n"),
            &BTreeMap::new(),
        )
        .expect("settings");
        let schema =
            Arc::new(schema_from_str("schema.toml", templates::BLOG_SCHEMA).expect("schema"));
        let store = Store::open(dir, &settings, schema.clone()).expect("store");
        AppState::new(schema, Arc::new(settings), store, None)
    }

    async fn call(app: Router, path: &str) -> (StatusCode, serde_json::Value, String) {
        let req = Request::builder()
            .uri(path)
            .header("x-request-id", "t-1")
            .body(Body::empty())
            .expect("request");
        let res = app.oneshot(req).await.expect("infallible");
        let status = res.status();
        let header = res.headers()["x-request-id"]
            .to_str()
            .expect("id")
            .to_owned();
        let bytes = to_bytes(res.into_body(), 1 << 20).await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).expect("json body"),
            header,
        )
    }

    #[tokio::test]
    async fn panics_become_a_plain_500_in_the_error_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(dir.path());
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("secret internal detail: table users");
                    }
                    "unreachable"
                }),
            )
            .layer(from_fn_with_state(state.clone(), boundary))
            .with_state(state);
        let (status, body, id) = call(app, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "INTERNAL");
        assert_eq!(body["error"]["message"], "an internal error occurred");
        assert_eq!(body["error"]["requestId"], "t-1");
        assert_eq!(id, "t-1");
        assert!(!body.to_string().contains("secret"), "no internals: {body}");
    }

    #[tokio::test]
    async fn ready_turns_503_when_shutdown_begins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(dir.path());
        let app = crate::router(state.clone());
        let (status, body, _) = call(app.clone(), "/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        state.begin_shutdown();
        let (status, body, _) = call(app.clone(), "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "UNAVAILABLE");
        let (status, _, _) = call(app, "/health").await;
        assert_eq!(status, StatusCode::OK, "still alive while draining");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_time_out_with_503() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(dir.path());
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            )
            .layer(from_fn_with_state(state.clone(), boundary))
            .with_state(state);
        // Time is paused: the runtime jumps to the 2 s deadline without waiting.
        let (status, body, _) = call(app, "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "UNAVAILABLE");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("msg")
                .contains("longer than 2s")
        );
    }
}
