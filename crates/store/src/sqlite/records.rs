//! Record reads and writes on SQLite: statements prepared once per resource, values
//! bound as parameters, rows decoded by the declared field types.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrobase_schema::validate::canonical_number;
use ferrobase_schema::{FieldType, Resource, Schema};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, params_from_iter};
use sea_query::{Alias, Expr, ExprTrait, Query, SqliteQueryBuilder};
use serde_json::Value;

use super::ddl::q;
use crate::common::expected_columns;
use crate::common::join_table;
use crate::events::{Draft, EventBatch, EventOp, RecordEvent};
use crate::list::list_statement;
use crate::write::WriteTx;
use crate::{ListQuery, Record, ResourceId, StoreError};

/// Precomputed statements for every resource.
pub(crate) struct Plans {
    schema: Arc<Schema>,
    plans: Vec<Plan>,
}

struct Plan {
    /// Field indexes stored as columns, in select order after the system columns.
    column_fields: Vec<usize>,
    /// Number of system columns before the fields (id, version, timestamps).
    system: usize,
    get: String,
    get_many: String,
    insert: String,
    delete: String,
    many: Vec<ManyPlan>,
}

struct ManyPlan {
    field: usize,
    select_one: String,
    select_many: String,
    insert: String,
    clear: String,
}

fn alias(name: &str) -> Alias {
    Alias::new(name)
}

/// Converts a bound sea-query value into a SQLite value.
pub(crate) fn sql_value(v: sea_query::Value) -> SqlValue {
    use sea_query::Value as V;
    match v {
        V::Bool(Some(b)) => SqlValue::Integer(i64::from(b)),
        V::Int(Some(i)) => SqlValue::Integer(i64::from(i)),
        V::BigInt(Some(i)) => SqlValue::Integer(i),
        V::Unsigned(Some(u)) => SqlValue::Integer(i64::from(u)),
        V::BigUnsigned(Some(u)) => SqlValue::Integer(i64::try_from(u).unwrap_or(i64::MAX)),
        V::Double(Some(f)) => SqlValue::Real(f),
        V::String(Some(s)) => SqlValue::Text(s),
        V::Bytes(Some(b)) => SqlValue::Blob(b),
        _ => SqlValue::Null,
    }
}

/// Encodes a validated JSON value for a column of the field's declared type.
fn encode(ty: &FieldType, v: &Value) -> SqlValue {
    match (ty, v) {
        (_, Value::Null) => SqlValue::Null,
        (FieldType::Json, v) => SqlValue::Text(v.to_string()),
        (FieldType::Boolean, Value::Bool(b)) => SqlValue::Integer(i64::from(*b)),
        (FieldType::Integer, Value::Number(n)) => {
            n.as_i64().map_or(SqlValue::Null, SqlValue::Integer)
        }
        (FieldType::Number, Value::Number(n)) => n.as_f64().map_or(SqlValue::Null, SqlValue::Real),
        (_, Value::String(s)) => SqlValue::Text(s.clone()),
        (_, other) => SqlValue::Text(other.to_string()),
    }
}

/// [`encode`] as a bound expression, for statements built with sea-query.
fn encode_expr(ty: &FieldType, v: &Value) -> Expr {
    match encode(ty, v) {
        SqlValue::Null => Expr::val(None::<String>),
        SqlValue::Integer(i) => Expr::val(i),
        SqlValue::Real(f) => Expr::val(f),
        SqlValue::Text(s) => Expr::val(s),
        SqlValue::Blob(b) => Expr::val(b),
    }
}

/// Decodes a column by the field's declared type.
pub(crate) fn decode(ty: &FieldType, v: ValueRef<'_>) -> Result<Value, StoreError> {
    let bad = || StoreError::Internal(format!("stored value does not match type {}", ty.name()));
    Ok(match (ty, v) {
        (_, ValueRef::Null) => Value::Null,
        (FieldType::Boolean, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (FieldType::Integer, ValueRef::Integer(i)) => Value::from(i),
        (FieldType::Number, ValueRef::Real(f)) => canonical_number(f),
        (FieldType::Number, ValueRef::Integer(i)) => canonical_number(i as f64),
        (FieldType::Json, ValueRef::Text(t)) => serde_json::from_slice(t).map_err(|_| bad())?,
        (_, ValueRef::Text(t)) => {
            Value::String(std::str::from_utf8(t).map_err(|_| bad())?.to_owned())
        }
        _ => return Err(bad()),
    })
}

fn text(v: ValueRef<'_>) -> Result<String, StoreError> {
    v.as_str()
        .map(str::to_owned)
        .map_err(|_| StoreError::Internal("expected text".into()))
}

impl Plan {
    fn new(resource: &Resource) -> Self {
        let table = alias(&resource.name);
        let columns = expected_columns(resource);
        let system = if resource.timestamps { 4 } else { 2 };
        let column_fields = resource
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.is_many())
            .map(|(i, _)| i)
            .collect();
        let cols = || columns.iter().map(|c| alias(c)).collect::<Vec<_>>();
        let get = Query::select()
            .columns(cols())
            .from(table.clone())
            .and_where(Expr::col(alias("id")).eq(""))
            .to_string(SqliteQueryBuilder);
        let get = get.replace("''", "?");
        let get_many = format!(
            "SELECT {} FROM {} WHERE \"id\" IN (SELECT value FROM json_each(?))",
            columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", "),
            q(&resource.name)
        );
        let placeholders = vec!["?"; columns.len()].join(", ");
        let names: Vec<String> = columns.iter().map(|c| q(c)).collect();
        let insert = format!(
            "INSERT INTO {} ({}) VALUES ({placeholders})",
            q(&resource.name),
            names.join(", ")
        );
        let delete = Query::delete()
            .from_table(table)
            .and_where(Expr::col(alias("id")).eq(""))
            .to_string(SqliteQueryBuilder)
            .replace("''", "?");
        let many = resource
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_many())
            .map(|(i, f)| {
                let jt = q(&join_table(&resource.name, &f.name));
                ManyPlan {
                    field: i,
                    select_one: format!(
                        "SELECT \"target\" FROM {jt} WHERE \"source\" = ? ORDER BY \"position\""
                    ),
                    select_many: format!(
                        "SELECT \"source\", \"target\" FROM {jt} WHERE \"source\" IN (SELECT value FROM json_each(?)) ORDER BY \"source\", \"position\""
                    ),
                    insert: format!(
                        "INSERT INTO {jt} (\"source\", \"target\", \"position\") VALUES (?, ?, ?)"
                    ),
                    clear: format!("DELETE FROM {jt} WHERE \"source\" = ?"),
                }
            })
            .collect();
        Self {
            column_fields,
            system,
            get,
            get_many,
            insert,
            delete,
            many,
        }
    }
}

impl Plans {
    pub(crate) fn new(schema: Arc<Schema>) -> Self {
        let plans = schema.resources.iter().map(Plan::new).collect();
        Self { schema, plans }
    }

    fn parts(&self, res: ResourceId) -> Result<(&Resource, &Plan), StoreError> {
        match (self.schema.resources.get(res.0), self.plans.get(res.0)) {
            (Some(r), Some(p)) => Ok((r, p)),
            _ => Err(StoreError::Internal(format!("unknown resource {}", res.0))),
        }
    }

    fn decode_row(
        resource: &Resource,
        plan: &Plan,
        row: &rusqlite::Row<'_>,
    ) -> Result<Record, StoreError> {
        Self::decode_at(resource, plan, row, 0)
    }

    /// Decodes the record whose columns start at `at` (joined records follow the
    /// listed one's).
    fn decode_at(
        resource: &Resource,
        plan: &Plan,
        row: &rusqlite::Row<'_>,
        at: usize,
    ) -> Result<Record, StoreError> {
        let mut values = vec![Value::Null; resource.fields.len()];
        for m in &plan.many {
            values[m.field] = Value::Array(Vec::new());
        }
        for (col, &field) in plan.column_fields.iter().enumerate() {
            values[field] = decode(
                &resource.fields[field].ty,
                row.get_ref(at + plan.system + col)?,
            )?;
        }
        let (created_at, updated_at) = if resource.timestamps {
            (
                Some(text(row.get_ref(at + 2)?)?),
                Some(text(row.get_ref(at + 3)?)?),
            )
        } else {
            (None, None)
        };
        Ok(Record {
            id: text(row.get_ref(at)?)?,
            version: row.get(at + 1)?,
            created_at,
            updated_at,
            values,
        })
    }

    /// See [`crate::RecordStore::list_joined`].
    pub(crate) fn list_joined(
        &self,
        conn: &Connection,
        res: ResourceId,
        query: ListQuery,
        joins: &[crate::Join],
    ) -> Result<Vec<crate::Joined>, StoreError> {
        let (resource, plan) = self.parts(res)?;
        let mut targets = Vec::with_capacity(joins.len());
        for join in joins {
            let (target, target_plan) = self.parts(join.target)?;
            if !target_plan.many.is_empty() {
                return Err(StoreError::Internal(format!(
                    "{} has many relations and cannot be joined",
                    target.name
                )));
            }
            targets.push((target, target_plan));
        }
        let mut statement = list_statement(resource, &query)?;
        let resources: Vec<&Resource> = targets.iter().map(|(r, _)| *r).collect();
        crate::list::add_joins(&mut statement, &resource.name, joins, &resources);
        let (sql, values) = statement.build(SqliteQueryBuilder);
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(values.into_iter().map(sql_value)))?;
        let own = crate::common::expected_columns(resource).len();
        let widths: Vec<usize> = resources
            .iter()
            .map(|t| crate::common::expected_columns(t).len())
            .collect();
        let mut records = Vec::new();
        let mut joined = Vec::new();
        while let Some(row) = rows.next()? {
            records.push(Self::decode_row(resource, plan, row)?);
            let mut at = own;
            let mut found = Vec::with_capacity(targets.len());
            for ((target, target_plan), width) in targets.iter().zip(&widths) {
                found.push(match row.get_ref(at)? {
                    rusqlite::types::ValueRef::Null => None,
                    _ => Some(Self::decode_at(target, target_plan, row, at)?),
                });
                at += width;
            }
            joined.push(found);
        }
        drop(rows);
        drop(stmt);
        Self::load_links(conn, plan, &mut records)?;
        Ok(records.into_iter().zip(joined).collect())
    }

    /// Whether record `id` of `resource` satisfies `cond`.
    fn satisfies(
        conn: &Connection,
        resource: &Resource,
        id: &str,
        cond: &Expr,
    ) -> Result<bool, StoreError> {
        let table = resource.name.as_str();
        let (sql, values) = Query::select()
            .expr(Expr::cust("1"))
            .from(alias(table))
            .and_where(Expr::col((alias(table), alias("id"))).eq(id))
            .and_where(cond.clone())
            .build(SqliteQueryBuilder);
        Ok(conn
            .prepare_cached(&sql)?
            .exists(params_from_iter(values.into_iter().map(sql_value)))?)
    }

    /// One record, if it exists and satisfies `visible`.
    pub(crate) fn get_visible(
        &self,
        conn: &Connection,
        res: ResourceId,
        id: &str,
        visible: Option<&Expr>,
    ) -> Result<Option<Record>, StoreError> {
        let Some(cond) = visible else {
            return self.get(conn, res, id);
        };
        let (resource, plan) = self.parts(res)?;
        let table = resource.name.as_str();
        let query = ListQuery {
            filter: Some(
                Expr::col((alias(table), alias("id")))
                    .eq(id)
                    .and(cond.clone()),
            ),
            limit: 1,
            ..ListQuery::default()
        };
        let statement = list_statement(resource, &query)?;
        Ok(self
            .select(conn, resource, plan, statement.build(SqliteQueryBuilder))?
            .pop())
    }

    pub(crate) fn get(
        &self,
        conn: &Connection,
        res: ResourceId,
        id: &str,
    ) -> Result<Option<Record>, StoreError> {
        let (resource, plan) = self.parts(res)?;
        let mut stmt = conn.prepare_cached(&plan.get)?;
        let mut rows = stmt.query([id])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let mut record = Self::decode_row(resource, plan, row)?;
        for m in &plan.many {
            let mut stmt = conn.prepare_cached(&m.select_one)?;
            let ids = stmt
                .query_map([id], |row| row.get::<_, String>(0))?
                .map(|r| r.map(Value::String))
                .collect::<Result<Vec<_>, _>>()?;
            record.values[m.field] = Value::Array(ids);
        }
        Ok(Some(record))
    }

    /// Runs a built SELECT of a resource's columns and decodes the rows.
    fn select(
        &self,
        conn: &Connection,
        resource: &Resource,
        plan: &Plan,
        (sql, values): (String, sea_query::Values),
    ) -> Result<Vec<Record>, StoreError> {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(values.into_iter().map(sql_value)))?;
        let mut records = Vec::new();
        while let Some(row) = rows.next()? {
            records.push(Self::decode_row(resource, plan, row)?);
        }
        Self::load_links(conn, plan, &mut records)?;
        Ok(records)
    }

    /// Fills many-relation fields of `records` with one query per relation.
    fn load_links(
        conn: &Connection,
        plan: &Plan,
        records: &mut [Record],
    ) -> Result<(), StoreError> {
        if plan.many.is_empty() || records.is_empty() {
            return Ok(());
        }
        let ids = Value::Array(
            records
                .iter()
                .map(|r| Value::String(r.id.clone()))
                .collect(),
        );
        let position: BTreeMap<String, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        for m in &plan.many {
            let mut stmt = conn.prepare_cached(&m.select_many)?;
            let mut rows = stmt.query([ids.to_string()])?;
            while let Some(row) = rows.next()? {
                let source = text(row.get_ref(0)?)?;
                if let Some(&i) = position.get(&source) {
                    let target = text(row.get_ref(1)?)?;
                    if let Value::Array(a) = &mut records[i].values[m.field] {
                        a.push(Value::String(target));
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn list(
        &self,
        conn: &Connection,
        res: ResourceId,
        query: ListQuery,
    ) -> Result<Vec<Record>, StoreError> {
        let (resource, plan) = self.parts(res)?;
        let statement = list_statement(resource, &query)?;
        self.select(conn, resource, plan, statement.build(SqliteQueryBuilder))
    }

    pub(crate) fn explain(
        &self,
        conn: &Connection,
        res: ResourceId,
        query: ListQuery,
    ) -> Result<Vec<String>, StoreError> {
        let (resource, _) = self.parts(res)?;
        let (sql, values) = list_statement(resource, &query)?.build(SqliteQueryBuilder);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = stmt.query_map(params_from_iter(values.into_iter().map(sql_value)), |r| {
            r.get::<_, String>(3)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn count(
        &self,
        conn: &Connection,
        res: ResourceId,
        filter: Option<Expr>,
    ) -> Result<u64, StoreError> {
        let (resource, _) = self.parts(res)?;
        let mut q = Query::select();
        q.expr(Expr::cust("COUNT(*)")).from(alias(&resource.name));
        if let Some(f) = filter {
            q.and_where(f);
        }
        let (sql, values) = q.build(SqliteQueryBuilder);
        let mut stmt = conn.prepare_cached(&sql)?;
        let n: i64 = stmt.query_row(params_from_iter(values.into_iter().map(sql_value)), |r| {
            r.get(0)
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Counts per parent (see [`crate::RecordStore::count_by`]).
    pub(crate) fn count_by(
        &self,
        conn: &Connection,
        res: ResourceId,
        filter: Option<Expr>,
        column: &str,
        ids: &[String],
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let (resource, _) = self.parts(res)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (sql, values) = crate::list::count_by_statement(resource, filter, column, ids, false)
            .build(SqliteQueryBuilder);
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(values.into_iter().map(sql_value)), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        rows.map(|r| {
            r.map(|(id, n)| (id, u64::try_from(n).unwrap_or(0)))
                .map_err(StoreError::from)
        })
        .collect()
    }

    /// Judges conditions against a record held in memory (see
    /// [`crate::common::judge_statement`]).
    pub(crate) fn judge(
        &self,
        conn: &Connection,
        res: ResourceId,
        record: &Record,
        conds: Vec<Expr>,
    ) -> Result<Vec<bool>, StoreError> {
        let (resource, _) = self.parts(res)?;
        let n = conds.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let stmt = crate::common::judge_statement(resource, record, conds, encode_expr);
        let (sql, values) = stmt.build(SqliteQueryBuilder);
        let mut stmt = conn.prepare_cached(&sql)?;
        let answers = stmt.query_row(params_from_iter(values.into_iter().map(sql_value)), |r| {
            (0..n)
                .map(|i| Ok(r.get::<_, Option<i64>>(i)?.is_some_and(|v| v != 0)))
                .collect::<Result<Vec<bool>, rusqlite::Error>>()
        })?;
        Ok(answers)
    }

    pub(crate) fn get_many(
        &self,
        conn: &Connection,
        res: ResourceId,
        ids: Vec<String>,
        visible: Option<Expr>,
    ) -> Result<Vec<Record>, StoreError> {
        let (resource, plan) = self.parts(res)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let limit = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let ids = Value::Array(ids.into_iter().map(Value::String).collect()).to_string();
        if let Some(visible) = visible {
            let table = resource.name.as_str();
            let among = Expr::cust_with_values(
                format!("{}.\"id\" IN (SELECT value FROM json_each(?))", q(table)),
                [ids],
            );
            let query = ListQuery {
                filter: Some(among.and(visible)),
                limit,
                ..ListQuery::default()
            };
            let statement = list_statement(resource, &query)?;
            return self.select(conn, resource, plan, statement.build(SqliteQueryBuilder));
        }
        let mut stmt = conn.prepare_cached(&plan.get_many)?;
        let mut rows = stmt.query([ids])?;
        let mut records = Vec::new();
        while let Some(row) = rows.next()? {
            records.push(Self::decode_row(resource, plan, row)?);
        }
        drop(rows);
        drop(stmt);
        Self::load_links(conn, plan, &mut records)?;
        Ok(records)
    }

    /// The statements of a write on `conn`, for the shared write routine.
    pub(crate) fn tx<'a>(&'a self, conn: &'a Connection) -> SqliteTx<'a> {
        SqliteTx { conn, plans: self }
    }

    fn write_links(
        conn: &Connection,
        m: &ManyPlan,
        source: &str,
        targets: &Value,
        replace: bool,
    ) -> Result<(), StoreError> {
        if replace {
            conn.prepare_cached(&m.clear)?.execute([source])?;
        }
        if let Value::Array(ids) = targets {
            let mut stmt = conn.prepare_cached(&m.insert)?;
            for (pos, id) in ids.iter().enumerate() {
                if let Some(id) = id.as_str() {
                    stmt.execute((source, id, pos as i64))?;
                }
            }
        }
        Ok(())
    }
}

/// A write transaction on SQLite's writer connection: [`WriteTx`] run synchronously.
pub(crate) struct SqliteTx<'a> {
    conn: &'a Connection,
    plans: &'a Plans,
}

impl WriteTx for SqliteTx<'_> {
    fn schema(&self) -> &Schema {
        &self.plans.schema
    }

    async fn current(&self, res: ResourceId, id: &str) -> Result<Option<Record>, StoreError> {
        // The writer holds the database for the whole transaction: no lock to take.
        self.plans.get(self.conn, res, id)
    }

    async fn satisfies(&self, res: ResourceId, id: &str, cond: &Expr) -> Result<bool, StoreError> {
        let (resource, _) = self.plans.parts(res)?;
        Plans::satisfies(self.conn, resource, id, cond)
    }

    async fn exists(
        &self,
        res: ResourceId,
        id: &str,
        cond: Option<&Expr>,
    ) -> Result<bool, StoreError> {
        let (resource, _) = self.plans.parts(res)?;
        match cond {
            Some(cond) => Plans::satisfies(self.conn, resource, id, cond),
            None => {
                let sql = format!("SELECT 1 FROM {} WHERE \"id\" = ?", q(&resource.name));
                Ok(self.conn.prepare_cached(&sql)?.exists([id])?)
            }
        }
    }

    async fn insert_row(
        &self,
        res: ResourceId,
        id: &str,
        now: &str,
        values: &[Value],
    ) -> Result<(), StoreError> {
        let (resource, plan) = self.plans.parts(res)?;
        let mut params: Vec<SqlValue> = Vec::with_capacity(plan.system + plan.column_fields.len());
        params.push(SqlValue::Text(id.to_owned()));
        params.push(SqlValue::Integer(1));
        if resource.timestamps {
            params.push(SqlValue::Text(now.to_owned()));
            params.push(SqlValue::Text(now.to_owned()));
        }
        for &i in &plan.column_fields {
            params.push(encode(&resource.fields[i].ty, &values[i]));
        }
        self.conn
            .prepare_cached(&plan.insert)?
            .execute(params_from_iter(params))
            .map_err(relation_error)?;
        Ok(())
    }

    async fn update_row(
        &self,
        res: ResourceId,
        id: &str,
        now: &str,
        values: &[Value],
        changed: &[usize],
    ) -> Result<(), StoreError> {
        let (resource, _) = self.plans.parts(res)?;
        let mut stmt = Query::update();
        stmt.table(alias(&resource.name))
            .value(alias("version"), Expr::col(alias("version")).add(1));
        if resource.timestamps {
            stmt.value(alias("updated_at"), now.to_owned());
        }
        for &i in changed.iter().filter(|&&i| !resource.fields[i].is_many()) {
            let field = &resource.fields[i];
            let v = match encode(&field.ty, &values[i]) {
                SqlValue::Null => sea_query::Value::String(None),
                SqlValue::Integer(n) => n.into(),
                SqlValue::Real(f) => f.into(),
                SqlValue::Text(s) => s.into(),
                SqlValue::Blob(b) => b.into(),
            };
            stmt.value(alias(&field.name), v);
        }
        stmt.and_where(Expr::col(alias("id")).eq(id));
        let (sql, values) = stmt.build(SqliteQueryBuilder);
        self.conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(values.into_iter().map(sql_value)))
            .map_err(relation_error)?;
        Ok(())
    }

    async fn referencing(
        &self,
        res: ResourceId,
        field: usize,
        target: &str,
    ) -> Result<Vec<String>, StoreError> {
        let (resource, _) = self.plans.parts(res)?;
        let sql = format!(
            "SELECT \"id\" FROM {} WHERE {} = ?",
            q(&resource.name),
            q(&resource.fields[field].name)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let ids = stmt
            .query_map([target], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    async fn delete_row(&self, res: ResourceId, id: &str) -> Result<(), StoreError> {
        let (_, plan) = self.plans.parts(res)?;
        self.conn
            .prepare_cached(&plan.delete)?
            .execute([id])
            .map_err(|e| {
                if is_foreign_key(&e) {
                    StoreError::Referenced
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    async fn write_links(
        &self,
        res: ResourceId,
        field: usize,
        source: &str,
        targets: &Value,
        replace: bool,
    ) -> Result<(), StoreError> {
        let (_, plan) = self.plans.parts(res)?;
        match plan.many.iter().find(|m| m.field == field) {
            Some(m) => Plans::write_links(self.conn, m, source, targets, replace),
            None => Err(StoreError::Internal(format!("field {field} has no links"))),
        }
    }

    async fn append_event(&self, draft: &Draft) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO \"_ferrobase_events\" (\"resource\", \"op\", \"record_id\", \"version\", \"actor\", \"at\", \"record\", \"previous\") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(rusqlite::params![
                draft.resource,
                draft.op.as_str(),
                draft.id,
                draft.version,
                draft.actor,
                draft.at,
                draft.record,
                draft.previous,
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    async fn revoke_sessions(&self, user_id: &str, now: &str) -> Result<(), StoreError> {
        super::auth::revoke_user(self.conn, user_id, now)
    }
}

/// Events after `position` (up to `upto` when given), at most `limit`, in `seq` order.
pub(crate) fn events_after(
    conn: &Connection,
    position: i64,
    upto: Option<i64>,
    limit: usize,
) -> Result<EventBatch, StoreError> {
    events_of(conn, position, upto, None, limit)
}

/// [`events_after`] of one resource when `resource` is given (a replay for one
/// subscription decodes no other resource's records).
pub(crate) fn events_of(
    conn: &Connection,
    position: i64,
    upto: Option<i64>,
    resource: Option<&str>,
    limit: usize,
) -> Result<EventBatch, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT \"seq\", \"resource\", \"op\", \"record_id\", \"version\", \"actor\", \"at\", \"record\", \"previous\" FROM \"_ferrobase_events\" WHERE \"seq\" > ?1 AND \"seq\" <= ?2 AND (?4 IS NULL OR \"resource\" = ?4) ORDER BY \"seq\" LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(rusqlite::params![
        position,
        upto.unwrap_or(i64::MAX),
        limit,
        resource
    ])?;
    let mut batch = EventBatch {
        events: Vec::new(),
        position,
    };
    while let Some(row) = rows.next()? {
        let json = |text: Option<String>| -> Result<Option<Value>, StoreError> {
            text.map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Internal(format!("an event does not decode: {e}")))
            })
            .transpose()
        };
        let op: String = row.get(2)?;
        let event = RecordEvent {
            seq: row.get(0)?,
            resource: row.get(1)?,
            op: EventOp::parse(&op)
                .ok_or_else(|| StoreError::Internal(format!("unknown event op {op}")))?,
            id: row.get(3)?,
            version: row.get(4)?,
            actor: row.get(5)?,
            at: row.get(6)?,
            record: json(row.get(7)?)?.unwrap_or(Value::Null),
            previous: json(row.get(8)?)?,
        };
        batch.position = event.seq;
        batch.events.push(event);
    }
    if batch.events.len() < usize::try_from(limit).unwrap_or(usize::MAX)
        && let Some(upto) = upto
    {
        batch.position = Ord::max(batch.position, upto);
    }
    Ok(batch)
}

/// Foreign-key failures: SQLITE_CONSTRAINT_FOREIGNKEY, or SQLITE_CONSTRAINT_TRIGGER with
/// the foreign-key message, which is how `ON DELETE RESTRICT` reports.
fn is_foreign_key(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            f.extended_code == 787
                || (f.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.as_deref().is_some_and(|m| m.contains("FOREIGN KEY")))
        }
        _ => false,
    }
}

/// A foreign-key failure on write that `check_relations` did not foresee (a concurrent
/// delete cannot happen with one writer, so this is a safety net) still answers 4xx.
pub(crate) fn relation_error(e: rusqlite::Error) -> StoreError {
    if is_foreign_key(&e) {
        StoreError::BrokenRelation {
            fields: BTreeMap::new(),
        }
    } else {
        e.into()
    }
}
