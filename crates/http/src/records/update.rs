//! `PATCH /api/v1/{resource}/{id}`: JSON merge patch (RFC 7386).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ferrobase_schema::Resource;
use ferrobase_schema::input::{Change, for_patch};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{Access, ResourceId, StoreError, Update};
use serde_json::{Map, Value};

use super::etag::if_match;
use super::{
    not_found, record_id, record_response, refuse_early, resource, with_user, write_failure,
};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::identity::Identity;
use crate::state::AppState;
use ferrobase_access::{Action, check_field_writes, decide};

/// A validated update, ready for the store.
pub(crate) struct UpdatePlan {
    /// The changes, with the field write rules as a guard judged inside the transaction.
    pub update: Update,
    /// The view and update rules.
    pub access: Access,
}

/// Everything an update decides before the store runs it: the caller may see records
/// (`visible`), the patch is valid, the update rule is compiled with the body. Field
/// write rules are judged on the record as it stands inside the write transaction.
pub(crate) fn plan_update(
    state: &AppState,
    res: ResourceId,
    resource: &Resource,
    identity: &Identity,
    patch: Map<String, Value>,
    if_match: Option<Vec<i64>>,
) -> Result<UpdatePlan, ApiError> {
    let policy = state.policy(res);
    let clock = state.clock.now();
    let visible = decide(policy, resource, Action::View, identity, None, clock)?.into_condition();
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
    // A caller the update rule refuses outright (scope, admins only) learns it only about
    // records they can see: the refusal waits in the guard, after the visibility check.
    let (allowed, refusal) = match decide(
        policy,
        resource,
        Action::Update,
        identity,
        Some(&body),
        clock,
    ) {
        Ok(access) => (access.into_condition(), None),
        Err(e) => (None, Some(e)),
    };
    let written: Vec<usize> = changes.iter().map(|(i, _)| *i).collect();
    let targets =
        super::relation_targets(state, resource, identity, written.iter().copied(), clock);
    let guard = {
        let (state, identity) = (state.clone(), identity.clone());
        move |current: &ferrobase_store::Record| {
            if let Some(refusal) = &refusal {
                return Err(StoreError::Rejected(Arc::new(refusal.clone())));
            }
            let resource = &state.schema.resources[res.0];
            check_field_writes(
                state.policy(res),
                resource,
                written.iter().copied(),
                &current.values,
                &current.id,
                &identity,
                &body,
                clock,
            )
            .map_err(|e| StoreError::Rejected(Arc::new(e)))
        }
    };
    Ok(UpdatePlan {
        update: Update {
            now: format_datetime(clock),
            changes,
            if_match,
            guard: Some(Arc::new(guard)),
            targets,
            actor: identity.caller().map(|c| c.id.clone()),
        },
        access: Access { visible, allowed },
    })
}

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
    let identity = with_user(&state, state.policy(res), identity).await?;
    // Callers who may see nothing are refused before the body is read.
    refuse_early(&state, res, resource, &identity, Action::View)?;
    let id = record_id(resource, &path[1])?;
    let if_match = if_match(req.headers());
    let JsonObject(patch) = JsonObject::from_request(req, &state).await?;
    let plan = plan_update(&state, res, resource, &identity, patch, if_match)?;
    let record = state
        .store
        .update(res, id.clone(), plan.update, plan.access)
        .await
        .map_err(|e| write_failure(&state, res, &identity, Action::Update, e))?
        .ok_or_else(|| not_found(resource))?;
    Ok(record_response(
        &state,
        res,
        StatusCode::OK,
        resource,
        &record,
        &identity,
    ))
}
