//! `POST /api/v1/{resource}`.

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use ferrobase_schema::input::{WriteContext, for_create};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{NewRecord, StoreError};

use super::{record_response, resource, values_map, with_user};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::identity::Identity;
use crate::policy::{Access, Op, check_field_writes, decide, refusal, uses_auth};
use crate::state::AppState;

/// Creates a record: 201 with the stored record, its `Location` and `ETag`; 403 when the
/// create rule refuses the record (401 when it needs a caller and there is none).
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    req: Request,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    let policy = state.policy(res);
    let identity = with_user(&state, policy, identity).await?;
    let clock = state.clock.now();
    // Refuse before reading the body when no body could pass (no caller, wrong scope,
    // admins only); a refusal that depends on the body comes after it is read.
    decide(policy, resource, Op::Create, &identity, None, clock)?;
    let JsonObject(body) = JsonObject::from_request(req, &state).await?;
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
        &identity,
        &record_body,
        clock,
    )?;
    let allowed = match decide(
        policy,
        resource,
        Op::Create,
        &identity,
        Some(&record_body),
        clock,
    )? {
        Access::None => return Err(refusal(&identity, uses_auth(policy, Op::Create))),
        other => other.into_condition(),
    };
    let record = state
        .store
        .insert(res, NewRecord { id, now, values }, allowed)
        .await
        .map_err(|e| match e {
            StoreError::Forbidden => refusal(&identity, uses_auth(policy, Op::Create)),
            other => other.into(),
        })?;
    let mut response = record_response(
        &state,
        res,
        StatusCode::CREATED,
        resource,
        &record,
        &identity,
    );
    let location = format!("/api/v1/{}/{}", resource.name, record.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}
