//! The record API of SPEC §5: one file per operation.

pub(crate) mod batch;
pub(crate) mod create;
pub(crate) mod delete;
mod etag;
pub(crate) mod get;
pub(crate) mod list;
pub(crate) mod update;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrobase_schema::Resource;
use ferrobase_store::{Record, ResourceId};
use serde::Serialize;

use crate::error::ApiError;
use crate::identity::Identity;
use crate::state::AppState;

pub(crate) use ferrobase_records::RecordJson;

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
    let mask = state.records.readable(res, record, identity);
    let json = RecordJson {
        readable: Some(&mask),
        ..RecordJson::new(resource, record)
    };
    let mut bytes = Vec::with_capacity(512);
    bytes.extend_from_slice(b"{\"data\":");
    json.write_json(&mut bytes);
    bytes.push(b'}');
    let mut response = json_bytes(status, bytes);
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
