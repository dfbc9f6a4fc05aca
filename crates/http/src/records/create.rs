//! `POST /api/v1/{resource}`.

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use ferrobase_schema::Resource;
use ferrobase_schema::input::{WriteContext, for_create};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{NewRecord, ResourceId};
use sea_query::Expr;
use serde_json::{Map, Value};

use super::{record_response, refuse_early, resource, values_map, with_user, write_failure};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::identity::Identity;
use crate::state::AppState;
use ferrobase_access::{Action, Decision, check_field_writes, decide, refusal, uses_auth};

/// A validated new record and the create rule it must satisfy once stored.
pub(crate) struct CreatePlan {
    /// The record.
    pub record: NewRecord,
    /// The create rule as SQL over the stored record.
    pub allowed: Option<Expr>,
}

/// Validates a body into a new record: defaults, field write rules, and the create rule
/// compiled with the body.
pub(crate) fn plan_create(
    state: &AppState,
    res: ResourceId,
    resource: &Resource,
    identity: &Identity,
    body: Map<String, Value>,
) -> Result<CreatePlan, ApiError> {
    let policy = state.policy(res);
    let clock = state.clock.now();
    let now = format_datetime(clock);
    let ctx = WriteContext {
        auth_id: identity.caller().map(|c| c.id.as_str()),
        now: &now,
    };
    let written = crate::records::fields_in(resource, &body);
    let values = for_create(resource, body, &ctx).map_err(ApiError::validation)?;
    let record_body = values_map(resource, &values);
    let id = uuid::Uuid::now_v7().to_string();
    check_field_writes(
        policy,
        resource,
        written.into_iter(),
        &values,
        &id,
        identity,
        &record_body,
        clock,
    )?;
    let allowed = match decide(
        policy,
        resource,
        Action::Create,
        identity,
        Some(&record_body),
        clock,
    )? {
        Decision::None => return Err(refusal(identity, uses_auth(policy, Action::Create)).into()),
        other => other.into_condition(),
    };
    let targets = super::relation_targets(state, resource, identity, 0..values.len(), clock);
    Ok(CreatePlan {
        record: NewRecord {
            id,
            now,
            values,
            targets,
            actor: identity.caller().map(|c| c.id.clone()),
        },
        allowed,
    })
}

/// Creates a record: 201 with the stored record, its `Location` and `ETag`; 403 when the
/// create rule refuses the record (401 when it needs a caller and there is none).
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    req: Request,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    let identity = with_user(&state, state.policy(res), identity).await?;
    refuse_early(&state, res, resource, &identity, Action::Create)?;
    let JsonObject(body) = JsonObject::from_request(req, &state).await?;
    let plan = plan_create(&state, res, resource, &identity, body)?;
    let record = state
        .store
        .insert(res, plan.record, plan.allowed)
        .await
        .map_err(|e| write_failure(&state, res, &identity, Action::Create, e))?;
    let mut response = record_response(
        &state,
        res,
        StatusCode::CREATED,
        resource,
        &record,
        &identity,
    );
    if let Ok(v) = HeaderValue::from_str(&location(resource, &record.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The URL of a record.
pub(crate) fn location(resource: &Resource, id: &str) -> String {
    format!("/api/v1/{}/{}", resource.name, id)
}
