//! `POST /api/v1/{resource}`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use ferrobase_schema::input::{WriteContext, for_create};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::NewRecord;

use super::{Data, RecordJson, authorize, json_response, resource};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::state::AppState;

/// Creates a record: 201 with the stored record and its `Location`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Segments(path): Segments,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.create.as_ref())?;
    let now = format_datetime(state.clock.now());
    let ctx = WriteContext {
        auth_id: None,
        now: &now,
    };
    let values = for_create(resource, body, &ctx).map_err(ApiError::validation)?;
    let id = uuid::Uuid::now_v7().to_string();
    let record = state
        .store
        .insert(res, NewRecord { id, now, values })
        .await?;
    let mut response = json_response(
        StatusCode::CREATED,
        &Data {
            data: RecordJson {
                resource,
                record: &record,
            },
        },
    );
    let location = format!("/api/v1/{}/{}", resource.name, record.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}
