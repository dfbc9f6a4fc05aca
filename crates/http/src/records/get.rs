//! `GET /api/v1/{resource}/{id}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::etag::{etag, not_modified};
use super::{authorize, not_found, record_id, record_response, resource};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::state::AppState;

/// Reads one record; `304` when `If-None-Match` names its current version.
pub(crate) async fn get(
    State(state): State<AppState>,
    Segments(path): Segments,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.view.as_ref())?;
    let id = record_id(resource, &path[1])?;
    let record = state
        .store
        .get(res, id)
        .await?
        .ok_or_else(|| not_found(resource))?;
    if not_modified(&headers, record.version) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        res.headers_mut().insert(header::ETAG, etag(record.version));
        return Ok(res);
    }
    Ok(record_response(StatusCode::OK, resource, &record))
}
