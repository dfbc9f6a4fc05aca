//! `GET /api/v1/{resource}`: filter, sort, fields, expand, keyset cursors or pages,
//! optional total.

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use ferrobase_schema::Resource;
use ferrobase_store::Record;
use serde::Serialize;
use serde_json::Value;

use super::{RecordJson, json_bytes};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::identity::Identity;
use crate::state::AppState;
use ferrobase_access::Action;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<u64>,
    next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: String,
    next: Option<String>,
}

/// The request's own query string with `key` replaced (or removed when `None`).
fn with_param(query: Option<&str>, key: &str, value: Option<&str>, also_drop: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if k != key && k != also_drop {
            out.append_pair(&k, &v);
        }
    }
    if let Some(value) = value {
        out.append_pair(key, value);
    }
    out.finish()
}

/// Lists records.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Segments(path): Segments,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let records = &state.records;
    let (res, resource) = records.resource(&path[0])?;
    let identity = records.with_user(identity).await?;
    // Whatever the parameters say, a caller the list rule refuses outright hears so.
    records.refuse_early(res, &identity, Action::List)?;
    let params = ferrobase_records::params::parse(&state.schema, resource, query.as_deref())?;
    let page = records.list(&identity, res, &params).await?;
    let base = format!("/api/v1/{}", resource.name);
    let next = match (page.has_more, params.page, &page.next_cursor) {
        (true, Some(number), _) => Some(with_param(
            query.as_deref(),
            "page",
            Some(&(number + 1).to_string()),
            "cursor",
        )),
        (true, None, Some(token)) => {
            Some(with_param(query.as_deref(), "cursor", Some(token), "page"))
        }
        _ => None,
    };
    let this = match query.as_deref() {
        Some(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base.clone(),
    };
    let meta = Meta {
        limit: params.limit,
        page: params.page,
        next_cursor: page.next_cursor.clone(),
        total: page.total,
    };
    let links = Links {
        this,
        next: next.map(|q| format!("{base}?{q}")),
    };
    // `{"data": [...], "meta": ..., "links": ...}`, the records written straight into
    // the buffer. The ETag hashes the answer itself: any change to any listed record,
    // the page's cursor or the total changes it.
    let mut bytes = Vec::with_capacity(json_size_hint(resource, &page.records));
    bytes.extend_from_slice(b"{\"data\":[");
    for (i, record) in page.records.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        RecordJson {
            resource,
            record,
            only: params.fields.as_deref(),
            expand: page.expanded.as_ref().map(|e| &e[i]),
            readable: page.readable.get(i).map(Vec::as_slice),
        }
        .write_json(&mut bytes);
    }
    bytes.extend_from_slice(b"],\"meta\":");
    serde_json::to_writer(&mut bytes, &meta)
        .map_err(|e| ApiError::internal(format!("serializing a list: {e}")))?;
    bytes.extend_from_slice(b",\"links\":");
    serde_json::to_writer(&mut bytes, &links)
        .map_err(|e| ApiError::internal(format!("serializing a list: {e}")))?;
    bytes.push(b'}');
    let etag = crate::cache::list_etag(state.etag_seed, &bytes);
    let mut extra = HeaderMap::new();
    crate::cache::mark(&state, res, &identity, &mut extra);
    if crate::cache::matches(&headers, &etag) {
        return Ok(crate::cache::not_modified(
            etag,
            extra.get(header::CACHE_CONTROL).cloned(),
        ));
    }
    let mut response = json_bytes(StatusCode::OK, bytes);
    response.headers_mut().extend(extra);
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// About the size of a page's JSON, so that it is written without growing the buffer
/// many times over (a 20-record page of the benchmark grew it seven times).
fn json_size_hint(resource: &Resource, records: &[Record]) -> usize {
    let names: usize = resource.fields.iter().map(|f| f.name.len() + 4).sum();
    let values: usize = records
        .iter()
        .flat_map(|r| &r.values)
        .map(|v| match v {
            Value::String(s) => s.len() + 2,
            _ => 8,
        })
        .sum();
    512 + records.len() * (names + 160) + values + values / 16
}
