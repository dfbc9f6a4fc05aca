//! `POST /api/v1/batch`: up to 100 writes in one transaction, all or nothing.
//!
//! ```json
//! {"operations": [
//!   {"method": "POST",   "path": "posts", "body": {...}},
//!   {"method": "PATCH",  "path": "posts/ID", "body": {...}, "ifMatch": "\"3\""},
//!   {"method": "DELETE", "path": "/api/v1/posts/ID"}
//! ]}
//! ```
//!
//! Each operation is judged by its own resource's rules, exactly as the single request
//! would be. The answer lists one result per operation, in order; when one fails, nothing
//! is written and the error names the operation (`details.operation`).

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use ferrobase_records::BatchWrite;
use ferrobase_store::{BatchOutcome, Record};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{RecordJson, json_response};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::Identity;
use crate::state::AppState;
use ferrobase_access::Action;

/// Most operations one batch may carry.
pub(crate) const MAX_OPERATIONS: usize = 100;

/// Puts the operation's position into an error, so the client knows which one failed.
fn at(index: usize, mut error: ApiError) -> ApiError {
    let mut details = match error.details.take() {
        Some(Value::Object(map)) => map,
        Some(other) => Map::from_iter([("detail".to_owned(), other)]),
        None => Map::new(),
    };
    details.insert("operation".into(), Value::from(index));
    error.details = Some(Value::Object(details));
    error.message = format!("operation {index}: {}", error.message);
    error
}

fn parse(state: &AppState, index: usize, raw: Value) -> Result<BatchWrite, ApiError> {
    let bad = |m: &str| at(index, ApiError::bad_request(m.to_owned()));
    let Value::Object(mut raw) = raw else {
        return Err(bad("each operation must be an object"));
    };
    if let Some(key) = raw
        .keys()
        .find(|k| !["method", "path", "body", "ifMatch"].contains(&k.as_str()))
    {
        return Err(bad(&format!(
            "unknown key '{key}'; an operation has method, path, body and ifMatch"
        )));
    }
    let method = raw
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let op = match method {
        "POST" => Action::Create,
        "PATCH" => Action::Update,
        "DELETE" => Action::Delete,
        _ => return Err(bad("method must be POST, PATCH or DELETE")),
    };
    let path = raw
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("path must be a string such as \"posts\" or \"posts/ID\""))?;
    let path = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    let mut segments = path.split('/');
    let name = segments.next().unwrap_or_default();
    let raw_id = segments.next();
    if segments.next().is_some() {
        return Err(bad("path must be RESOURCE or RESOURCE/ID"));
    }
    let (res, _) = state
        .records
        .resource(name)
        .map_err(|e| at(index, e.into()))?;
    let id = match (op, raw_id) {
        (Action::Create, None) => None,
        (Action::Create, Some(_)) => return Err(bad("POST takes a resource path without an id")),
        (_, Some(id)) => Some(
            state
                .records
                .record_id(res, id)
                .map_err(|e| at(index, e.into()))?,
        ),
        (_, None) => return Err(bad("PATCH and DELETE need RESOURCE/ID")),
    };
    let body = match (op, raw.remove("body")) {
        (Action::Delete, Some(_)) => return Err(bad("DELETE takes no body")),
        (Action::Delete, None) => None,
        (_, Some(Value::Object(map))) => Some(map),
        (_, _) => return Err(bad("body must be a JSON object")),
    };
    let if_match = match raw.get("ifMatch") {
        None => None,
        Some(_) if op == Action::Create => return Err(bad("ifMatch applies to PATCH and DELETE")),
        Some(Value::String(tag)) => {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(tag).map_err(|_| bad("ifMatch is not an ETag"))?;
            headers.insert(header::IF_MATCH, value);
            super::etag::if_match(&headers)
        }
        Some(_) => return Err(bad("ifMatch must be a string such as \"\\\"3\\\"\"")),
    };
    Ok(BatchWrite {
        action: op,
        res,
        id,
        body,
        if_match,
    })
}

/// One operation's result.
#[derive(Serialize)]
struct Outcome<'a> {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<RecordJson<'a>>,
}

/// Runs the batch: `200 {"data": [{"status": 201, "data": {...}}, ...]}`.
pub(crate) async fn batch(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let client = crate::ratelimit::client(&state, &req);
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    if let Some(key) = body.keys().find(|k| *k != "operations") {
        return Err(ApiError::bad_request(format!(
            "unknown key '{key}'; a batch is {{\"operations\": [...]}}"
        )));
    }
    let Some(Value::Array(raw)) = body.remove("operations") else {
        return Err(ApiError::bad_request(
            "a batch is {\"operations\": [...]} with at least one operation",
        ));
    };
    if raw.is_empty() || raw.len() > MAX_OPERATIONS {
        return Err(ApiError::bad_request(format!(
            "a batch carries 1 to {MAX_OPERATIONS} operations, not {}",
            raw.len()
        )));
    }
    let operations = raw
        .into_iter()
        .enumerate()
        .map(|(i, raw)| parse(&state, i, raw))
        .collect::<Result<Vec<_>, _>>()?;
    // Each write counts against its own resource's limit, as if sent alone.
    let charges: Vec<(&str, &str)> = operations
        .iter()
        .map(|o| {
            let method = match o.action {
                Action::Create => "POST",
                Action::Update => "PATCH",
                _ => "DELETE",
            };
            (state.schema.resources[o.res.0].name.as_str(), method)
        })
        .collect();
    if let Err(refused) = crate::ratelimit::charge_operations(&state, client, &charges).await {
        return Ok(refused);
    }
    let identity = state.records.with_user(identity).await?;
    let outcomes = state
        .records
        .batch(&identity, &operations)
        .await
        .map_err(|failure| match failure.index {
            Some(i) => at(i, failure.error.into()),
            None => failure.error.into(),
        })?;
    respond(&state, &identity, &operations, &outcomes)
}

fn respond(
    state: &AppState,
    identity: &Identity,
    operations: &[BatchWrite],
    outcomes: &[BatchOutcome],
) -> Result<Response, ApiError> {
    let records: Vec<Option<(&Record, Vec<bool>)>> = operations
        .iter()
        .zip(outcomes)
        .map(|(o, outcome)| match outcome {
            BatchOutcome::Inserted(r) | BatchOutcome::Updated(r) => {
                Some((r, state.records.readable(o.res, r, identity)))
            }
            BatchOutcome::Deleted => None,
        })
        .collect();
    let results: Vec<Outcome<'_>> = operations
        .iter()
        .zip(outcomes)
        .zip(&records)
        .map(|((o, outcome), record)| Outcome {
            status: match outcome {
                BatchOutcome::Inserted(_) => 201,
                BatchOutcome::Updated(_) => 200,
                BatchOutcome::Deleted => 204,
            },
            data: record.as_ref().map(|(r, mask)| RecordJson {
                readable: Some(mask),
                ..RecordJson::new(&state.schema.resources[o.res.0], r)
            }),
        })
        .collect();
    let mut response = json_response(StatusCode::OK, &super::Data { data: results });
    response.headers_mut().insert(
        HeaderName::from_static("cache-control"),
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
