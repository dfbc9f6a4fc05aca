//! The record API of SPEC §5: one file per operation.

pub(crate) mod batch;
pub(crate) mod create;
pub(crate) mod delete;
mod etag;
mod expand;
pub(crate) mod get;
mod json;
pub(crate) mod list;
mod params;
pub(crate) mod update;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrobase_schema::{Resource, validate::normalize_uuid};
use ferrobase_store::{Record, ResourceId, Targets};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::identity::{Identity, load_user};
use crate::state::AppState;
use ferrobase_access::{Action, Decision, Policy, decide, readable};

pub(crate) use json::RecordJson;

/// Looks a resource up by its URL name: unknown names are 404.
pub(crate) fn resource<'s>(
    state: &'s AppState,
    name: &str,
) -> Result<(ResourceId, &'s Resource), ApiError> {
    state
        .schema
        .resources
        .iter()
        .enumerate()
        .find(|(_, r)| r.name == name)
        .map(|(i, r)| (ResourceId(i), r))
        .ok_or_else(|| ApiError::not_found(format!("unknown resource '{name}'")))
}

/// The identity with the caller's user record loaded, when the resource's rules need
/// more of it than the token carries.
pub(crate) async fn with_user(
    state: &AppState,
    policy: &Policy,
    identity: Identity,
) -> Result<Identity, ApiError> {
    match identity.0 {
        // Any resource's rules count: expanded and related records are judged too.
        Some(mut caller)
            if caller.user.is_none() && (policy.needs_user_record() || state.rules_need_user) =>
        {
            caller.user = load_user(state, &caller.id).await?;
            Ok(Identity(Some(caller)))
        }
        other => Ok(Identity(other)),
    }
}

/// Which records the relation fields `fields` may point at for this caller: records of
/// the target resource that its view rule lets the caller see (see
/// [`ferrobase_store::Targets`]), so a relation neither probes for ids nor pins a record
/// the caller cannot see.
pub(crate) fn relation_targets(
    state: &AppState,
    resource: &Resource,
    identity: &Identity,
    fields: impl Iterator<Item = usize>,
    now: time::OffsetDateTime,
) -> Targets {
    let mut targets = Targets {
        scoped: Vec::new(),
        own_user: identity.caller().map(|c| c.id.clone()),
    };
    for i in fields {
        let Some(rel) = resource.fields[i].relation() else {
            continue;
        };
        let condition = match self::resource(state, &rel.resource) {
            Ok((id, target)) => {
                match decide(state.policy(id), target, Action::View, identity, None, now) {
                    Ok(Decision::All) => continue,
                    Ok(Decision::Where(e)) => e,
                    Ok(Decision::None) | Err(_) => sea_query::Expr::cust("FALSE"),
                }
            }
            Err(_) => sea_query::Expr::cust("FALSE"),
        };
        targets.scoped.push((i, condition));
    }
    targets
}

/// A record id from the path; anything that is not a UUID cannot name a record (404).
pub(crate) fn record_id(resource: &Resource, raw: &str) -> Result<String, ApiError> {
    normalize_uuid(raw).ok_or_else(|| not_found(resource))
}

/// The 404 for a record that does not exist or that the caller may not see.
pub(crate) fn not_found(resource: &Resource) -> ApiError {
    ApiError::not_found(format!("no such record in {}", resource.name))
}

/// Refuses, before a body is read, a caller whom `op` refuses whatever the body says
/// (no caller for a rule that needs one, an API key's scope, admins only); refusals that
/// depend on the body come after it is read.
pub(crate) fn refuse_early(
    state: &AppState,
    res: ResourceId,
    resource: &Resource,
    identity: &Identity,
    op: ferrobase_access::Action,
) -> Result<(), ApiError> {
    ferrobase_access::decide(
        state.policy(res),
        resource,
        op,
        identity,
        None,
        state.clock.now(),
    )
    .map(drop)
    .map_err(ApiError::from)
}

/// A write's failure as the caller sees it: a rule's refusal is 401 or 403 depending on
/// whether the rule needed a caller; a record that is not there (for the caller) is 404.
pub(crate) fn write_failure(
    state: &AppState,
    res: ResourceId,
    identity: &Identity,
    op: ferrobase_access::Action,
    error: ferrobase_store::StoreError,
) -> ApiError {
    use ferrobase_store::StoreError;
    match error {
        StoreError::Forbidden => {
            ferrobase_access::refusal(identity, ferrobase_access::uses_auth(state.policy(res), op))
                .into()
        }
        StoreError::NotFound => not_found(&state.schema.resources[res.0]),
        other => other.into(),
    }
}

/// Indexes of the fields a body names (the fields a write touches).
pub(crate) fn fields_in(resource: &Resource, body: &Map<String, Value>) -> Vec<usize> {
    resource
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| body.contains_key(&f.name))
        .map(|(i, _)| i)
        .collect()
}

/// The record's values as a body map (`@body` of create rules).
pub(crate) fn values_map(resource: &Resource, values: &[Value]) -> Map<String, Value> {
    resource
        .fields
        .iter()
        .zip(values)
        .map(|(f, v)| (f.name.clone(), v.clone()))
        .collect()
}

/// A JSON response with the given status.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => ApiError::internal(format!("serializing a response: {e}")).into_response(),
    }
}

/// A response of already serialized JSON.
pub(crate) fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut res = (status, bytes).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `{"data": record}` with the record's `ETag`, showing the fields the caller may read.
pub(crate) fn record_response(
    state: &AppState,
    res: ResourceId,
    status: StatusCode,
    resource: &Resource,
    record: &Record,
    identity: &Identity,
) -> Response {
    let mask = readable(
        state.policy(res),
        resource,
        record,
        identity,
        state.clock.now(),
    );
    let json = RecordJson {
        readable: Some(&mask),
        ..RecordJson::new(resource, record)
    };
    let mut response = json_response(status, &Data { data: json });
    response
        .headers_mut()
        .insert(header::ETAG, etag::etag(record.version));
    response
}

/// `{"data": ...}`.
#[derive(Serialize)]
pub(crate) struct Data<T> {
    pub data: T,
}
