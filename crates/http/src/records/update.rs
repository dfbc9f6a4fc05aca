//! `PATCH /api/v1/{resource}/{id}`: JSON merge patch (RFC 7386).

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use ferrobase_schema::input::for_patch;
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::Update;

use super::etag::if_match;
use super::{authorize, not_found, record_id, record_response, resource};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::state::AppState;

/// Applies a merge patch and returns the updated record; 412 when `If-Match` names a
/// version that is no longer current.
pub(crate) async fn update(
    State(state): State<AppState>,
    Segments(path): Segments,
    req: Request,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.update.as_ref())?;
    let id = record_id(resource, &path[1])?;
    let if_match = if_match(req.headers());
    let JsonObject(patch) = JsonObject::from_request(req, &state).await?;
    let changes = for_patch(resource, patch).map_err(ApiError::validation)?;
    let update = Update {
        now: format_datetime(state.clock.now()),
        changes,
        if_match,
    };
    let record = state
        .store
        .update(res, id, update)
        .await?
        .ok_or_else(|| not_found(resource))?;
    Ok(record_response(StatusCode::OK, resource, &record))
}
