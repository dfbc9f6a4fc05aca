//! The list parameters of SPEC §5, parsed and checked against the schema.

use std::collections::BTreeMap;

use ferrobase_query::check::{Cond, Mode, check, visible_columns};
use ferrobase_schema::{FieldType, Resource, Schema};
use ferrobase_store::{KeyType, SortKey};

use crate::RecordError;

/// Page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size.
pub const MAX_LIMIT: u32 = 100;
/// Deepest page reachable by offset; cursors serve deeper walks.
const MAX_PAGE: u64 = 10_000;
/// Most sort keys.
const MAX_SORT_KEYS: usize = 5;
/// Most expanded paths, and how deep one may go.
const MAX_EXPANDS: usize = 10;
const MAX_EXPAND_DEPTH: usize = 3;

/// Parsed list parameters.
#[derive(Debug)]
pub struct ListParams {
    /// `filter`, checked against the schema.
    pub filter: Option<Cond>,
    /// `sort`, as keys (always ending in `id`).
    pub order: Vec<SortKey>,
    /// Canonical text of `order`, which cursors are bound to.
    pub sort: String,
    /// `fields`: only these keys in each record.
    pub fields: Option<Vec<String>>,
    /// Relation paths to expand, each a list of field names.
    pub expand: Vec<Vec<String>>,
    /// Page size.
    pub limit: u32,
    /// `cursor`: where a keyset page starts.
    pub cursor: Option<String>,
    /// `page`: an offset page, from 1.
    pub page: Option<u64>,
    /// `count`: whether the total is wanted.
    pub count: bool,
}

type Errors = BTreeMap<String, Vec<String>>;

/// At most this many problems are listed per parameter, so that an error body stays
/// small whatever the request holds (a 41 KB `fields=` list of bad names made 870 KB).
const MAX_PROBLEMS: usize = 5;
/// Names quoted back in messages are cut to this many characters.
const MAX_QUOTED: usize = 64;

fn push(errors: &mut Errors, key: &str, message: impl Into<String>) {
    let list = errors.entry(key.to_owned()).or_default();
    match list.len() {
        n if n < MAX_PROBLEMS => list.push(message.into()),
        MAX_PROBLEMS => list.push("(more problems not listed)".to_owned()),
        _ => {}
    }
}

/// A name from the request, as quoted back in an error message.
fn quoted(name: &str) -> String {
    match name.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &name[..cut]),
        None => name.to_owned(),
    }
}

/// Parses the query string of a list request.
pub fn parse(
    schema: &Schema,
    resource: &Resource,
    query: Option<&str>,
) -> Result<ListParams, RecordError> {
    let mut errors = Errors::new();
    let mut raw: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if raw.insert(key.to_string(), value.into_owned()).is_some() {
            push(&mut errors, &key, "is given more than once");
        }
    }
    let mut params = ListParams {
        filter: None,
        order: Vec::new(),
        sort: String::new(),
        fields: None,
        expand: Vec::new(),
        limit: DEFAULT_LIMIT,
        cursor: None,
        page: None,
        count: false,
    };
    for (key, value) in &raw {
        match key.as_str() {
            "filter" => params.filter = Some(filter(schema, resource, value)?),
            "sort" => {}
            "fields" => params.fields = Some(fields(resource, value, &mut errors)),
            "expand" => params.expand = expand(schema, resource, value, &mut errors),
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => params.limit = n,
                _ => push(
                    &mut errors,
                    key,
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ),
            },
            "page" => match value.parse::<u64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => params.page = Some(n),
                _ => push(
                    &mut errors,
                    key,
                    format!("must be an integer from 1 to {MAX_PAGE}"),
                ),
            },
            "cursor" => params.cursor = Some(value.clone()),
            "count" => match value.as_str() {
                "true" => params.count = true,
                "false" => params.count = false,
                _ => push(&mut errors, key, "must be true or false"),
            },
            _ => push(
                &mut errors,
                key,
                "is not a list parameter; use filter, sort, fields, expand, limit, cursor, page or count",
            ),
        }
    }
    if params.cursor.is_some() && params.page.is_some() {
        push(&mut errors, "cursor", "cannot be combined with page");
    }
    (params.order, params.sort) = sort(resource, raw.get("sort").map(String::as_str), &mut errors);
    if errors.is_empty() {
        Ok(params)
    } else {
        Err(RecordError::Invalid(errors))
    }
}

/// Parses and checks a filter expression; errors point at the offending position.
pub fn filter(schema: &Schema, resource: &Resource, text: &str) -> Result<Cond, RecordError> {
    let invalid = |offset: usize, message: String, hint: Option<String>| {
        let position = text.get(..offset).map_or(offset, |p| p.chars().count());
        RecordError::InvalidFilter {
            message: format!("{message} (at position {position})"),
            position: Some(position),
            hint,
            allowed: visible_columns(resource),
        }
    };
    let expr = ferrobase_query::parse(text).map_err(|e| invalid(e.offset, e.message, None))?;
    check(&expr, schema, resource, Mode::Filter).map_err(|e| invalid(e.offset, e.message, e.hint))
}

/// The sort key of a column a client may sort on.
fn sort_key(resource: &Resource, name: &str, descending: bool) -> Option<SortKey> {
    let (ty, nullable) = match name {
        "id" => (KeyType::Uuid, false),
        "version" => (KeyType::Integer, false),
        "created_at" | "updated_at" if resource.timestamps => (KeyType::Timestamp, false),
        _ => {
            let field = resource.field(name)?;
            let visible = !field.hidden && field.read.as_ref().is_none_or(|r| r.is_public());
            let ty = match &field.ty {
                FieldType::Json => return None,
                FieldType::Relation(r) if r.many => return None,
                FieldType::Integer => KeyType::Integer,
                FieldType::Number => KeyType::Real,
                FieldType::Boolean => KeyType::Bool,
                FieldType::Datetime => KeyType::Timestamp,
                FieldType::Date => KeyType::Date,
                FieldType::Uuid | FieldType::Relation(_) => KeyType::Uuid,
                _ => KeyType::Text,
            };
            if !visible {
                return None;
            }
            (ty, !field.required)
        }
    };
    Some(SortKey {
        column: name.to_owned(),
        descending,
        nullable,
        ty,
    })
}

fn sort(resource: &Resource, text: Option<&str>, errors: &mut Errors) -> (Vec<SortKey>, String) {
    let mut keys: Vec<SortKey> = Vec::new();
    for part in text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (descending, name) = match part.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, part.strip_prefix('+').unwrap_or(part)),
        };
        if keys.iter().any(|k| k.column == name) {
            push(errors, "sort", format!("names '{}' twice", quoted(name)));
            continue;
        }
        match sort_key(resource, name, descending) {
            Some(key) => keys.push(key),
            None => push(
                errors,
                "sort",
                format!(
                    "cannot sort by '{}'; sortable: {}",
                    quoted(name),
                    visible_columns(resource)
                        .into_iter()
                        .filter(|c| sort_key(resource, c, false).is_some())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    if keys.len() > MAX_SORT_KEYS {
        push(
            errors,
            "sort",
            format!("may name at most {MAX_SORT_KEYS} fields"),
        );
    }
    // `id` breaks ties, in the direction of the last key, so the order is total.
    if !keys.iter().any(|k| k.column == "id") {
        let descending = keys.last().is_some_and(|k| k.descending);
        keys.extend(sort_key(resource, "id", descending));
    }
    let canonical = keys
        .iter()
        .map(|k| format!("{}{}", if k.descending { "-" } else { "" }, k.column))
        .collect::<Vec<_>>()
        .join(",");
    (keys, canonical)
}

fn fields(resource: &Resource, text: &str, errors: &mut Errors) -> Vec<String> {
    let visible = visible_columns(resource);
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if visible.iter().any(|v| v == name) {
            out.push(name.to_owned());
        } else {
            push(
                errors,
                "fields",
                format!(
                    "unknown field '{}'; fields: {}",
                    quoted(name),
                    visible.join(", ")
                ),
            );
        }
    }
    out
}

fn expand(
    schema: &Schema,
    resource: &Resource,
    text: &str,
    errors: &mut Errors,
) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for path in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_EXPAND_DEPTH {
            push(
                errors,
                "expand",
                format!(
                    "'{}' is deeper than {MAX_EXPAND_DEPTH} levels",
                    quoted(path)
                ),
            );
            continue;
        }
        let mut current = resource;
        let mut ok = true;
        for segment in &segments {
            let target = current
                .field(segment)
                .filter(|f| !f.hidden && f.read.as_ref().is_none_or(|r| r.is_public()))
                .and_then(|f| f.relation())
                .and_then(|r| schema.resource(&r.resource));
            match target {
                Some(t) => current = t,
                None => {
                    push(
                        errors,
                        "expand",
                        format!(
                            "'{}' in '{}' is not a relation of {}",
                            quoted(segment),
                            quoted(path),
                            current.name
                        ),
                    );
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            paths.push(segments);
        }
    }
    if paths.len() > MAX_EXPANDS {
        push(
            errors,
            "expand",
            format!("may name at most {MAX_EXPANDS} paths"),
        );
    }
    paths
}
