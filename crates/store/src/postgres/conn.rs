//! Running sea-query statements on PostgreSQL: every parameter is bound with the type its
//! value has (text, bigint, double, boolean); columns of other types get explicit casts
//! in the SQL, so no statement depends on parameter type inference.

use std::future::Future;

use deadpool_postgres::{ClientWrapper, Transaction};
use sea_query::{Value as SqlValue, Values};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::StoreError;

type Param = Box<dyn ToSql + Sync + Send>;

pub(crate) fn typed(values: Values) -> Vec<(Param, Type)> {
    values
        .into_iter()
        .map(|v| -> (Param, Type) {
            match v {
                SqlValue::Bool(b) => (Box::new(b), Type::BOOL),
                SqlValue::Int(i) => (Box::new(i.map(i64::from)), Type::INT8),
                SqlValue::BigInt(i) => (Box::new(i), Type::INT8),
                SqlValue::Unsigned(u) => (Box::new(u.map(i64::from)), Type::INT8),
                SqlValue::BigUnsigned(u) => (
                    Box::new(u.map(|u| i64::try_from(u).unwrap_or(i64::MAX))),
                    Type::INT8,
                ),
                SqlValue::Double(f) => (Box::new(f), Type::FLOAT8),
                SqlValue::Float(f) => (Box::new(f.map(f64::from)), Type::FLOAT8),
                SqlValue::String(s) => (Box::new(s), Type::TEXT),
                SqlValue::Bytes(b) => (Box::new(b), Type::BYTEA),
                _ => (Box::new(None::<String>), Type::TEXT),
            }
        })
        .collect()
}

/// The parameters with their types, for a statement sent unprepared.
pub(crate) fn with_types(params: &[(Param, Type)]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params
        .iter()
        .map(|(p, t)| (p.as_ref() as &(dyn ToSql + Sync), t.clone()))
        .collect()
}

/// The parameters' types, to prepare a statement with.
pub(crate) fn types(params: &[(Param, Type)]) -> Vec<Type> {
    params.iter().map(|(_, t)| t.clone()).collect()
}

/// The parameters, for a prepared statement.
pub(crate) fn refs(params: &[(Param, Type)]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|(p, _)| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Something statements run on: a pooled client or a transaction.
pub(crate) trait Conn: Sync {
    /// Runs a statement and returns its rows.
    fn rows(
        &self,
        statement: (String, Values),
    ) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;
}

/// Whether statements are prepared once per connection and kept (`[database]
/// statement_cache`). One setting per process: a process serves one database.
static STATEMENT_CACHE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether statements are prepared and kept (see [`cache_statements`]).
pub(crate) fn caching() -> bool {
    STATEMENT_CACHE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns the statement cache on or off for this process.
pub(crate) fn cache_statements(on: bool) {
    STATEMENT_CACHE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Statements are prepared once per connection and kept (keyed by SQL text and parameter
/// types), so repeated requests skip parsing and planning round trips. Without the cache
/// each statement goes unprepared with its parameter types (one round trip, parsed and
/// planned every time).
macro_rules! conn_impl {
    ($t:ty) => {
        impl Conn for $t {
            async fn rows(&self, (sql, values): (String, Values)) -> Result<Vec<Row>, StoreError> {
                let params = typed(values);
                if !caching() {
                    return Ok(self.query_typed(&sql, &with_types(&params)).await?);
                }
                let statement = self.prepare_typed_cached(&sql, &types(&params)).await?;
                Ok(self.query(&statement, &refs(&params)).await?)
            }
        }
    };
}

conn_impl!(ClientWrapper);
conn_impl!(Transaction<'_>);

/// A text value for a column of PostgreSQL type `pg_type`.
pub(crate) fn cast(text: Option<String>, pg_type: &str) -> sea_query::Expr {
    sea_query::ExprTrait::cast_as(sea_query::Expr::val(text), pg_type.to_owned())
}
