//! The record API of SPEC §5: one file per operation.

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
use ferrobase_schema::{Resource, Rule, validate::normalize_uuid};
use ferrobase_store::{Record, ResourceId};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

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

/// Decides whether the caller may perform an operation.
///
/// Identities arrive with the auth layer; until then a rule admits everyone only when
/// it is `"true"`, and every other rule (or an absent one, which means admins only)
/// asks for credentials nobody can present yet.
pub(crate) fn authorize(rule: Option<&Rule>) -> Result<(), ApiError> {
    match rule {
        Some(rule) if rule.is_public() => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Whether everyone may view records of `resource` (used for expanded records).
pub(crate) fn view_allowed(resource: &Resource) -> bool {
    authorize(resource.rules.view.as_ref()).is_ok()
}

/// A record id from the path; anything that is not a UUID cannot name a record (404).
pub(crate) fn record_id(resource: &Resource, raw: &str) -> Result<String, ApiError> {
    normalize_uuid(raw).ok_or_else(|| not_found(resource))
}

/// The 404 for a record that does not exist or that the caller may not see.
pub(crate) fn not_found(resource: &Resource) -> ApiError {
    ApiError::not_found(format!("no such record in {}", resource.name))
}

/// A JSON response with the given status.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut res = (status, bytes).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => ApiError::internal(format!("serializing a response: {e}")).into_response(),
    }
}

/// `{"data": record}` with the record's `ETag`.
pub(crate) fn record_response(
    status: StatusCode,
    resource: &Resource,
    record: &Record,
) -> Response {
    let mut res = json_response(
        status,
        &Data {
            data: RecordJson::new(resource, record),
        },
    );
    res.headers_mut()
        .insert(header::ETAG, etag::etag(record.version));
    res
}

/// `{"data": ...}`.
#[derive(Serialize)]
pub(crate) struct Data<T> {
    pub data: T,
}
