//! `POST /api/v1/{resource}`.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use ferrobase_schema::input::{WriteContext, for_create};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::NewRecord;

use super::{authorize, record_response, resource};
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::state::AppState;

/// Creates a record: 201 with the stored record, its `Location` and `ETag`.
///
/// The resource and the rule are checked before the body is read, so unknown resources
/// are 404 and refused callers 401 whatever they send.
pub(crate) async fn create(
    State(state): State<AppState>,
    Segments(path): Segments,
    req: Request,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.create.as_ref())?;
    let JsonObject(body) = JsonObject::from_request(req, &state).await?;
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
    let mut response = record_response(StatusCode::CREATED, resource, &record);
    let location = format!("/api/v1/{}/{}", resource.name, record.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}
