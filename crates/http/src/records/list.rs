//! `GET /api/v1/{resource}`: filter, sort, fields, expand, keyset cursors or pages,
//! optional total.

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use ferrobase_query::cursor::{Cursor, CursorError};
use ferrobase_query::env::Env;
use ferrobase_query::sql::compile_guarded;
use ferrobase_schema::Resource;
use ferrobase_store::{ListQuery, Record};
use sea_query::ExprTrait;
use serde::Serialize;
use serde_json::{Map, Value};

use super::expand::{Tree, expand};
use super::params::{ListParams, parse};
use super::{RecordJson, json_bytes, resource};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::identity::Identity;
use crate::state::AppState;
use ferrobase_access::{Action, Decision, auth_map, decide, decide_as, readable};

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

struct Page<'a> {
    resource: &'a Resource,
    records: &'a [Record],
    only: Option<&'a [String]>,
    expand: Option<&'a [Map<String, Value>]>,
    readable: &'a [Vec<bool>],
}

impl Serialize for Page<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.records
                .iter()
                .enumerate()
                .map(|(i, record)| RecordJson {
                    resource: self.resource,
                    record,
                    only: self.only,
                    expand: self.expand.map(|e| &e[i]),
                    readable: self.readable.get(i).map(Vec::as_slice),
                }),
        )
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    data: Page<'a>,
    meta: Meta,
    links: Links,
}

/// The value a record has for a sort key, as stored (for cursors).
fn key_value(resource: &Resource, record: &Record, column: &str) -> Value {
    match column {
        "id" => Value::String(record.id.clone()),
        "version" => Value::from(record.version),
        "created_at" => record.created_at.clone().map_or(Value::Null, Value::String),
        "updated_at" => record.updated_at.clone().map_or(Value::Null, Value::String),
        _ => resource
            .fields
            .iter()
            .position(|f| f.name == column)
            .map_or(Value::Null, |i| record.values[i].clone()),
    }
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
    let (res, resource) = resource(&state, &path[0])?;
    let policy = state.policy(res);
    let identity = state.records.with_user(identity).await?;
    let now = state.clock.now();
    let rule = decide(policy, resource, Action::List, &identity, None, now)?.into_condition();
    let params: ListParams = parse(&state.schema, resource, query.as_deref())?;
    if params
        .filter
        .as_ref()
        .is_some_and(|f| f.reaches_beyond_dates(now))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "INVALID_FILTER",
            "@now with this offset falls outside the dates a record can hold (years 0001 to 9999)",
        ));
    }
    let auth = identity.caller().map(auth_map);
    let env = Env {
        auth: auth.as_ref(),
        body: None,
        now,
    };
    // Related records a filter looks at must be visible to the caller themselves.
    let guard = |name: &str, alias: &str| -> Option<sea_query::Expr> {
        let denied = Some(sea_query::Expr::cust("FALSE"));
        let Ok((id, target)) = super::resource(&state, name) else {
            return denied;
        };
        match decide_as(
            state.policy(id),
            target,
            Action::View,
            &identity,
            None,
            now,
            alias,
        ) {
            Ok(Decision::All) => None,
            Ok(Decision::Where(e)) => Some(e),
            Ok(Decision::None) | Err(_) => denied,
        }
    };
    let filter = params.filter.as_ref().map(|cond| {
        compile_guarded(cond, &env, policy.dialect, &resource.name, Some(&guard)).into_expr()
    });
    // The rule is part of the query: rows the caller may not see are never read.
    let filter = match (rule, filter) {
        (Some(r), Some(f)) => Some(r.and(f)),
        (r, f) => r.or(f),
    };
    let after = match &params.cursor {
        None => None,
        Some(token) => match state.cursors.decode(token, &resource.name, &params.sort) {
            Ok(cursor) => Some(cursor.values),
            Err(CursorError::Invalid) => {
                return Err(ApiError::validation(
                    [(
                        "cursor".to_owned(),
                        vec!["is not a valid cursor".to_owned()],
                    )]
                    .into(),
                ));
            }
            Err(CursorError::Mismatch) => {
                return Err(ApiError::validation(
                    [(
                        "cursor".to_owned(),
                        vec!["was made for a different resource or sort".to_owned()],
                    )]
                    .into(),
                ));
            }
        },
    };
    let total = if params.count {
        Some(state.store.count(res, filter.clone()).await?)
    } else {
        None
    };
    let list_query = ListQuery {
        filter,
        order: params.order.clone(),
        after,
        limit: params.limit + 1,
        offset: params.page.map_or(0, |p| (p - 1) * u64::from(params.limit)),
    };
    let mut records = state.store.list(res, list_query).await?;
    let has_more = records.len() > params.limit as usize;
    records.truncate(params.limit as usize);

    let tree = Tree::new(&params.expand);
    let expanded = if tree.is_empty() {
        None
    } else {
        Some(expand(&state, resource, &records, &tree, &identity).await?)
    };
    let base = format!("/api/v1/{}", resource.name);
    let (next_cursor, next) = match (has_more, params.page, records.last()) {
        (true, Some(page), _) => (
            None,
            Some(with_param(
                query.as_deref(),
                "page",
                Some(&(page + 1).to_string()),
                "cursor",
            )),
        ),
        (true, None, Some(last)) => {
            let cursor = Cursor {
                resource: resource.name.clone(),
                sort: params.sort.clone(),
                values: params
                    .order
                    .iter()
                    .map(|k| key_value(resource, last, &k.column))
                    .collect(),
            };
            let token = state.cursors.encode(&cursor);
            let link = with_param(query.as_deref(), "cursor", Some(&token), "page");
            (Some(token), Some(link))
        }
        _ => (None, None),
    };
    let this = match query.as_deref() {
        Some(q) if !q.is_empty() => format!("{base}?{q}"),
        _ => base.clone(),
    };
    let masks: Vec<Vec<bool>> = records
        .iter()
        .map(|r| readable(policy, resource, r, &identity, now))
        .collect();
    let body = ListBody {
        data: Page {
            resource,
            records: &records,
            only: params.fields.as_deref(),
            expand: expanded.as_deref(),
            readable: &masks,
        },
        meta: Meta {
            limit: params.limit,
            page: params.page,
            next_cursor,
            total,
        },
        links: Links {
            this,
            next: next.map(|q| format!("{base}?{q}")),
        },
    };
    // The ETag hashes the answer itself: any change to any listed record, the page's
    // cursor or the total changes it.
    let mut bytes = Vec::with_capacity(json_size_hint(resource, &records));
    serde_json::to_writer(&mut bytes, &body)
        .map_err(|e| ApiError::internal(format!("serializing a list: {e}")))?;
    let etag = crate::cache::list_etag(&bytes);
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
