//! Lists of records: the list rule and the filter in one query (rows the caller may not
//! see are never read), keyset cursors or offset pages, optional total, expansion.

use ferrobase_access::{Action, Decision, Identity, auth_map, decide, decide_as};
use ferrobase_query::cursor::{Cursor, CursorError};
use ferrobase_query::env::Env;
use ferrobase_query::sql::compile_guarded;
use ferrobase_schema::Resource;
use ferrobase_store::{ListQuery, Record, ResourceId};
use sea_query::ExprTrait;
use serde_json::{Map, Value};

use crate::expand::{Tree, expand};
use crate::params::ListParams;
use crate::{RecordError, Records};

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The records, in order.
    pub records: Vec<Record>,
    /// Per record, which fields the caller may read.
    pub readable: Vec<Vec<bool>>,
    /// Per record, its expanded relations (when `expand` asked for any).
    pub expanded: Option<Vec<Map<String, Value>>>,
    /// Whether more records follow this page.
    pub has_more: bool,
    /// The cursor of the next page, for keyset pages that have one.
    pub next_cursor: Option<String>,
    /// The total matching the filter, when asked for.
    pub total: Option<u64>,
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

fn cursor_error(message: &str) -> RecordError {
    RecordError::Invalid([("cursor".to_owned(), vec![message.to_owned()])].into())
}

impl Records {
    /// A client's filter as SQL for `res`'s table: related records it looks at must be
    /// visible to the caller themselves (their view rule guards each join), so a filter
    /// never reveals what the caller could not read directly.
    pub fn compile_filter(
        &self,
        identity: &Identity,
        res: ResourceId,
        cond: &ferrobase_query::check::Cond,
        now: time::OffsetDateTime,
    ) -> sea_query::Expr {
        let auth = identity.caller().map(auth_map);
        let env = Env {
            auth: auth.as_ref(),
            body: None,
            now,
        };
        let guard = |name: &str, alias: &str| -> Option<sea_query::Expr> {
            let denied = Some(sea_query::Expr::cust("FALSE"));
            let Ok((id, target)) = self.resource(name) else {
                return denied;
            };
            match decide_as(
                self.policy(id),
                target,
                Action::View,
                identity,
                None,
                now,
                alias,
            ) {
                Ok(Decision::All) => None,
                Ok(Decision::Where(e)) => Some(e),
                Ok(Decision::None) | Err(_) => denied,
            }
        };
        let resource = self.resource_at(res);
        compile_guarded(
            cond,
            &env,
            self.policy(res).dialect,
            &resource.name,
            Some(&guard),
        )
        .into_expr()
    }

    /// The list rule and the filter of `params` as one condition, and where a cursor
    /// starts.
    fn list_condition(
        &self,
        identity: &Identity,
        res: ResourceId,
        params: &ListParams,
    ) -> Result<(Option<sea_query::Expr>, Option<Vec<Value>>), RecordError> {
        let resource = self.resource_at(res);
        let policy = self.policy(res);
        let now = self.clock().now();
        let rule = decide(policy, resource, Action::List, identity, None, now)?.into_condition();
        if params
            .filter
            .as_ref()
            .is_some_and(|f| f.reaches_beyond_dates(now))
        {
            return Err(RecordError::InvalidFilter {
                message: "@now with this offset falls outside the dates a record can hold (years 0001 to 9999)".into(),
                position: None,
                hint: None,
                allowed: Vec::new(),
            });
        }
        let filter = params
            .filter
            .as_ref()
            .map(|cond| self.compile_filter(identity, res, cond, now));
        // The rule is part of the query: rows the caller may not see are never read.
        let filter = match (rule, filter) {
            (Some(r), Some(f)) => Some(r.and(f)),
            (r, f) => r.or(f),
        };
        let after = match &params.cursor {
            None => None,
            Some(token) => match self.0.cursors.decode(token, &resource.name, &params.sort) {
                Ok(cursor) => Some(cursor.values),
                Err(CursorError::Invalid) => return Err(cursor_error("is not a valid cursor")),
                Err(CursorError::Mismatch) => {
                    return Err(cursor_error("was made for a different resource or sort"));
                }
            },
        };
        Ok((filter, after))
    }

    /// The signed cursor of a page that starts right after `record`, in `params`' order
    /// (the same cursors as a REST list's `nextCursor`).
    pub fn cursor_after(&self, res: ResourceId, params: &ListParams, record: &Record) -> String {
        let resource = self.resource_at(res);
        self.0.cursors.encode(&Cursor {
            resource: resource.name.clone(),
            sort: params.sort.clone(),
            values: params
                .order
                .iter()
                .map(|k| key_value(resource, record, &k.column))
                .collect(),
        })
    }

    /// For each of `parents`, the first `params.limit` records of `res` (and whether more
    /// follow) that point at it through `field`, a single relation: the reverse of a
    /// relation for a whole page of parents in one statement, under the list rule and the
    /// filter exactly as [`Records::list`]. Parents without records are left out.
    pub async fn list_by_parent(
        &self,
        identity: &Identity,
        res: ResourceId,
        field: &str,
        parents: Vec<String>,
        params: &ListParams,
    ) -> Result<Vec<(String, Vec<Record>, bool)>, RecordError> {
        let resource = self.resource_at(res);
        let Some(index) = resource.fields.iter().position(|f| f.name == field) else {
            return Err(RecordError::UnknownResource(format!(
                "{}.{field}",
                resource.name
            )));
        };
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let (filter, after) = self.list_condition(identity, res, params)?;
        let query = ListQuery {
            filter,
            order: params.order.clone(),
            after,
            limit: params.limit + 1,
            offset: 0,
            per_parent: Some(ferrobase_store::PerParent {
                column: field.to_owned(),
                ids: parents,
            }),
        };
        let records = self.store().records().list(res, query).await?;
        let mut groups: Vec<(String, Vec<Record>, bool)> = Vec::new();
        for record in records {
            let Some(parent) = record.values[index].as_str().map(str::to_owned) else {
                continue;
            };
            match groups.last_mut() {
                Some((p, list, more)) if *p == parent => {
                    if list.len() < params.limit as usize {
                        list.push(record);
                    } else {
                        *more = true;
                    }
                }
                _ => groups.push((parent, vec![record], false)),
            }
        }
        Ok(groups)
    }

    /// For each of `parents`, how many records of `res` the caller may list point at it
    /// through `field` and match `params`' filter (the totals of
    /// [`Records::list_by_parent`], one statement for all parents).
    pub async fn count_by_parent(
        &self,
        identity: &Identity,
        res: ResourceId,
        field: &str,
        parents: Vec<String>,
        params: &ListParams,
    ) -> Result<std::collections::HashMap<String, u64>, RecordError> {
        if parents.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let (filter, _) = self.list_condition(identity, res, params)?;
        Ok(self
            .store()
            .records()
            .count_by(res, filter, field.to_owned(), parents)
            .await?
            .into_iter()
            .collect())
    }

    /// The joins that read the targets of single relations `fields` (indexes into
    /// `res`'s fields) in the same statement, each target under its view rule for the
    /// caller. Relations whose target has many relations, or that the caller may see
    /// none of, are left out (load them on their own); the second vector says which
    /// field each join serves.
    pub fn joins(
        &self,
        identity: &Identity,
        res: ResourceId,
        fields: &[usize],
    ) -> (Vec<ferrobase_store::Join>, Vec<usize>) {
        let resource = self.resource_at(res);
        let now = self.clock().now();
        let mut joins = Vec::new();
        let mut served = Vec::new();
        for &index in fields {
            let Some(field) = resource.fields.get(index) else {
                continue;
            };
            let Some(relation) = field.relation().filter(|r| !r.many) else {
                continue;
            };
            let Ok((target_id, target)) = self.resource(&relation.resource) else {
                continue;
            };
            if target.fields.iter().any(|f| f.is_many()) {
                continue;
            }
            let alias = format!("__join_{index}");
            let visible = match decide_as(
                self.policy(target_id),
                target,
                Action::View,
                identity,
                None,
                now,
                &alias,
            ) {
                Ok(Decision::All) => None,
                Ok(Decision::Where(e)) => Some(e),
                Ok(Decision::None) | Err(_) => continue,
            };
            joins.push(ferrobase_store::Join {
                column: field.name.clone(),
                target: target_id,
                alias,
                visible,
            });
            served.push(index);
        }
        (joins, served)
    }

    /// Record `id` as [`Records::get`] reads it, with the targets of `joins` (from
    /// [`Records::joins`]) read in the same statement.
    pub async fn get_joined(
        &self,
        identity: &Identity,
        res: ResourceId,
        id: &str,
        joins: Vec<ferrobase_store::Join>,
    ) -> Result<(Record, Vec<Option<Record>>), RecordError> {
        let resource = self.resource_at(res);
        let decision = decide(
            self.policy(res),
            resource,
            Action::View,
            identity,
            None,
            self.clock().now(),
        )?;
        let id = self.record_id(res, id)?;
        let mut filter = self.store().id_is(&resource.name, &id);
        if let Some(rule) = decision.into_condition() {
            filter = filter.and(rule);
        }
        let query = ListQuery {
            filter: Some(filter),
            limit: 1,
            ..ListQuery::default()
        };
        self.store()
            .records()
            .list_joined(res, query, joins)
            .await?
            .pop()
            .ok_or_else(|| self.not_found(res))
    }

    /// One page of the records the caller may list.
    pub async fn list(
        &self,
        identity: &Identity,
        res: ResourceId,
        params: &ListParams,
    ) -> Result<ListPage, RecordError> {
        self.list_joined(identity, res, params, Vec::new())
            .await
            .map(|(page, _)| page)
    }

    /// [`Records::list`], with the targets of `joins` (from [`Records::joins`]) read in
    /// the same statement, per record.
    pub async fn list_joined(
        &self,
        identity: &Identity,
        res: ResourceId,
        params: &ListParams,
        joins: Vec<ferrobase_store::Join>,
    ) -> Result<(ListPage, Vec<Vec<Option<Record>>>), RecordError> {
        let resource = self.resource_at(res);
        let (filter, after) = self.list_condition(identity, res, params)?;
        let total = if params.count {
            Some(self.store().records().count(res, filter.clone()).await?)
        } else {
            None
        };
        let query = ListQuery {
            filter,
            order: params.order.clone(),
            after,
            limit: params.limit + 1,
            offset: params.page.map_or(0, |p| (p - 1) * u64::from(params.limit)),
            per_parent: None,
        };
        let (mut records, mut joined) = if joins.is_empty() {
            (self.store().records().list(res, query).await?, Vec::new())
        } else {
            self.store()
                .records()
                .list_joined(res, query, joins)
                .await?
                .into_iter()
                .unzip()
        };
        let has_more = records.len() > params.limit as usize;
        records.truncate(params.limit as usize);
        joined.truncate(params.limit as usize);
        let tree = Tree::new(&params.expand);
        let expanded = if tree.is_empty() {
            None
        } else {
            Some(expand(self, resource, &records, &tree, identity).await?)
        };
        let next_cursor = match (has_more, params.page, records.last()) {
            (true, None, Some(last)) => Some(self.cursor_after(res, params, last)),
            _ => None,
        };
        // One reading of the clock for the whole page.
        let now = self.clock().now();
        let policy = self.policy(res);
        let readable = records
            .iter()
            .map(|r| ferrobase_access::readable(policy, resource, r, identity, now))
            .collect();
        Ok((
            ListPage {
                records,
                readable,
                expanded,
                has_more,
                next_cursor,
                total,
            },
            joined,
        ))
    }
}
