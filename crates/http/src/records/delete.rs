//! `DELETE /api/v1/{resource}/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::etag::if_match;
use crate::error::ApiError;
use crate::extract::Segments;
use crate::identity::Identity;
use crate::state::AppState;

/// Deletes one record: 204; 404 when the caller cannot see it; 403 when the delete rule
/// refuses; 412 when `If-Match` is stale.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let records = &state.records;
    let (res, _) = records.resource(&path[0])?;
    let identity = records.with_user(identity).await?;
    records
        .delete(&identity, res, &path[1], if_match(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
