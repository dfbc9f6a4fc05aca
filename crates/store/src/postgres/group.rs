//! Group commit of creates (`[database] create_batch`, `create_writers`).
//!
//! A create written on its own is a statement and a transaction of its own: PostgreSQL
//! parses its parameters, starts and commits a transaction, waits for the WAL to reach the
//! disk, and answers; the server sends it and reads the answer. Written together, creates
//! share all of that. So creates go to a queue, and at most `create_writers` statements
//! write them, each taking every create queued (up to `create_batch`) when it starts. A
//! create alone is written at once; under load, those that arrive while the writers are
//! busy are written in the next statement, one row and one event each, and each create is
//! answered when that statement has committed.
//!
//! Only creates whose relations PostgreSQL's foreign keys check in full take this way (see
//! [`super::records::insert_at_once`]). A statement is all or nothing: when PostgreSQL
//! refuses one (a duplicate unique value, a relation to no record, a deadlock with another
//! statement), nothing of it was written, and each of its creates is written again on its
//! own, so that each gets its own answer.

use std::sync::Arc;

use deadpool_postgres::{ClientWrapper, Pool};
use ferrobase_schema::{Resource, Schema};
use sea_query::Value as SqlValue;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::types::{ToSql, Type};

use super::conn::caching;
use super::records::{Param, insert_many};
use crate::{ResourceId, StoreError};

/// Creates that may wait for a writer; more wait to be queued.
const QUEUE: usize = 4096;

/// The queue of creates and the writers that take from it.
pub(crate) struct Creates {
    queue: mpsc::Sender<Job>,
}

/// One create waiting to be written.
struct Job {
    res: ResourceId,
    values: Vec<SqlValue>,
    /// The casts of its values, which the statement's text spells out.
    casts: Vec<Option<&'static str>>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl Creates {
    /// Starts the writers: at most `writers` statements at a time on connections of `pool`,
    /// each writing at most `batch` creates.
    ///
    /// Each statement that writes creates counts once in `written`, even when the requests
    /// that made them are gone by then.
    pub(crate) fn start(
        pool: Pool,
        schema: Arc<Schema>,
        written: Written,
        writers: usize,
        batch: usize,
    ) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let writer = Writer {
            pool,
            schema,
            written,
        };
        tokio::spawn(take_turns(
            jobs,
            Arc::new(writer),
            writers.max(1),
            batch.max(1),
        ));
        Self { queue }
    }

    /// Writes a create of `res` (its [`super::records::create_params`]) and answers when it
    /// has committed.
    pub(crate) async fn write(
        &self,
        res: ResourceId,
        params: Vec<Param>,
    ) -> Result<(), StoreError> {
        let casts = params.iter().map(|(_, cast)| *cast).collect();
        let values = params.into_iter().map(|(value, _)| value).collect();
        let (done, answer) = oneshot::channel();
        let job = Job {
            res,
            values,
            casts,
            done,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the create writers have stopped".into()))?;
        answer.await.map_err(|_| {
            // Its writer ended without answering: the create may have committed.
            StoreError::Internal("a create's writer ended without an answer".into())
        })?
    }
}

/// Counts the record writes committed (see `PgStore::written`).
type Written = tokio::sync::watch::Sender<u64>;

/// What writing needs.
struct Writer {
    pool: Pool,
    schema: Arc<Schema>,
    written: Written,
}

/// Hands the queued creates to writers, as many as are free.
async fn take_turns(
    mut jobs: mpsc::Receiver<Job>,
    writer: Arc<Writer>,
    writers: usize,
    batch: usize,
) {
    let free = Arc::new(Semaphore::new(writers));
    let mut taken = Vec::with_capacity(batch);
    loop {
        let Ok(turn_taken) = free.clone().acquire_owned().await else {
            return;
        };
        if jobs.recv_many(&mut taken, batch).await == 0 {
            // The store is gone.
            return;
        }
        let turn = std::mem::replace(&mut taken, Vec::with_capacity(batch));
        let writer = writer.clone();
        tokio::spawn(async move {
            write_all(&writer, turn).await;
            drop(turn_taken);
        });
    }
}

/// Writes `jobs` on one connection, a statement per resource, and answers each.
async fn write_all(writer: &Writer, mut jobs: Vec<Job>) {
    // A create whose request has gone (it timed out, the client went away) is not
    // written: nobody would learn that it was, and a client trying again would write it
    // twice.
    jobs.retain(|job| !job.done.is_closed());
    if jobs.is_empty() {
        return;
    }
    let client = match super::checkout(&writer.pool).await {
        Ok(client) => client,
        Err(e) => return fail(jobs, e),
    };
    jobs.sort_by_key(|job| job.res.0);
    while !jobs.is_empty() {
        let res = jobs[0].res;
        let end = jobs.iter().position(|job| job.res != res);
        let rest = jobs.split_off(end.unwrap_or(jobs.len()));
        let group = std::mem::replace(&mut jobs, rest);
        match writer.schema.resources.get(res.0) {
            Some(resource) => {
                if write_group(&client, resource, group).await {
                    writer.written.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            None => fail(
                group,
                StoreError::Internal(format!("unknown resource {}", res.0)),
            ),
        }
    }
}

/// Writes creates of `resource` in one statement, or each on its own when PostgreSQL
/// refuses the statement; whether any was written.
async fn write_group(client: &ClientWrapper, resource: &Resource, jobs: Vec<Job>) -> bool {
    match write(client, resource, &jobs).await {
        Ok(()) => {
            for job in jobs {
                let _ = job.done.send(Ok(()));
            }
            true
        }
        Err(Failure::Refused(e)) if jobs.len() > 1 && on_its_own_account(&e) => {
            // Nothing was written; each again, on its own, for its own answer. The
            // statements go down the connection back to back.
            let alone = jobs
                .iter()
                .map(|job| write(client, resource, std::slice::from_ref(job)));
            let outcomes = futures_util::future::join_all(alone).await;
            let any = outcomes.iter().any(Result::is_ok);
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.done.send(outcome.map_err(StoreError::from));
            }
            any
        }
        Err(failure) => {
            fail(jobs, failure.into());
            false
        }
    }
}

/// Why a statement did not write its creates.
enum Failure {
    /// PostgreSQL refused the statement: nothing of it was written.
    Refused(tokio_postgres::Error),
    /// The connection failed, or the answer was not the one expected: the statement may
    /// have committed.
    Other(StoreError),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Refused(e) => e.into(),
            Failure::Other(e) => e,
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_some() {
            Self::Refused(e)
        } else {
            Self::Other(e.into())
        }
    }
}

/// Whether PostgreSQL refused a statement for what one of its creates holds (a value it
/// cannot take, a unique or foreign key clash, a deadlock with another statement), so that
/// writing each on its own gives each its own answer. Other refusals (a timeout, a full
/// disk) would refuse each again.
fn on_its_own_account(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code.starts_with("23") || code == "40P01" || code == "40001"
    })
}

/// A column of the statement's parameters: one value per create.
enum Column {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    /// An empty column for values like `value`, with room for `count`.
    fn like(value: &SqlValue, count: usize) -> Self {
        match value {
            SqlValue::Bool(_) => Self::Bool(Vec::with_capacity(count)),
            SqlValue::Int(_)
            | SqlValue::BigInt(_)
            | SqlValue::Unsigned(_)
            | SqlValue::BigUnsigned(_) => Self::Int(Vec::with_capacity(count)),
            SqlValue::Float(_) | SqlValue::Double(_) => Self::Float(Vec::with_capacity(count)),
            SqlValue::Bytes(_) => Self::Bytes(Vec::with_capacity(count)),
            _ => Self::Text(Vec::with_capacity(count)),
        }
    }

    /// Adds `value`; false when it is not of the column's type.
    fn push(&mut self, value: &SqlValue) -> bool {
        match (self, value) {
            (Self::Bool(c), SqlValue::Bool(v)) => c.push(*v),
            (Self::Int(c), SqlValue::Int(v)) => c.push(v.map(i64::from)),
            (Self::Int(c), SqlValue::BigInt(v)) => c.push(*v),
            (Self::Int(c), SqlValue::Unsigned(v)) => c.push(v.map(i64::from)),
            (Self::Int(c), SqlValue::BigUnsigned(v)) => {
                c.push(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)));
            }
            (Self::Float(c), SqlValue::Float(v)) => c.push(v.map(f64::from)),
            (Self::Float(c), SqlValue::Double(v)) => c.push(*v),
            (Self::Bytes(c), SqlValue::Bytes(v)) => c.push(v.clone()),
            (Self::Text(c), SqlValue::String(v)) => c.push(v.clone()),
            (Self::Text(c), _) => c.push(None),
            _ => return false,
        }
        true
    }

    fn param(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Self::Bool(c) => (c, Type::BOOL_ARRAY),
            Self::Int(c) => (c, Type::INT8_ARRAY),
            Self::Float(c) => (c, Type::FLOAT8_ARRAY),
            Self::Text(c) => (c, Type::TEXT_ARRAY),
            Self::Bytes(c) => (c, Type::BYTEA_ARRAY),
        }
    }
}

/// Writes `jobs` (creates of `resource`) as one statement.
async fn write(client: &ClientWrapper, resource: &Resource, jobs: &[Job]) -> Result<(), Failure> {
    let first = &jobs[0];
    let mut columns: Vec<Column> = first
        .values
        .iter()
        .map(|value| Column::like(value, jobs.len()))
        .collect();
    for job in jobs {
        let fits = job.casts == first.casts
            && job.values.len() == columns.len()
            && columns
                .iter_mut()
                .zip(&job.values)
                .all(|(column, value)| column.push(value));
        if !fits {
            return Err(Failure::Other(StoreError::Internal(
                "creates of one resource came with different parameters".into(),
            )));
        }
    }
    let sql = insert_many(resource, &first.casts);
    let params: Vec<(&(dyn ToSql + Sync), Type)> = columns.iter().map(Column::param).collect();
    let rows = if caching() {
        let types: Vec<Type> = params.iter().map(|(_, ty)| ty.clone()).collect();
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(value, _)| *value).collect();
        let statement = client.prepare_typed_cached(&sql, &types).await?;
        client.query(&statement, &values).await?
    } else {
        client.query_typed(&sql, &params).await?
    };
    let written: i64 = rows
        .first()
        .map(|row| row.try_get(0))
        .transpose()?
        .unwrap_or_default();
    if usize::try_from(written).ok() != Some(jobs.len()) {
        return Err(Failure::Other(StoreError::Internal(format!(
            "{} creates wrote {written} events",
            jobs.len()
        ))));
    }
    Ok(())
}

/// Answers every job with `error` (the last with `error` itself, the others with a copy
/// of it as unavailable or internal).
fn fail(mut jobs: Vec<Job>, error: StoreError) {
    let Some(last) = jobs.pop() else {
        return;
    };
    for job in jobs {
        let copy = match &error {
            StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
            other => StoreError::Internal(other.to_string()),
        };
        let _ = job.done.send(Err(copy));
    }
    let _ = last.done.send(Err(error));
}
