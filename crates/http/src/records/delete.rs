//! `DELETE /api/v1/{resource}/{id}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::etag::if_match;
use super::{authorize, not_found, record_id, resource};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::state::AppState;

/// Deletes one record: 204, 404 when there is none, 412 when `If-Match` is stale.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Segments(path): Segments,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.delete.as_ref())?;
    let id = record_id(resource, &path[1])?;
    if state.store.delete(res, id, if_match(&headers)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(resource))
    }
}
