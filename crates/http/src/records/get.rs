//! `GET /api/v1/{resource}/{id}`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::etag::{etag, not_modified};
use super::{not_found, record_id, record_response, resource, with_user};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::identity::Identity;
use crate::state::AppState;
use ferrobase_access::{Action, decide};

/// Reads one record the caller may see; `304` when `If-None-Match` names its version.
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    let identity = with_user(&state, state.policy(res), identity).await?;
    let access = decide(
        state.policy(res),
        resource,
        Action::View,
        &identity,
        None,
        state.clock.now(),
    )?;
    let id = record_id(resource, &path[1])?;
    let record = state
        .store
        .get(res, id, access.into_condition())
        .await?
        .ok_or_else(|| not_found(resource))?;
    let mut extra = HeaderMap::new();
    crate::cache::mark(&state, res, &identity, &mut extra);
    if not_modified(&headers, record.version) {
        return Ok(crate::cache::not_modified(
            etag(record.version),
            extra.get(header::CACHE_CONTROL).cloned(),
        ));
    }
    let mut response = record_response(&state, res, StatusCode::OK, resource, &record, &identity);
    response.headers_mut().extend(extra);
    Ok(response)
}
