//! `GET /api/v1/{resource}/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Data, RecordJson, authorize, json_response, not_found, record_id, resource};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::state::AppState;

/// Reads one record.
pub(crate) async fn get(
    State(state): State<AppState>,
    Segments(path): Segments,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.view.as_ref())?;
    let id = record_id(resource, &path[1])?;
    let record = state
        .store
        .get(res, id)
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
