//! `PATCH /api/v1/{resource}/{id}`: JSON merge patch (RFC 7386).

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ferrobase_schema::input::{Change, for_patch};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{Access, StoreError, Update};
use serde_json::{Map, Value};

use super::etag::if_match;
use super::{not_found, record_id, record_response, resource, with_user};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::identity::Identity;
use crate::policy::{Op, check_field_writes, decide, refusal, uses_auth};
use crate::state::AppState;

/// Applies a merge patch and returns the updated record: 404 when the caller cannot see
/// the record, 403 when the update rule (or a field's write rule) refuses, 412 when
/// `If-Match` names a version that is no longer current.
pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    req: Request,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    let policy = state.policy(res);
    let identity = with_user(&state, policy, identity).await?;
    let clock = state.clock.now();
    let visible = decide(policy, resource, Op::View, &identity, None, clock)?.into_condition();
    let id = record_id(resource, &path[1])?;
    let if_match = if_match(req.headers());
    let JsonObject(patch) = JsonObject::from_request(req, &state).await?;
    let admin = identity.caller().is_some_and(|c| c.role == "admin");
    let changes = for_patch(resource, patch, admin).map_err(ApiError::validation)?;
    let body: Map<String, Value> = changes
        .iter()
        .map(|(i, change)| {
            let value = match change {
                Change::Set(v) | Change::MergeJson(v) => v.clone(),
                Change::Clear => Value::Null,
            };
            (resource.fields[*i].name.clone(), value)
        })
        .collect();
    let current = state
        .store
        .get(res, id.clone(), visible.clone())
        .await?
        .ok_or_else(|| not_found(resource))?;
    check_field_writes(
        policy,
        resource,
        changes.iter().map(|(i, _)| *i),
        &current.values,
        &id,
        &identity,
        &body,
        clock,
    )?;
    let allowed =
        decide(policy, resource, Op::Update, &identity, Some(&body), clock)?.into_condition();
    let role_changed = resource.is_users()
        && changes
            .iter()
            .any(|(i, _)| resource.fields[*i].name == "role");
    let update = Update {
        now: format_datetime(clock),
        changes,
        if_match,
    };
    let record = state
        .store
        .update(res, id.clone(), update, Access { visible, allowed })
        .await
        .map_err(|e| match e {
            StoreError::Forbidden => refusal(&identity, uses_auth(policy, Op::Update)),
            other => other.into(),
        })?
        .ok_or_else(|| not_found(resource))?;
    if role_changed {
        // A new role must not wait for old sessions: they are ended, so the next
        // refresh or request by cookie re-reads the user.
        state.store.revoke_user(id, format_datetime(clock)).await?;
    }
    Ok(record_response(
        &state,
        res,
        StatusCode::OK,
        resource,
        &record,
        &identity,
    ))
}
