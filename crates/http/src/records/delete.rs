//! `DELETE /api/v1/{resource}/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ferrobase_store::{Access, StoreError};

use super::etag::if_match;
use super::{not_found, record_id, resource, with_user};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::identity::Identity;
use crate::policy::{Op, decide, refusal, uses_auth};
use crate::state::AppState;

/// Deletes one record: 204; 404 when the caller cannot see it; 403 when the delete rule
/// refuses; 412 when `If-Match` is stale.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    let policy = state.policy(res);
    let identity = with_user(&state, policy, identity).await?;
    let now = state.clock.now();
    let visible = decide(policy, resource, Op::View, &identity, None, now)?.into_condition();
    let allowed = decide(policy, resource, Op::Delete, &identity, None, now)?.into_condition();
    let id = record_id(resource, &path[1])?;
    match state
        .store
        .delete(res, id, if_match(&headers), Access { visible, allowed })
        .await
    {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(not_found(resource)),
        Err(StoreError::Forbidden) => Err(refusal(&identity, uses_auth(policy, Op::Delete))),
        Err(e) => Err(e.into()),
    }
}
