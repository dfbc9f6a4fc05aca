//! `POST /api/v1/{resource}`.

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use ferrobase_access::Action;
use ferrobase_schema::Resource;

use super::record_response;
use crate::error::ApiError;
use crate::extract::{JsonObject, Segments};
use crate::identity::Identity;
use crate::state::AppState;

/// Creates a record: 201 with the stored record, its `Location` and `ETag`; 403 when the
/// create rule refuses the record (401 when it needs a caller and there is none).
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    req: Request,
) -> Result<Response, ApiError> {
    let records = &state.records;
    let (res, resource) = records.resource(&path[0])?;
    let identity = records.with_user(identity).await?;
    // Callers no body could admit are refused before the body is read.
    records.refuse_early(res, &identity, Action::Create)?;
    let JsonObject(body) = JsonObject::from_request(req, &state).await?;
    let record = records.create(&identity, res, body).await?;
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
