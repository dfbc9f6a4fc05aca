//! `PATCH /api/v1/{resource}/{id}`: JSON merge patch (RFC 7386).

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ferrobase_access::Action;

use super::etag::if_match;
use super::record_response;
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::identity::Identity;
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
    let records = &state.records;
    let (res, resource) = records.resource(&path[0])?;
    let identity = records.with_user(identity).await?;
    // Callers who may see nothing are refused before the body is read.
    records.refuse_early(res, &identity, Action::View)?;
    records.record_id(res, &path[1])?;
    let if_match = if_match(req.headers());
    let JsonObject(patch) = JsonObject::from_request(req, &state).await?;
    let record = records
        .update(&identity, res, &path[1], patch, if_match)
        .await?;
    Ok(record_response(
        &state,
        res,
        StatusCode::OK,
        resource,
        &record,
        &identity,
    ))
}
