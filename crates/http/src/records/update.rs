//! `PATCH /api/v1/{resource}/{id}`: JSON merge patch (RFC 7386).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ferrobase_schema::input::for_patch;
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::Update;

use super::{Data, RecordJson, authorize, json_response, not_found, record_id, resource};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::state::AppState;

/// Applies a merge patch and returns the updated record.
pub(crate) async fn update(
    State(state): State<AppState>,
    Segments(path): Segments,
    JsonObject(patch): JsonObject,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.update.as_ref())?;
    let id = record_id(resource, &path[1])?;
    let changes = for_patch(resource, patch).map_err(ApiError::validation)?;
    let update = Update {
        now: format_datetime(state.clock.now()),
        changes,
        expected_version: None,
    };
    let record = state
        .store
        .update(res, id, update)
        .await?
        .ok_or_else(|| not_found(resource))?;
    Ok(json_response(
        StatusCode::OK,
        &Data {
            data: RecordJson {
                resource,
                record: &record,
            },
        },
    ))
}
