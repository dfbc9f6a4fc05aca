//! `GET /api/v1/{resource}/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::etag::{etag, not_modified};
use super::record_response;
use crate::error::ApiError;
use crate::extract::Segments;
use crate::identity::Identity;
use crate::state::AppState;

/// Reads one record the caller may see; `304` when `If-None-Match` names its version.
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let records = &state.records;
    let (res, resource) = records.resource(&path[0])?;
    let identity = records.with_user(identity).await?;
    let record = records.get(&identity, res, &path[1]).await?;
    let mut extra = HeaderMap::new();
    crate::cache::mark(&state, res, &identity, &mut extra);
    if not_modified(&headers, record.version) {
        return Ok(crate::cache::not_modified(
            etag(record.version),
            extra.get(header::CACHE_CONTROL).cloned(),
        ));
    }
    let mut response = record_response(&state, res, StatusCode::OK, resource, &record, &identity);
    response.headers_mut().extend(extra);
    Ok(response)
}
