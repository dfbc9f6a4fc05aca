//! The list query: filter, keyset position, order and page, built once for any dialect.

use ferrobase_schema::Resource;
use sea_query::{
    Alias, Expr, ExprTrait, NullOrdering, Order, Query, SelectStatement, WindowStatement,
};
use serde_json::Value;

use crate::common::expected_columns;
use crate::{ResourceId, StoreError};

/// How a sort key's values are stored, to bind cursor values with the right type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Text.
    Text,
    /// A record id or UUID (text on SQLite).
    Uuid,
    /// An instant (canonical text on SQLite).
    Timestamp,
    /// A calendar date (text on SQLite).
    Date,
    /// Integer.
    Integer,
    /// Double.
    Real,
    /// Boolean.
    Bool,
}

/// One key of an ordering.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Column name (checked against the schema).
    pub column: String,
    /// Descending order.
    pub descending: bool,
    /// Whether the column may hold NULL (NULLs sort first ascending, last descending).
    pub nullable: bool,
    /// Stored type.
    pub ty: KeyType,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Condition over the resource's table (filter and list rule, compiled).
    pub filter: Option<Expr>,
    /// Ordering; the last key must be unique (`id`) so the order is total.
    pub order: Vec<SortKey>,
    /// Start after the record with these sort values (a cursor).
    pub after: Option<Vec<Value>>,
    /// Most records to return.
    pub limit: u32,
    /// Records to skip (offset pages).
    pub offset: u64,
    /// Records of several parents at once: `limit` applies to each parent's records.
    pub per_parent: Option<PerParent>,
}

/// A single relation whose target records are read in the same statement as the records
/// pointing at them (`LEFT JOIN`): a page and, say, every post's author in one round trip.
#[derive(Debug, Clone)]
pub struct Join {
    /// The relation column of the listed resource.
    pub column: String,
    /// The target resource (one without many relations: those need a query of their own).
    pub target: ResourceId,
    /// The alias the target's table goes by in the statement (and in `visible`).
    pub alias: String,
    /// Which target records the caller may see, over `alias` (`None`: all).
    pub visible: Option<Expr>,
}

/// A record with the targets of its joins (`None`: no target, or not visible).
pub type Joined = (crate::Record, Vec<Option<crate::Record>>);

/// Adds each join's `LEFT JOIN` and its columns (after the listed resource's own, in
/// join order) to a list statement over `table`.
pub(crate) fn add_joins(
    q: &mut SelectStatement,
    table: &str,
    joins: &[Join],
    targets: &[&Resource],
) {
    for (join, target) in joins.iter().zip(targets) {
        let alias = Alias::new(join.alias.as_str());
        let mut on = Expr::col((alias.clone(), Alias::new("id")))
            .equals((Alias::new(table), Alias::new(join.column.as_str())));
        if let Some(visible) = &join.visible {
            on = on.and(visible.clone());
        }
        q.join_as(
            sea_query::JoinType::LeftJoin,
            Alias::new(target.name.as_str()),
            alias.clone(),
            on,
        );
        q.columns(
            expected_columns(target)
                .iter()
                .map(|c| (alias.clone(), Alias::new(c.as_str()))),
        );
    }
}

/// The records that point at any of several parents through one single relation, each
/// parent's first `limit` (the reverse of a relation, loaded for a whole page of parents
/// in one statement).
#[derive(Debug, Clone, Default)]
pub struct PerParent {
    /// The relation column that holds the parent's id.
    pub column: String,
    /// The parents' ids.
    pub ids: Vec<String>,
}

fn col(table: &str, column: &str) -> Expr {
    Expr::col((Alias::new(table), Alias::new(column)))
}

fn bind(key: &SortKey, v: &Value, postgres: bool) -> Result<Option<Expr>, StoreError> {
    let bad = || StoreError::BadCursor;
    let text = |s: &str, pg_type: &str| {
        let e = Expr::val(s.to_owned());
        if postgres {
            e.cast_as(pg_type.to_owned())
        } else {
            e
        }
    };
    Ok(match (key.ty, v) {
        (_, Value::Null) if key.nullable => None,
        (KeyType::Text, Value::String(s)) => Some(Expr::val(s.clone())),
        (KeyType::Uuid, Value::String(s)) => Some(text(s, "uuid")),
        (KeyType::Timestamp, Value::String(s)) => Some(text(s, "timestamptz")),
        (KeyType::Date, Value::String(s)) => Some(text(s, "date")),
        (KeyType::Integer, Value::Number(n)) => Some(Expr::val(n.as_i64().ok_or_else(bad)?)),
        (KeyType::Real, Value::Number(n)) => Some(Expr::val(n.as_f64().ok_or_else(bad)?)),
        (KeyType::Bool, Value::Bool(b)) => Some(Expr::val(*b)),
        _ => return Err(bad()),
    })
}

/// Rows strictly after `values` in the order of `keys` (NULLs are the smallest values).
fn keyset(
    table: &str,
    keys: &[SortKey],
    values: &[Value],
    postgres: bool,
) -> Result<Expr, StoreError> {
    if keys.len() != values.len() || keys.is_empty() {
        return Err(StoreError::BadCursor);
    }
    let bound: Vec<Option<Expr>> = keys
        .iter()
        .zip(values)
        .map(|(k, v)| bind(k, v, postgres))
        .collect::<Result<_, _>>()?;
    // One row-value comparison when every key is non-null and all go the same way: the
    // form an index serves best.
    let same_direction = keys.iter().all(|k| k.descending == keys[0].descending);
    if same_direction && bound.iter().all(Option::is_some) && keys.iter().all(|k| !k.nullable) {
        let lhs = Expr::tuple(keys.iter().map(|k| col(table, &k.column)));
        let rhs = Expr::tuple(bound.into_iter().flatten());
        return Ok(if keys[0].descending {
            lhs.lt(rhs)
        } else {
            lhs.gt(rhs)
        });
    }
    let mut any: Option<Expr> = None;
    for i in 0..keys.len() {
        let mut term: Option<Expr> = None;
        for (k, v) in keys[..i].iter().zip(&bound[..i]) {
            let c = col(table, &k.column);
            let eq = match v {
                None => c.is_null(),
                Some(v) => c.eq(v.clone()),
            };
            term = Some(match term {
                None => eq,
                Some(t) => t.and(eq),
            });
        }
        let (k, v) = (&keys[i], &bound[i]);
        let c = col(table, &k.column);
        let after = match (k.descending, v) {
            (false, None) => Some(c.is_not_null()),
            (false, Some(v)) => Some(c.gt(v.clone())),
            (true, None) => None,
            (true, Some(v)) if k.nullable => Some(c.clone().lt(v.clone()).or(c.is_null())),
            (true, Some(v)) => Some(c.lt(v.clone())),
        };
        let Some(after) = after else { continue };
        let term = match term {
            None => after,
            Some(t) => t.and(after),
        };
        any = Some(match any {
            None => term,
            Some(a) => a.or(term),
        });
    }
    Ok(any.unwrap_or_else(|| Expr::cust("FALSE")))
}

/// The SELECT for a list query over `resource`'s table.
pub(crate) fn list_statement(
    resource: &Resource,
    query: &ListQuery,
) -> Result<SelectStatement, StoreError> {
    statement(resource, query, false)
}

/// The SELECT of a list query; for PostgreSQL, cursor values are cast to their column
/// types and NULLs are placed explicitly (PostgreSQL sorts them last by default, SQLite
/// first: both sort them first ascending here).
pub(crate) fn statement(
    resource: &Resource,
    query: &ListQuery,
    postgres: bool,
) -> Result<SelectStatement, StoreError> {
    statement_with(resource, query, query.filter.clone(), postgres)
}

/// [`statement`] with `query`'s filter given apart, for callers that own it (a filter is
/// a tree of many small allocations; cloning it showed in the profile of a list).
pub(crate) fn statement_with(
    resource: &Resource,
    query: &ListQuery,
    filter: Option<Expr>,
    postgres: bool,
) -> Result<SelectStatement, StoreError> {
    let table = resource.name.as_str();
    let mut q = Query::select();
    q.expr(Expr::cust(select_list(resource)))
        .from(Alias::new(table));
    if let Some(filter) = filter {
        q.and_where(filter);
    }
    if let Some(after) = &query.after {
        q.and_where(keyset(table, &query.order, after, postgres)?);
    }
    if let Some(per) = &query.per_parent {
        return Ok(per_parent(resource, query, per, q, postgres));
    }
    for key in &query.order {
        let order = if key.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        let column = (Alias::new(table), Alias::new(key.column.as_str()));
        if postgres && key.nullable {
            let nulls = if key.descending {
                NullOrdering::Last
            } else {
                NullOrdering::First
            };
            q.order_by_with_nulls(column, order, nulls);
        } else {
            q.order_by(column, order);
        }
    }
    if !postgres {
        q.limit(u64::from(query.limit)).offset(query.offset);
    }
    // PostgreSQL: the limit goes into the text ([`pg_build`]).
    Ok(q)
}

/// A list statement built for PostgreSQL, its `LIMIT` written into the text: bound as a
/// parameter, PostgreSQL kept choosing a custom plan, planning the statement again on
/// every execution (a primary-key read with a join went from 34,000 to 10,800 a second
/// under pgbench). Limits are few (page sizes), so few statements are prepared; a
/// non-zero offset (offset pages) stays a parameter, as its values are many.
pub(crate) fn pg_build(
    statement: &SelectStatement,
    query: &ListQuery,
) -> (String, sea_query::Values) {
    use std::fmt::Write;
    let (mut sql, mut values) = statement.build(sea_query::PostgresQueryBuilder);
    if query.per_parent.is_none() {
        if query.limit != u32::MAX {
            let _ = write!(sql, " LIMIT {}", query.limit);
        }
        if query.offset > 0 {
            values
                .0
                .push(sea_query::Value::BigUnsigned(Some(query.offset)));
            let _ = write!(sql, " OFFSET ${}", values.0.len());
        }
    }
    (sql, values)
}

/// Wraps the filtered SELECT `inner`: each row ranked within its parent in the list's
/// order, the first `limit` of each parent kept, ordered by parent, then as the list.
fn per_parent(
    resource: &Resource,
    query: &ListQuery,
    per: &PerParent,
    mut inner: SelectStatement,
    postgres: bool,
) -> SelectStatement {
    let table = resource.name.as_str();
    inner.and_where(among_ids(table, &per.column, &per.ids, postgres));
    let mut window =
        WindowStatement::partition_by((Alias::new(table), Alias::new(per.column.as_str())));
    for key in &query.order {
        let order = if key.descending {
            Order::Desc
        } else {
            Order::Asc
        };
        let column = (Alias::new(table), Alias::new(key.column.as_str()));
        if postgres && key.nullable {
            let nulls = if key.descending {
                NullOrdering::Last
            } else {
                NullOrdering::First
            };
            window.order_by_with_nulls(column, order, nulls);
        } else {
            window.order_by(column, order);
        }
    }
    inner.expr_window_as(Expr::cust("ROW_NUMBER()"), window, Alias::new(RANK));
    let mut outer = Query::select();
    outer
        .columns(
            expected_columns(resource)
                .iter()
                .map(|c| (Alias::new(table), Alias::new(c.as_str()))),
        )
        .from_subquery(inner, Alias::new(table))
        .and_where(Expr::col((Alias::new(table), Alias::new(RANK))).lte(i64::from(query.limit)))
        .order_by(
            (Alias::new(table), Alias::new(per.column.as_str())),
            Order::Asc,
        )
        .order_by((Alias::new(table), Alias::new(RANK)), Order::Asc);
    outer
}

/// `"table"."column" IN (ids)`, the ids bound as one JSON array (one statement shape
/// whatever their number).
fn among_ids(table: &str, column: &str, ids: &[String], postgres: bool) -> Expr {
    let list = Value::Array(ids.iter().cloned().map(Value::String).collect()).to_string();
    let sql = if postgres {
        format!(
            "{}.{} IN (SELECT (jsonb_array_elements_text(CAST($1 AS jsonb)))::uuid)",
            quoted(table),
            quoted(column)
        )
    } else {
        format!(
            "{}.{} IN (SELECT value FROM json_each(?))",
            quoted(table),
            quoted(column)
        )
    };
    Expr::cust_with_values(sql, [list])
}

/// How many records satisfying `filter` point at each of `ids` through `column` (a
/// single relation): `SELECT column, COUNT(*) ... GROUP BY column`, the column as text.
pub(crate) fn count_by_statement(
    resource: &Resource,
    filter: Option<Expr>,
    column: &str,
    ids: &[String],
    postgres: bool,
) -> SelectStatement {
    let table = resource.name.as_str();
    let mut q = Query::select();
    q.expr(Expr::cust(format!(
        "CAST({}.{} AS TEXT)",
        quoted(table),
        quoted(column)
    )))
    .expr(Expr::cust("COUNT(*)"))
    .from(Alias::new(table))
    .and_where(among_ids(table, column, ids, postgres))
    .group_by_col((Alias::new(table), Alias::new(column)));
    if let Some(filter) = filter {
        q.and_where(filter);
    }
    q
}

/// The rank column of [`per_parent`]'s inner statement.
const RANK: &str = "__rank";

fn quoted(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_quoted(&mut out, name);
    out
}

/// Appends `name` as a quoted identifier (`"` doubled inside).
fn push_quoted(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// `"table"."column", ...` over [`expected_columns`]: the columns of a list as one piece
/// of text, quoted as both builders quote them (one string per statement instead of two
/// names per column).
fn select_list(resource: &Resource) -> String {
    let mut out = String::with_capacity(32 * (resource.fields.len() + 4));
    for (i, column) in crate::common::column_names(resource).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_quoted(&mut out, &resource.name);
        out.push('.');
        push_quoted(&mut out, column);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_query::SqliteQueryBuilder;
    use serde_json::json;

    fn key(column: &str, descending: bool, nullable: bool) -> SortKey {
        SortKey {
            column: column.into(),
            descending,
            nullable,
            ty: KeyType::Text,
        }
    }

    #[test]
    fn keyset_uses_a_row_value_when_it_can() {
        let keys = [key("created_at", true, false), key("id", true, false)];
        let e = keyset("posts", &keys, &[json!("t"), json!("i")], false).expect("keyset");
        let sql = Query::select()
            .expr(Expr::cust("1"))
            .and_where(e)
            .to_string(SqliteQueryBuilder);
        assert!(
            sql.contains(r#"("posts"."created_at", "posts"."id") < ('t', 'i')"#),
            "{sql}"
        );
    }

    #[test]
    fn keyset_handles_nulls_and_mixed_directions() {
        let keys = [key("title", false, true), key("id", true, false)];
        let e = keyset("t", &keys, &[Value::Null, json!("i")], false).expect("keyset");
        let sql = Query::select()
            .expr(Expr::cust("1"))
            .and_where(e)
            .to_string(SqliteQueryBuilder);
        assert!(sql.contains(r#""t"."title" IS NOT NULL"#), "{sql}");
        assert!(
            sql.contains(r#""t"."title" IS NULL AND "t"."id" < 'i'"#),
            "{sql}"
        );
        assert!(
            keyset("t", &keys, &[json!(1), json!("i")], false).is_err(),
            "type mismatch"
        );
        assert!(
            keyset("t", &keys, &[json!("a")], false).is_err(),
            "wrong length"
        );
    }
}
