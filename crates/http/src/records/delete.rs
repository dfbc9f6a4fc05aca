//! `DELETE /api/v1/{resource}/{id}`.

use axum::extract::State;
use axum::http::StatusCode;

use super::{authorize, not_found, record_id, resource};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::state::AppState;

/// Deletes one record: 204, or 404 when there is none.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Segments(path): Segments,
) -> Result<StatusCode, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.delete.as_ref())?;
    let id = record_id(resource, &path[1])?;
    if state.store.delete(res, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(resource))
    }
}
