//! Operational endpoints outside `/api/v1`: liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::error::ApiError;
use crate::records::json_response;
use crate::state::AppState;

/// `GET /health`: the process is alive and serving.
pub(crate) async fn health() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /ready`: the database answers and shutdown has not begun.
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.is_shutting_down() {
        return Err(ApiError::unavailable("shutting down"));
    }
    if let Err(e) = state.store.maintenance().ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return Err(ApiError::unavailable("the database is unavailable"));
    }
    let mut checks = json!({ "database": "ok" });
    if let Some(redis) = &state.redis {
        if let Err(e) = redis.ping().await {
            tracing::warn!(error = %e, "readiness check failed");
            return Err(ApiError::unavailable("Redis is unavailable"));
        }
        checks["redis"] = json!("ok");
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "status": "ready", "checks": checks }),
    ))
}

/// `GET /api/v1/openapi.json`: the document, generated from the schema at start-up.
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    let mut res = Response::new(axum::body::Body::from(state.openapi.clone()));
    res.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    res
}
