//! Record reads and writes on PostgreSQL. Values are bound typed or cast explicitly, rows
//! are decoded by the declared field types into the same canonical JSON the SQLite store
//! produces (UTC microsecond datetimes, lower-case UUIDs, whole numbers as integers).

use std::collections::BTreeMap;

use ferrobase_schema::validate::{canonical_number, format_datetime};
use ferrobase_schema::{FieldType, Resource};
use sea_query::{Alias, Expr, ExprTrait, PostgresQueryBuilder, Query, Value as SqlValue};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::Row;

use super::conn::{Conn, cast};
use super::ddl::q;
use crate::common::expected_columns;
use crate::common::join_table;
use crate::events::{Draft, EventOp, RecordEvent};
use crate::list::statement;
use crate::write::WriteTx;
use crate::{ListQuery, Record, ResourceId, StoreError};

fn alias(name: &str) -> Alias {
    Alias::new(name)
}

fn col(table: &str, column: &str) -> Expr {
    Expr::col((alias(table), alias(column)))
}

/// A bound parameter and the type PostgreSQL must cast it to, where that is not text or
/// a number.
pub(crate) type Param = (SqlValue, Option<&'static str>);

/// A parameter as a sea-query expression.
fn param_expr((value, pg_type): Param) -> Expr {
    match pg_type {
        Some(pg_type) => Expr::val(value).cast_as(pg_type),
        None => Expr::val(value),
    }
}

/// Writes `params` into `sql` as comma-separated placeholders (cast where needed),
/// numbered after those already in `bound`, and adds them there.
fn placeholders(
    sql: &mut String,
    bound: &mut Vec<SqlValue>,
    params: impl IntoIterator<Item = Param>,
) {
    use std::fmt::Write as _;
    for (i, (value, pg_type)) in params.into_iter().enumerate() {
        bound.push(value);
        let comma = if i == 0 { "" } else { ", " };
        let _ = match pg_type {
            Some(pg_type) => write!(sql, "{comma}CAST(${} AS {pg_type})", bound.len()),
            None => write!(sql, "{comma}${}", bound.len()),
        };
    }
}

/// Quoted column names, comma-separated.
fn column_list<S: AsRef<str>>(columns: &[S]) -> String {
    columns
        .iter()
        .map(|c| q(c.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value bound for a column of `ty`, cast where PostgreSQL's type is not text/number.
pub(crate) fn encode(ty: &FieldType, v: &Value) -> Expr {
    param_expr(bind(ty, v))
}

/// The parameter a value of a column of `ty` is bound as.
fn bind(ty: &FieldType, v: &Value) -> Param {
    let text = |v: &Value| SqlValue::from(v.as_str().map(str::to_owned));
    match (ty, v) {
        (FieldType::Integer, Value::Number(n)) => (n.as_i64().into(), None),
        (FieldType::Integer, _) => (None::<i64>.into(), None),
        (FieldType::Number, Value::Number(n)) => (n.as_f64().into(), None),
        (FieldType::Number, _) => (None::<f64>.into(), None),
        (FieldType::Boolean, Value::Bool(b)) => (Some(*b).into(), None),
        (FieldType::Boolean, _) => (None::<bool>.into(), None),
        (FieldType::Json, Value::Null) => (None::<String>.into(), Some("jsonb")),
        (FieldType::Json, v) => (Some(v.to_string()).into(), Some("jsonb")),
        (FieldType::Datetime, v) => (text(v), Some("timestamptz")),
        (FieldType::Date, v) => (text(v), Some("date")),
        (FieldType::Uuid | FieldType::Relation(_), v) => (text(v), Some("uuid")),
        (_, Value::String(s)) => (Some(s.clone()).into(), None),
        (_, Value::Null) => (None::<String>.into(), None),
        (_, other) => (Some(other.to_string()).into(), None),
    }
}

fn bad(ty: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Internal(format!("stored value does not decode as {ty}: {e}"))
}

fn uuid_text(row: &Row, i: usize) -> Result<Option<String>, StoreError> {
    Ok(row
        .try_get::<_, Option<uuid::Uuid>>(i)
        .map_err(bad("uuid"))?
        .map(|u| {
            u.hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .to_owned()
        }))
}

fn time_text(row: &Row, i: usize) -> Result<Option<String>, StoreError> {
    // Every record read formats two or three of these: from PostgreSQL's microseconds
    // straight to text where the year has four digits, through `time` otherwise.
    let Some(Micros(us)) = row.try_get(i).map_err(bad("timestamptz"))? else {
        return Ok(None);
    };
    if let Some(text) = micros_text(us) {
        return Ok(Some(text));
    }
    Ok(row
        .try_get::<_, Option<OffsetDateTime>>(i)
        .map_err(bad("timestamptz"))?
        .map(format_datetime))
}

/// A `timestamptz` as PostgreSQL sends it: microseconds since 2000-01-01 00:00 UTC.
struct Micros(i64);

impl<'a> tokio_postgres::types::FromSql<'a> for Micros {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Micros(i64::from_be_bytes(raw.try_into()?)))
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::TIMESTAMPTZ
    }
}

/// [`format_datetime`] of the instant `us` microseconds after 2000-01-01 00:00 UTC, for
/// years 0 to 9999 (none otherwise). The date by the days-to-civil algorithm of the
/// proleptic Gregorian calendar, as PostgreSQL and `time` count.
fn micros_text(us: i64) -> Option<String> {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    // Days since 1970-01-01 (2000-01-01 is day 10,957).
    let days = secs.div_euclid(86_400) + 10_957;
    let second_of_day = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Every value below is in range for u32 once the year is.
    let part = |v: i64| u32::try_from(v).unwrap_or_default();
    (0..=9999).contains(&year).then(|| {
        ferrobase_schema::validate::datetime_text(
            part(year),
            part(month),
            part(day),
            [
                part(second_of_day / 3_600),
                part(second_of_day / 60 % 60),
                part(second_of_day % 60),
            ],
            part(micros),
        )
    })
}

/// Decodes a column by the field's declared type.
pub(crate) fn decode(ty: &FieldType, row: &Row, i: usize) -> Result<Value, StoreError> {
    let json = |s: Option<String>| s.map_or(Value::Null, Value::String);
    Ok(match ty {
        FieldType::Integer => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad("bigint"))?
            .map_or(Value::Null, Value::from),
        FieldType::Number => row
            .try_get::<_, Option<f64>>(i)
            .map_err(bad("double"))?
            .map_or(Value::Null, canonical_number),
        FieldType::Boolean => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad("boolean"))?
            .map_or(Value::Null, Value::Bool),
        FieldType::Datetime => json(time_text(row, i)?),
        FieldType::Date => json(
            row.try_get::<_, Option<time::Date>>(i)
                .map_err(bad("date"))?
                .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())),
        ),
        FieldType::Uuid | FieldType::Relation(_) => json(uuid_text(row, i)?),
        FieldType::Json => row
            .try_get::<_, Option<Value>>(i)
            .map_err(bad("jsonb"))?
            .unwrap_or(Value::Null),
        _ => json(row.try_get::<_, Option<String>>(i).map_err(bad("text"))?),
    })
}

/// The field indexes stored as columns, in select order after the system columns.
fn column_fields(resource: &Resource) -> Vec<usize> {
    resource
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.is_many())
        .map(|(i, _)| i)
        .collect()
}

pub(crate) fn decode_row(resource: &Resource, row: &Row) -> Result<Record, StoreError> {
    decode_at(resource, row, 0)
}

/// Decodes the record whose columns start at `at` (joined records follow the listed
/// one's).
fn decode_at(resource: &Resource, row: &Row, at: usize) -> Result<Record, StoreError> {
    // Columns: id, version, the timestamps, then the fields that are columns, in order.
    let mut column = at + if resource.timestamps { 4 } else { 2 };
    let mut values = Vec::with_capacity(resource.fields.len());
    for field in &resource.fields {
        values.push(if field.is_many() {
            Value::Array(Vec::new())
        } else {
            column += 1;
            decode(&field.ty, row, column - 1)?
        });
    }
    let (created_at, updated_at) = if resource.timestamps {
        (time_text(row, at + 2)?, time_text(row, at + 3)?)
    } else {
        (None, None)
    };
    Ok(Record {
        id: uuid_text(row, at)?.unwrap_or_default(),
        version: row.try_get(at + 1).map_err(bad("bigint"))?,
        created_at,
        updated_at,
        values,
    })
}

fn id_is(table: &str, id: &str) -> Expr {
    col(table, "id").eq(cast(Some(id.to_owned()), "uuid"))
}

/// See [`crate::RecordStore::list_joined`].
pub(crate) async fn select_joined(
    conn: &impl Conn,
    resource: &Resource,
    query: &ListQuery,
    joins: &[crate::Join],
    targets: &[&Resource],
) -> Result<Vec<crate::Joined>, StoreError> {
    if let Some(target) = targets
        .iter()
        .find(|t| t.fields.iter().any(|f| f.is_many()))
    {
        return Err(StoreError::Internal(format!(
            "{} has many relations and cannot be joined",
            target.name
        )));
    }
    let mut statement = statement(resource, query, true)?;
    crate::list::add_joins(&mut statement, &resource.name, joins, targets);
    let rows = conn.rows(crate::list::pg_build(&statement, query)).await?;
    let own = crate::common::expected_columns(resource).len();
    let widths: Vec<usize> = targets
        .iter()
        .map(|t| crate::common::expected_columns(t).len())
        .collect();
    let mut records = Vec::with_capacity(rows.len());
    let mut joined = Vec::with_capacity(rows.len());
    for row in &rows {
        records.push(decode_row(resource, row)?);
        let mut at = own;
        let mut found = Vec::with_capacity(targets.len());
        for (target, width) in targets.iter().zip(&widths) {
            found.push(match uuid_text(row, at)? {
                None => None,
                Some(_) => Some(decode_at(target, row, at)?),
            });
            at += width;
        }
        joined.push(found);
    }
    load_links(conn, resource, &mut records).await?;
    Ok(records.into_iter().zip(joined).collect())
}

/// Runs a list-shaped SELECT and decodes the rows, links included.
pub(crate) async fn select(
    conn: &impl Conn,
    resource: &Resource,
    mut query: ListQuery,
) -> Result<Vec<Record>, StoreError> {
    let filter = query.filter.take();
    let stmt = crate::list::pg_build(
        &crate::list::statement_with(resource, &query, filter, true)?,
        &query,
    );
    let rows = conn.rows(stmt).await?;
    let mut records = rows
        .iter()
        .map(|r| decode_row(resource, r))
        .collect::<Result<Vec<_>, _>>()?;
    load_links(conn, resource, &mut records).await?;
    Ok(records)
}

/// Fills many-relation fields with one query per relation.
async fn load_links(
    conn: &impl Conn,
    resource: &Resource,
    records: &mut [Record],
) -> Result<(), StoreError> {
    if records.is_empty() || !resource.fields.iter().any(ferrobase_schema::Field::is_many) {
        return Ok(());
    }
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let position: BTreeMap<String, usize> = ids
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    for (i, field) in resource
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_many())
    {
        let jt = join_table(&resource.name, &field.name);
        let list = Value::Array(ids.iter().cloned().map(Value::String).collect()).to_string();
        let sql = format!(
            "SELECT \"source\", \"target\" FROM {} WHERE \"source\" IN (SELECT (jsonb_array_elements_text(CAST($1 AS jsonb)))::uuid) ORDER BY \"source\", \"position\"",
            q(&jt)
        );
        let rows = conn
            .rows((sql, sea_query::Values(vec![list.into()])))
            .await?;
        for row in &rows {
            let source = uuid_text(row, 0)?.unwrap_or_default();
            let target = uuid_text(row, 1)?.unwrap_or_default();
            if let Some(&at) = position.get(&source)
                && let Value::Array(a) = &mut records[at].values[i]
            {
                a.push(Value::String(target));
            }
        }
    }
    Ok(())
}

/// One record, if it exists and satisfies `visible`.
pub(crate) async fn get(
    conn: &impl Conn,
    resource: &Resource,
    id: &str,
    visible: Option<Expr>,
) -> Result<Option<Record>, StoreError> {
    let table = resource.name.as_str();
    let filter = match visible {
        Some(v) => id_is(table, id).and(v),
        None => id_is(table, id),
    };
    let query = ListQuery {
        filter: Some(filter),
        limit: 1,
        ..ListQuery::default()
    };
    Ok(select(conn, resource, query).await?.pop())
}

/// Whether record `id` satisfies `cond`.
async fn satisfies(
    conn: &impl Conn,
    resource: &Resource,
    id: &str,
    cond: &Expr,
) -> Result<bool, StoreError> {
    let table = resource.name.as_str();
    let stmt = Query::select()
        .expr(Expr::cust("1"))
        .from(alias(table))
        .and_where(id_is(table, id))
        .and_where(cond.clone())
        .build(PostgresQueryBuilder);
    Ok(!conn.rows(stmt).await?.is_empty())
}

async fn write_links(
    conn: &impl Conn,
    resource: &Resource,
    field: usize,
    source: &str,
    targets: &Value,
    replace: bool,
) -> Result<(), StoreError> {
    let jt = q(&join_table(&resource.name, &resource.fields[field].name));
    if replace {
        let sql = format!("DELETE FROM {jt} WHERE \"source\" = CAST($1 AS uuid)");
        conn.rows((sql, sea_query::Values(vec![source.to_owned().into()])))
            .await?;
    }
    if let Value::Array(ids) = targets {
        for (pos, id) in ids.iter().enumerate() {
            if let Some(id) = id.as_str() {
                let sql = format!(
                    "INSERT INTO {jt} (\"source\", \"target\", \"position\") VALUES (CAST($1 AS uuid), CAST($2 AS uuid), $3)"
                );
                let values = sea_query::Values(vec![
                    source.to_owned().into(),
                    id.to_owned().into(),
                    (pos as i64).into(),
                ]);
                conn.rows((sql, values)).await?;
            }
        }
    }
    Ok(())
}

/// Locks the row for the rest of the transaction; whether it exists, and its version.
async fn lock(conn: &impl Conn, resource: &Resource, id: &str) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "SELECT \"version\" FROM {} WHERE \"id\" = CAST($1 AS uuid) FOR UPDATE",
        q(&resource.name)
    );
    let rows = conn
        .rows((sql, sea_query::Values(vec![id.to_owned().into()])))
        .await?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// A write transaction on PostgreSQL: [`WriteTx`] as round trips on `conn`.
pub(crate) struct PgTx<'a, C: Conn> {
    /// The transaction.
    pub conn: &'a C,
    /// The schema the records follow.
    pub schema: &'a ferrobase_schema::Schema,
}

impl<C: Conn> PgTx<'_, C> {
    fn resource(&self, res: ResourceId) -> Result<&Resource, StoreError> {
        self.schema
            .resources
            .get(res.0)
            .ok_or_else(|| StoreError::Internal(format!("unknown resource {}", res.0)))
    }
}

impl<C: Conn> WriteTx for PgTx<'_, C> {
    fn schema(&self) -> &ferrobase_schema::Schema {
        self.schema
    }

    async fn current(&self, res: ResourceId, id: &str) -> Result<Option<Record>, StoreError> {
        let resource = self.resource(res)?;
        // Lock first: the record read next is the one this transaction will change.
        if lock(self.conn, resource, id).await?.is_none() {
            return Ok(None);
        }
        get(self.conn, resource, id, None).await
    }

    async fn satisfies(&self, res: ResourceId, id: &str, cond: &Expr) -> Result<bool, StoreError> {
        satisfies(self.conn, self.resource(res)?, id, cond).await
    }

    async fn exists(
        &self,
        res: ResourceId,
        id: &str,
        cond: Option<&Expr>,
    ) -> Result<bool, StoreError> {
        let table = self.resource(res)?.name.as_str();
        let mut stmt = Query::select();
        stmt.expr(Expr::cust("1"))
            .from(alias(table))
            .and_where(id_is(table, id));
        if let Some(cond) = cond {
            stmt.and_where(cond.clone());
        }
        Ok(!self
            .conn
            .rows(stmt.build(PostgresQueryBuilder))
            .await?
            .is_empty())
    }

    async fn insert_row(
        &self,
        res: ResourceId,
        id: &str,
        now: &str,
        values: &[Value],
    ) -> Result<(), StoreError> {
        let resource = self.resource(res)?;
        let columns = expected_columns(resource);
        let stmt = Query::insert()
            .into_table(alias(&resource.name))
            .columns(columns.iter().map(|c| alias(c)))
            .values(
                row_params(resource, id, now, values)
                    .into_iter()
                    .map(param_expr),
            )
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .build(PostgresQueryBuilder);
        self.conn.rows(stmt).await?;
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
        let resource = self.resource(res)?;
        let table = resource.name.as_str();
        let mut stmt = Query::update();
        stmt.table(alias(table))
            .value(alias("version"), col(table, "version").add(1i64));
        if resource.timestamps {
            stmt.value(
                alias("updated_at"),
                cast(Some(now.to_owned()), "timestamptz"),
            );
        }
        for &i in changed.iter().filter(|&&i| !resource.fields[i].is_many()) {
            let field = &resource.fields[i];
            stmt.value(alias(&field.name), encode(&field.ty, &values[i]));
        }
        stmt.and_where(id_is(table, id));
        self.conn.rows(stmt.build(PostgresQueryBuilder)).await?;
        Ok(())
    }

    async fn referencing(
        &self,
        res: ResourceId,
        field: usize,
        target: &str,
    ) -> Result<Vec<String>, StoreError> {
        let resource = self.resource(res)?;
        let sql = format!(
            "SELECT \"id\"::text FROM {} WHERE {} = CAST($1 AS uuid) FOR UPDATE",
            q(&resource.name),
            q(&resource.fields[field].name)
        );
        let rows = self
            .conn
            .rows((sql, sea_query::Values(vec![target.to_owned().into()])))
            .await?;
        Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect())
    }

    async fn delete_row(&self, res: ResourceId, id: &str) -> Result<(), StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE \"id\" = CAST($1 AS uuid)",
            q(&self.resource(res)?.name)
        );
        self.conn
            .rows((sql, sea_query::Values(vec![id.to_owned().into()])))
            .await
            .map_err(|e| match e {
                StoreError::BrokenRelation { .. } => StoreError::Referenced,
                other => other,
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
        write_links(
            self.conn,
            self.resource(res)?,
            field,
            source,
            targets,
            replace,
        )
        .await
    }

    /// The record was written first in the same transaction, so the transaction has its
    /// id before the sequence hands out the `seq` (which [`crate::EventFollower`] relies
    /// on).
    async fn append_event(&self, draft: &Draft) -> Result<i64, StoreError> {
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES (",
            q(EVENTS),
            column_list(&EVENT_COLUMNS)
        );
        let mut params = Vec::new();
        placeholders(&mut sql, &mut params, event_params(draft));
        sql.push_str(") RETURNING \"seq\"");
        let rows = self.conn.rows((sql, sea_query::Values(params))).await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    async fn revoke_sessions(&self, user_id: &str, now: &str) -> Result<(), StoreError> {
        super::auth::revoke_user(self.conn, user_id, now).await
    }
}

const EVENTS: &str = "_ferrobase_events";
const EVENT_COLUMNS: [&str; 8] = [
    "resource",
    "op",
    "record_id",
    "version",
    "actor",
    "at",
    "record",
    "previous",
];

/// The parameters of an event's row, in [`EVENT_COLUMNS`] order.
fn event_params(draft: &Draft) -> [Param; 8] {
    let text = |s: &str| SqlValue::from(s.to_owned());
    [
        (text(&draft.resource), None),
        (text(draft.op.as_str()), None),
        (text(&draft.id), Some("uuid")),
        (draft.version.into(), None),
        (draft.actor.clone().into(), None),
        (text(&draft.at), Some("timestamptz")),
        (text(&draft.record), Some("jsonb")),
        (draft.previous.clone().into(), Some("jsonb")),
    ]
}

/// The parameters of a new record's row, in [`expected_columns`] order.
fn row_params(resource: &Resource, id: &str, now: &str, values: &[Value]) -> Vec<Param> {
    let text = |s: &str| SqlValue::from(s.to_owned());
    let mut row: Vec<Param> = vec![(text(id), Some("uuid")), (1i64.into(), None)];
    if resource.timestamps {
        row.push((text(now), Some("timestamptz")));
        row.push((text(now), Some("timestamptz")));
    }
    for i in column_fields(resource) {
        row.push(bind(&resource.fields[i].ty, &values[i]));
    }
    row
}

/// Whether a create can run as one statement ([`insert_at_once`]): no many relation
/// (its links are rows of their own) and no rule to judge the stored record by.
pub(crate) fn insert_fits_one_statement(resource: &Resource, allowed: Option<&Expr>) -> bool {
    allowed.is_none() && !resource.fields.iter().any(ferrobase_schema::Field::is_many)
}

/// A create as one statement, which PostgreSQL runs atomically without a transaction
/// around it: the relation checks, the row when every check holds, and its event after
/// the row (so the transaction has its id before the event takes its `seq`, which
/// [`crate::EventFollower`] relies on). One round trip, where the shared write routine
/// needs a transaction and a round trip per step. The same checks and the same errors
/// as [`crate::write::insert`]: the caller uses it only where
/// [`insert_fits_one_statement`].
///
/// A create with no relation to check here goes to the group writer when there is one
/// ([`super::group`]), which writes it with the creates queued beside it.
pub(crate) async fn insert_at_once(
    store: &super::PgStore,
    res: ResourceId,
    resource: &Resource,
    record: crate::NewRecord,
) -> Result<Record, StoreError> {
    use std::fmt::Write as _;
    let schema = &store.schema;
    let (stored, draft, targets) = crate::write::new_record(resource, record);
    // A relation whose target needs no rule condition is left to the foreign key, which
    // PostgreSQL checks anyway (its refusal names the field as the check would: see
    // `StoreError::from`); only targets the writer must also be allowed to see are
    // checked here.
    let mut checks = crate::write::relation_checks(
        schema,
        resource,
        &targets,
        stored.values.iter().enumerate(),
    )?;
    checks.retain(|check| check.cond.is_some());
    if checks.is_empty()
        && let Some(creates) = &store.creates
    {
        store.ready()?;
        creates
            .write(res, create_params(resource, &stored, &draft))
            .await?;
        return Ok(stored);
    }
    let client = store.client().await?;
    let conn: &deadpool_postgres::ClientWrapper = &client;
    // Written out rather than built as a sea-query tree: this is every create's hot
    // path, and building, cloning (a WITH clause is cloned into its query) and dropping
    // the tree took a tenth of a create's CPU. Only the relation checks, which carry
    // rule conditions, are built by sea-query, first, so their parameters come first.
    let mut sql = String::with_capacity(1024);
    let mut params = Vec::new();
    sql.push_str("WITH ");
    let found: Vec<String> = (0..checks.len()).map(|i| format!("found_{i}")).collect();
    if !checks.is_empty() {
        let mut select = Query::select();
        for (check, name) in checks.iter().zip(&found) {
            let table = schema.resources[check.target.0].name.as_str();
            let mut target = Query::select();
            target
                .expr(Expr::cust("1"))
                .from(alias(table))
                .and_where(id_is(table, check.id));
            if let Some(cond) = check.cond {
                target.and_where(cond.clone());
            }
            select.expr_as(Expr::exists(target), alias(name));
        }
        let (text, values) = select.build(PostgresQueryBuilder);
        let _ = write!(sql, "\"found\" AS ({text}), ");
        params = values.0;
    }
    let _ = write!(
        sql,
        "\"new_row\" AS (INSERT INTO {} ({}) SELECT ",
        q(&resource.name),
        column_list(&expected_columns(resource))
    );
    placeholders(
        &mut sql,
        &mut params,
        row_params(resource, &stored.id, &draft.at, &stored.values),
    );
    if !checks.is_empty() {
        let all = found.iter().map(|n| q(n)).collect::<Vec<_>>().join(" AND ");
        let _ = write!(sql, " FROM \"found\" WHERE {all}");
    }
    let _ = write!(
        sql,
        " RETURNING \"id\"), \"new_event\" AS (INSERT INTO {} ({}) SELECT ",
        q(EVENTS),
        column_list(&EVENT_COLUMNS)
    );
    placeholders(&mut sql, &mut params, event_params(&draft));
    sql.push_str(
        " FROM \"new_row\" RETURNING \"seq\") SELECT (SELECT count(*) FROM \"new_event\")",
    );
    if !checks.is_empty() {
        let _ = write!(sql, ", {} FROM \"found\"", column_list(&found));
    }
    let rows = conn.rows((sql, sea_query::Values(params))).await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Internal("a create answered no row".into()))?;
    let written: i64 = row.try_get(0).map_err(bad("bigint"))?;
    let found = (1..=checks.len())
        .map(|i| row.try_get::<_, bool>(i).map_err(bad("boolean")))
        .collect::<Result<Vec<_>, _>>()?;
    crate::write::relations_found(&checks, found)?;
    if written != 1 {
        return Err(StoreError::Internal(format!(
            "a create wrote {written} events"
        )));
    }
    Ok(stored)
}

/// The parameters of a create that [`insert_many`] writes: its row's, in
/// [`expected_columns`] order, then its event's.
pub(crate) fn create_params(resource: &Resource, stored: &Record, draft: &Draft) -> Vec<Param> {
    let mut params = row_params(resource, &stored.id, &draft.at, &stored.values);
    params.extend(event_params(draft));
    params
}

/// Creates of one resource as one statement whose parameters are arrays, a column each:
/// first the rows' columns in [`expected_columns`] order, then the events' (each create's
/// [`create_params`], cast as `casts` says). The rows are written, and an event for every
/// row written, joined to it so that rows are written before events take their `seq`, as
/// in [`insert_at_once`]. Answers the number of events written. One text for any number of
/// creates, so one prepared statement per resource; one statement is one transaction: all
/// are written or none.
pub(crate) fn insert_many(resource: &Resource, casts: &[Option<&str>]) -> String {
    use std::fmt::Write as _;
    let columns = expected_columns(resource);
    let (row, event) = casts.split_at(columns.len().min(casts.len()));
    // `SELECT <the columns, cast> FROM unnest($first, ...) AS "<name>" ("c0", ...)`
    let select = |sql: &mut String, name: &str, first: usize, casts: &[Option<&str>]| {
        sql.push_str("SELECT ");
        for (i, cast) in casts.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            let _ = match cast {
                Some(pg_type) => write!(sql, "{comma}CAST(\"{name}\".\"c{i}\" AS {pg_type})"),
                None => write!(sql, "{comma}\"{name}\".\"c{i}\""),
            };
        }
        sql.push_str(" FROM unnest(");
        for i in 0..casts.len() {
            let comma = if i == 0 { "" } else { ", " };
            let _ = write!(sql, "{comma}${}", first + i);
        }
        let _ = write!(sql, ") AS \"{name}\" (");
        for i in 0..casts.len() {
            let comma = if i == 0 { "" } else { ", " };
            let _ = write!(sql, "{comma}\"c{i}\"");
        }
        sql.push(')');
    };
    let mut sql = String::with_capacity(1024);
    let _ = write!(
        sql,
        "WITH \"new_row\" AS (INSERT INTO {} ({}) ",
        q(&resource.name),
        column_list(&columns)
    );
    select(&mut sql, "r", 1, row);
    let _ = write!(
        sql,
        " RETURNING \"id\"), \"new_event\" AS (INSERT INTO {} ({}) ",
        q(EVENTS),
        column_list(&EVENT_COLUMNS),
    );
    select(&mut sql, "e", 1 + row.len(), event);
    let record_id = EVENT_COLUMNS
        .iter()
        .position(|c| *c == "record_id")
        .unwrap_or_default();
    let _ = write!(
        sql,
        " JOIN \"new_row\" ON \"new_row\".\"id\" = CAST(\"e\".\"c{record_id}\" AS uuid) RETURNING \"seq\") SELECT count(*) FROM \"new_event\""
    );
    sql
}

/// Events with `seq` in `(position, upto]`, at most `limit`, in `seq` order.
pub(crate) async fn events_between(
    conn: &impl Conn,
    position: i64,
    upto: i64,
    resource: Option<&str>,
    limit: usize,
) -> Result<Vec<RecordEvent>, StoreError> {
    let sql = "SELECT \"seq\", \"resource\", \"op\", \"record_id\", \"version\", \"actor\", \"at\", \"record\", \"previous\" FROM \"_ferrobase_events\" WHERE \"seq\" > $1 AND \"seq\" <= $2 AND (CAST($4 AS text) IS NULL OR \"resource\" = CAST($4 AS text)) ORDER BY \"seq\" LIMIT $3";
    let values = sea_query::Values(vec![
        position.into(),
        upto.into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
        resource.map(str::to_owned).into(),
    ]);
    let rows = conn.rows((sql.to_owned(), values)).await?;
    rows.iter()
        .map(|row| {
            let op: String = row.try_get(2).map_err(bad("text"))?;
            Ok(RecordEvent {
                seq: row.try_get(0).map_err(bad("bigint"))?,
                resource: row.try_get(1).map_err(bad("text"))?,
                op: EventOp::parse(&op)
                    .ok_or_else(|| StoreError::Internal(format!("unknown event op {op}")))?,
                id: uuid_text(row, 3)?.unwrap_or_default(),
                version: row.try_get(4).map_err(bad("bigint"))?,
                actor: row.try_get(5).map_err(bad("text"))?,
                at: time_text(row, 6)?.unwrap_or_default(),
                record: row
                    .try_get::<_, Option<Value>>(7)
                    .map_err(bad("jsonb"))?
                    .unwrap_or(Value::Null),
                previous: row.try_get(8).map_err(bad("jsonb"))?,
            })
        })
        .collect()
}

pub(crate) async fn count(
    conn: &impl Conn,
    resource: &Resource,
    filter: Option<Expr>,
) -> Result<u64, StoreError> {
    let mut stmt = Query::select();
    stmt.expr(Expr::cust("COUNT(*)"))
        .from(alias(&resource.name));
    if let Some(f) = filter {
        stmt.and_where(f);
    }
    let rows = conn.rows(stmt.build(PostgresQueryBuilder)).await?;
    let n: i64 = rows.first().map_or(0, |r| r.get(0));
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(crate) async fn count_by(
    conn: &impl Conn,
    resource: &Resource,
    filter: Option<Expr>,
    column: &str,
    ids: &[String],
) -> Result<Vec<(String, u64)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = crate::list::count_by_statement(resource, filter, column, ids, true)
        .build(PostgresQueryBuilder);
    let rows = conn.rows(statement).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(1);
            (r.get::<_, String>(0), u64::try_from(n).unwrap_or(0))
        })
        .collect())
}

pub(crate) async fn get_many(
    conn: &impl Conn,
    resource: &Resource,
    ids: Vec<String>,
    visible: Option<Expr>,
) -> Result<Vec<Record>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // No LIMIT: the ids bound the rows, and one statement serves every number of ids.
    let limit = u32::MAX;
    let list = Value::Array(ids.into_iter().map(Value::String).collect()).to_string();
    let among = Expr::cust_with_values(
        format!(
            "{}.\"id\" IN (SELECT (jsonb_array_elements_text(CAST($1 AS jsonb)))::uuid)",
            q(&resource.name)
        ),
        [list],
    );
    let filter = match visible {
        Some(v) => among.and(v),
        None => among,
    };
    select(
        conn,
        resource,
        ListQuery {
            filter: Some(filter),
            limit,
            ..ListQuery::default()
        },
    )
    .await
}

pub(crate) async fn explain(
    conn: &impl Conn,
    resource: &Resource,
    query: &ListQuery,
) -> Result<Vec<String>, StoreError> {
    let (sql, values) = crate::list::pg_build(&statement(resource, query, true)?, query);
    let rows = conn.rows((format!("EXPLAIN {sql}"), values)).await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// The `seq` and time of the last event at or before `seq`.
pub(crate) async fn event_at_or_before(
    conn: &impl Conn,
    seq: i64,
) -> Result<Option<(i64, String)>, StoreError> {
    let sql = "SELECT \"seq\", \"at\" FROM \"_ferrobase_events\" WHERE \"seq\" <= $1 ORDER BY \"seq\" DESC LIMIT 1";
    let rows = conn
        .rows((sql.to_owned(), sea_query::Values(vec![seq.into()])))
        .await?;
    match rows.first() {
        None => Ok(None),
        Some(row) => Ok(Some((
            row.try_get(0).map_err(bad("bigint"))?,
            time_text(row, 1)?.unwrap_or_default(),
        ))),
    }
}

/// Judges conditions against a record held in memory (see
/// [`crate::common::judge_statement`]).
pub(crate) async fn judge(
    conn: &impl Conn,
    resource: &Resource,
    record: &Record,
    conds: Vec<Expr>,
) -> Result<Vec<bool>, StoreError> {
    let n = conds.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let stmt = crate::common::judge_statement(resource, record, conds, encode);
    let rows = conn.rows(stmt.build(PostgresQueryBuilder)).await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Internal("a judgement returned no row".into()))?;
    (0..n)
        .map(|i| {
            Ok(row
                .try_get::<_, Option<bool>>(i)
                .map_err(bad("boolean"))?
                .unwrap_or(false))
        })
        .collect()
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn microseconds_are_written_as_format_datetime_writes_them() {
        let epoch = time::macros::datetime!(2000-01-01 00:00 UTC);
        let day: i64 = 86_400_000_000;
        let mut samples = vec![
            0,
            -1,
            1,
            59 * day + 123_456,      // 2000-02-29
            -36_524 * day + 999_999, // 1900-01-01
            -730_485 * day,          // year 0
            -730_486 * day,          // before year 0: not written here
            2_916_996 * day - 1,     // 9999-12-31T23:59:59.999999
            2_916_996 * day,         // year 10000: not written here
        ];
        // A spread of instants across the range, each at an odd time of day.
        let mut us: i64 = -730_485 * day;
        while us < 2_916_996 * day {
            samples.push(us);
            us += 7_919 * day + 3_723_000_017;
        }
        for us in samples {
            let at = epoch + time::Duration::microseconds(us);
            let expected = (0..=9999).contains(&at.year()).then(|| format_datetime(at));
            assert_eq!(micros_text(us), expected, "{us}");
        }
    }
}
