//! `DELETE /api/v1/{resource}/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ferrobase_schema::Resource;
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{Access, Deletion, ResourceId};

use super::etag::if_match;
use super::{not_found, record_id, resource, with_user, write_failure};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::identity::Identity;
use crate::state::AppState;
use ferrobase_access::{Action, decide};

/// A delete as judged for the caller: its view and delete rules and preconditions.
pub(crate) fn plan_delete(
    state: &AppState,
    res: ResourceId,
    resource: &Resource,
    identity: &Identity,
    if_match: Option<Vec<i64>>,
) -> Result<Deletion, ApiError> {
    let policy = state.policy(res);
    let now = state.clock.now();
    let visible = decide(policy, resource, Action::View, identity, None, now)?.into_condition();
    let allowed = decide(policy, resource, Action::Delete, identity, None, now)?.into_condition();
    Ok(Deletion {
        if_match,
        access: Access { visible, allowed },
        actor: identity.caller().map(|c| c.id.clone()),
        now: format_datetime(now),
    })
}

/// Deletes one record: 204; 404 when the caller cannot see it; 403 when the delete rule
/// refuses; 412 when `If-Match` is stale.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    let identity = with_user(&state, state.policy(res), identity).await?;
    let deletion = plan_delete(&state, res, resource, &identity, if_match(&headers))?;
    let id = record_id(resource, &path[1])?;
    match state
        .store
        .delete(res, id, deletion)
        .await
        .map_err(|e| write_failure(&state, res, &identity, Action::Delete, e))?
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(not_found(resource)),
    }
}
