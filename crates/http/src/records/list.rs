//! `GET /api/v1/{resource}`: a page of records (limit + page offset).

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use ferrobase_store::Page;
use serde::Serialize;

use super::json::RecordsJson;
use super::{authorize, json_response, resource};
use crate::error::ApiError;
use crate::extract::Segments;
use crate::state::AppState;

/// Page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size.
pub const MAX_LIMIT: u32 = 100;
/// Deepest page reachable by offset; cursors will serve deeper walks.
const MAX_PAGE: u64 = 100_000;

/// List parameters of SPEC §5 that later versions implement.
const NOT_YET: &[&str] = &["filter", "sort", "fields", "expand", "cursor", "count"];

#[derive(Debug, PartialEq)]
struct ListParams {
    limit: u32,
    page: u64,
}

fn parse_params(query: Option<&str>) -> Result<ListParams, BTreeMap<String, Vec<String>>> {
    let mut params = ListParams {
        limit: DEFAULT_LIMIT,
        page: 1,
    };
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let key = key.into_owned();
        if seen.contains(&key) {
            errors
                .entry(key)
                .or_default()
                .push("is given more than once".into());
            continue;
        }
        seen.push(key.clone());
        match key.as_str() {
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => params.limit = n,
                _ => errors
                    .entry(key)
                    .or_default()
                    .push(format!("must be an integer from 1 to {MAX_LIMIT}")),
            },
            "page" => match value.parse::<u64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => params.page = n,
                _ => errors
                    .entry(key)
                    .or_default()
                    .push(format!("must be an integer from 1 to {MAX_PAGE}")),
            },
            k if NOT_YET.contains(&k) => errors
                .entry(key)
                .or_default()
                .push("is not supported by this version yet".into()),
            _ => errors
                .entry(key)
                .or_default()
                .push("is not a list parameter; use limit or page".into()),
        }
    }
    if errors.is_empty() {
        Ok(params)
    } else {
        Err(errors)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    limit: u32,
    page: u64,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: String,
    next: Option<String>,
}

#[derive(Serialize)]
struct ListBody<'a> {
    data: RecordsJson<'a>,
    meta: Meta,
    links: Links,
}

/// Lists records, oldest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Segments(path): Segments,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (res, resource) = resource(&state, &path[0])?;
    authorize(resource.rules.list.as_ref())?;
    let params = parse_params(query.as_deref()).map_err(ApiError::validation)?;
    let page = Page {
        limit: params.limit + 1,
        offset: (params.page - 1) * u64::from(params.limit),
    };
    let mut records = state.store.list(res, page).await?;
    let has_more = records.len() > params.limit as usize;
    records.truncate(params.limit as usize);
    let link = |page: u64| {
        format!(
            "/api/v1/{}?limit={}&page={page}",
            resource.name, params.limit
        )
    };
    let body = ListBody {
        data: RecordsJson {
            resource,
            records: &records,
        },
        meta: Meta {
            limit: params.limit,
            page: params.page,
            next_cursor: None,
        },
        links: Links {
            this: link(params.page),
            next: has_more.then(|| link(params.page + 1)),
        },
    };
    Ok(json_response(StatusCode::OK, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked() {
        assert_eq!(parse_params(None), Ok(ListParams { limit: 20, page: 1 }));
        assert_eq!(
            parse_params(Some("limit=5&page=3")),
            Ok(ListParams { limit: 5, page: 3 })
        );
        let errors = parse_params(Some("limit=0&page=x&sort=title&bogus=1")).expect_err("bad");
        assert_eq!(errors.len(), 4);
        assert!(parse_params(Some("limit=101")).is_err());
        assert!(parse_params(Some("limit=5&limit=6")).is_err());
    }
}
