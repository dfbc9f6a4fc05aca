//! Records as GraphQL values, and relations loaded one query per level.
//!
//! Every record an operation returns belongs to a [`Page`]: the records one statement
//! loaded together (a list's page, a single read, the targets of one relation for a
//! whole page). The first node of a page to resolve a relation field loads it for all
//! the records of its page at once, and the result is a page again, so the next level
//! is one statement more, however many records there are (no N+1).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_graphql::dynamic::ResolverContext;
use async_graphql::{Error, ErrorExtensions};
use ferrobase_access::{Action, Decision, decide};
use ferrobase_records::{ListParams, RecordError, Records};
use ferrobase_store::{Record, ResourceId};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use crate::{Call, Failure, Services};

/// Records loaded together, as the caller may read them.
pub(crate) struct Page {
    pub res: ResourceId,
    pub records: Vec<Record>,
    /// What the caller may read of each record.
    shape: Shape,
    /// Relations loaded for the whole page, by field and arguments.
    loads: Mutex<Vec<(String, LoadCell)>>,
}

/// How a page's records are shown to the caller.
enum Shape {
    /// Stored records: per record, which fields the caller may read (read rules and
    /// `hidden`, as a REST read applies them).
    Masked(Vec<Vec<bool>>),
    /// Records already shaped for the caller (realtime events), by field name.
    Shaped(Vec<Map<String, Value>>),
}

/// Where one relation of a page is loaded, once.
type LoadCell = Arc<OnceCell<Result<Arc<Loaded>, Error>>>;

/// One relation loaded for a page.
pub(crate) enum Loaded {
    /// Targets of a forward relation: target id → index in `page`.
    Targets {
        page: Arc<Page>,
        by_id: HashMap<String, usize>,
    },
    /// Records pointing at each record of the page: parent id → indices in `page`, and
    /// whether more follow.
    Referring {
        page: Arc<Page>,
        params: Arc<ListParams>,
        by_parent: HashMap<String, (Vec<usize>, bool)>,
        /// Per parent, the records matching (when `count: true` asked for them).
        totals: Option<HashMap<String, u64>>,
    },
}

/// One record of a page.
#[derive(Clone)]
pub(crate) struct Node {
    pub page: Arc<Page>,
    pub index: usize,
}

impl Node {
    /// The value of field `index` (named `name`), when the caller may read it.
    pub fn value(&self, index: usize, name: &str) -> Option<&Value> {
        self.page.value(self.index, index, name)
    }

    /// `created_at` or `updated_at`.
    pub fn timestamp(&self, updated: bool) -> Option<&str> {
        match &self.page.shape {
            Shape::Masked(_) => {
                let r = self.record();
                if updated {
                    r.updated_at.as_deref()
                } else {
                    r.created_at.as_deref()
                }
            }
            Shape::Shaped(json) => json[self.index]
                .get(if updated { "updated_at" } else { "created_at" })
                .and_then(Value::as_str),
        }
    }

    pub fn record(&self) -> &Record {
        &self.page.records[self.index]
    }
}

/// A connection: some records of a page, in order.
pub(crate) struct Conn {
    pub page: Arc<Page>,
    pub indices: Vec<usize>,
    pub has_more: bool,
    pub params: Arc<ListParams>,
    pub total: Option<u64>,
}

/// One edge of a connection.
pub(crate) struct Edge {
    pub conn: Arc<Conn>,
    pub at: usize,
}

impl Edge {
    pub fn node(&self) -> Node {
        Node {
            page: self.conn.page.clone(),
            index: self.conn.indices[self.at],
        }
    }
}

/// The error of a failed service call, as REST describes it.
pub(crate) fn problem(services: &Services, failure: Failure) -> Error {
    let p = (services.problems)(failure);
    Error::new(p.message).extend_with(|_, ext| {
        ext.set("code", p.code.as_str());
        if let Some(details) = &p.details {
            match details.get("fields") {
                Some(fields) if p.code == "VALIDATION_FAILED" => {
                    if let Ok(v) = async_graphql::Value::from_json(fields.clone()) {
                        ext.set("fields", v);
                    }
                }
                _ => {
                    if let Ok(v) = async_graphql::Value::from_json(details.clone()) {
                        ext.set("details", v);
                    }
                }
            }
        }
    })
}

pub(crate) fn record_error(services: &Services, e: RecordError) -> Error {
    problem(services, Failure::Record(e))
}

/// The error of a list, its parameters named as the GraphQL arguments are (`first`,
/// `after`, where REST says `limit`, `cursor`).
pub(crate) fn list_error(services: &Services, e: RecordError) -> Error {
    let e = match e {
        RecordError::Invalid(fields) => RecordError::Invalid(
            fields
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "limit" => ("first".to_owned(), v),
                    "cursor" => ("after".to_owned(), v),
                    _ => (k, v),
                })
                .collect(),
        ),
        other => other,
    };
    record_error(services, e)
}

/// An error with a REST code and a message.
pub(crate) fn coded(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, ext| ext.set("code", code))
}

pub(crate) fn services<'a>(ctx: &ResolverContext<'a>) -> Result<&'a Services, Error> {
    ctx.data::<Services>()
}

pub(crate) fn call<'a>(ctx: &ResolverContext<'a>) -> Result<&'a Call, Error> {
    ctx.data::<Call>()
}

/// The answer of a nullable field: on an error, null, with the error (path and
/// position set) among the response's errors.
pub(crate) fn nullable<T>(
    ctx: &ResolverContext<'_>,
    result: Result<Option<T>, Error>,
) -> Result<Option<T>, Error> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            let Some(errors) = call(ctx).ok().and_then(|c| c.errors.as_ref()) else {
                return Err(e);
            };
            let error = ctx.set_error_path(e.into_server_error(ctx.item.pos));
            errors.lock().unwrap_or_else(|p| p.into_inner()).push(error);
            Ok(None)
        }
    }
}

/// Counts `n` more records against the operation's budget.
pub(crate) fn charge(call: &Call, max: usize, n: usize) -> Result<(), Error> {
    let total = call.loaded.fetch_add(n, Ordering::Relaxed) + n;
    if total > max {
        return Err(coded(
            "QUERY_TOO_COMPLEX",
            format!(
                "the operation loads more than {max} records; ask for smaller pages or fewer nested connections"
            ),
        ));
    }
    Ok(())
}

impl Page {
    /// A page of `records` of `res` as `call`'s caller may read them.
    pub fn new(records: &Records, res: ResourceId, found: Vec<Record>, call: &Call) -> Arc<Page> {
        let masks = found
            .iter()
            .map(|record| records.readable(res, record, &call.identity))
            .collect();
        Arc::new(Page {
            res,
            records: found,
            shape: Shape::Masked(masks),
            loads: Mutex::new(Vec::new()),
        })
    }

    /// Field `field` (named `name`) of record `at`, when the caller may read it.
    fn value(&self, at: usize, field: usize, name: &str) -> Option<&Value> {
        match &self.shape {
            Shape::Masked(masks) => masks[at]
                .get(field)
                .copied()
                .unwrap_or(false)
                .then(|| self.records[at].values.get(field))
                .flatten(),
            Shape::Shaped(json) => json[at].get(name),
        }
    }

    /// A page whose single relations `joined` (field index and name, target) were read
    /// in the statement that read it: `targets[i][j]` is record `i`'s target of join `j`.
    /// Those relations need no statement of their own.
    pub fn with_joined(
        records: &Records,
        res: ResourceId,
        found: Vec<Record>,
        joined: &[(usize, String, ResourceId)],
        targets: Vec<Vec<Option<Record>>>,
        call: &Call,
    ) -> Arc<Page> {
        let page = Page::new(records, res, found, call);
        let mut columns: Vec<Vec<Record>> = vec![Vec::new(); joined.len()];
        for row in targets {
            for (j, target) in row.into_iter().enumerate() {
                if let (Some(target), Some(column)) = (target, columns.get_mut(j)) {
                    column.push(target);
                }
            }
        }
        for ((_, name, target), mut found) in joined.iter().zip(columns) {
            found.sort_by(|a, b| a.id.cmp(&b.id));
            found.dedup_by(|a, b| a.id == b.id);
            let by_id = found
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id.clone(), i))
                .collect();
            let loaded = Loaded::Targets {
                page: Page::new(records, *target, found, call),
                by_id,
            };
            let _ = page.cell(name.clone()).set(Ok(Arc::new(loaded)));
        }
        page
    }

    /// A page of records already shaped for the caller (realtime events): their
    /// relations load as any page's do.
    pub fn shaped(res: ResourceId, json: Vec<Map<String, Value>>) -> Arc<Page> {
        let records = json
            .iter()
            .map(|m| Record {
                id: m
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                version: m.get("version").and_then(Value::as_i64).unwrap_or_default(),
                created_at: None,
                updated_at: None,
                values: Vec::new(),
            })
            .collect();
        Arc::new(Page {
            res,
            records,
            shape: Shape::Shaped(json),
            loads: Mutex::new(Vec::new()),
        })
    }

    /// The cell a relation of this page is loaded into, once.
    fn cell(&self, key: String) -> LoadCell {
        // A page loads a handful of relations: a short list beats hashing the key.
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, cell)) = loads.iter().find(|(k, _)| *k == key) {
            return cell.clone();
        }
        let cell = LoadCell::default();
        loads.push((key, cell.clone()));
        cell
    }

    /// The ids the page's records hold in field `index` (named `name`), when the caller
    /// may read it.
    fn ids_in(&self, index: usize, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for at in 0..self.records.len() {
            match self.value(at, index, name) {
                Some(Value::String(id)) => ids.push(id.clone()),
                Some(Value::Array(list)) => {
                    ids.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
                }
                _ => {}
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The targets of relation `field` for every record of `node`'s page, loaded once.
pub(crate) async fn targets(
    services: &Services,
    call: &Call,
    max: usize,
    node: &Node,
    (index, field): (usize, &str),
    target: ResourceId,
) -> Result<Arc<Loaded>, Error> {
    let cell = node.page.cell(field.to_owned());
    cell.get_or_init(|| async {
        let records = &services.records;
        let resource = records.resource_at(target);
        // Records the caller may not see are left out (null), never hinted at.
        let visible = match decide(
            records.policy(target),
            resource,
            Action::View,
            &call.identity,
            None,
            records.clock().now(),
        ) {
            Ok(Decision::None) | Err(_) => None,
            Ok(access) => Some(access.into_condition()),
        };
        let found = match visible {
            None => Vec::new(),
            Some(visible) => {
                let ids = node.page.ids_in(index, field);
                charge(call, max, ids.len())?;
                records
                    .store()
                    .records()
                    .get_many(target, ids, visible)
                    .await
                    .map_err(|e| record_error(services, RecordError::Store(e)))?
            }
        };
        let by_id = found
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        Ok(Arc::new(Loaded::Targets {
            page: Page::new(records, target, found, call),
            by_id,
        }))
    })
    .await
    .clone()
}

/// A reverse connection to load: the records of `resource` pointing at a page through
/// `field`, under `params`, cached under `key`.
pub(crate) struct Referring {
    pub key: String,
    pub resource: ResourceId,
    pub field: String,
    pub params: ListParams,
}

/// The records of `referring` that point at each record of `node`'s page through
/// `field`, under `params` (the connection's arguments, part of the key: two aliases with
/// different arguments load twice), loaded once.
pub(crate) async fn referring(
    services: &Services,
    call: &Call,
    max: usize,
    node: &Node,
    want: Referring,
) -> Result<Arc<Loaded>, Error> {
    let Referring {
        key,
        resource: referring,
        field,
        params,
    } = want;
    let cell = node.page.cell(key);
    cell.get_or_init(|| async {
        let records = &services.records;
        let parents: Vec<String> = node.page.records.iter().map(|r| r.id.clone()).collect();
        charge(
            call,
            max,
            parents.len().saturating_mul(params.limit as usize),
        )?;
        let totals = if params.count {
            Some(
                records
                    .count_by_parent(&call.identity, referring, &field, parents.clone(), &params)
                    .await
                    .map_err(|e| list_error(services, e))?,
            )
        } else {
            None
        };
        let groups = records
            .list_by_parent(&call.identity, referring, &field, parents, &params)
            .await
            .map_err(|e| list_error(services, e))?;
        let mut found = Vec::new();
        let mut by_parent = HashMap::with_capacity(groups.len());
        for (parent, list, more) in groups {
            let start = found.len();
            found.extend(list);
            by_parent.insert(parent, ((start..found.len()).collect(), more));
        }
        Ok(Arc::new(Loaded::Referring {
            page: Page::new(records, referring, found, call),
            params: Arc::new(params),
            by_parent,
            totals,
        }))
    })
    .await
    .clone()
}
