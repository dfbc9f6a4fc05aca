//! SQLite: one writer thread and a pool of reader threads, each owning a connection.
//!
//! WAL lets readers run beside the writer; a single writer avoids `SQLITE_BUSY` between
//! our own connections. Work is sent to the threads as closures and answered through a
//! oneshot channel, so the async runtime never blocks on SQLite.

mod ddl;
mod records;

pub(crate) use ddl::expected_columns;

use std::path::Path;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use ferrobase_schema::Schema;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::{ListQuery, NewRecord, Record, ResourceId, StoreError, Update};
use records::Plans;

type Job = Box<dyn FnOnce(&mut Connection, &Plans) + Send>;

/// Most requests that may wait for one queue; beyond that callers get 503 at once
/// instead of queueing work nobody will wait for.
const QUEUE_DEPTH: usize = 4096;

/// The embedded SQLite store.
pub struct SqliteStore {
    writer: Sender<Job>,
    readers: Sender<Job>,
}

fn configure(conn: &Connection, reader: bool) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    if reader {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

fn worker(name: String, mut conn: Connection, plans: Arc<Plans>, jobs: Receiver<Job>) {
    let spawned = thread::Builder::new().name(name).spawn(move || {
        while let Ok(job) = jobs.recv() {
            // A panic in one job must not take the thread (and the database) down with
            // it: the job's transaction rolls back as it unwinds and its caller sees the
            // dropped reply as an internal error.
            let run = std::panic::AssertUnwindSafe(|| job(&mut conn, &plans));
            if std::panic::catch_unwind(run).is_err() {
                tracing::error!("a database job panicked; it was rolled back");
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start a database thread");
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, creates the schema's tables, and
    /// starts one writer and `readers` reader threads.
    pub fn open(path: &Path, readers: usize, schema: Arc<Schema>) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let open_err =
            |e: rusqlite::Error| StoreError::Config(format!("cannot open {}: {e}", path.display()));
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer, false).map_err(open_err)?;
        let created = ddl::apply(&mut writer, &schema)?;
        if !created.is_empty() {
            tracing::info!(tables = ?created, path = %path.display(), "created tables");
        }
        let plans = Arc::new(Plans::new(schema));
        let (wtx, wrx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        worker("sqlite-writer".into(), writer, plans.clone(), wrx);
        let (rtx, rrx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        for i in 0..readers.max(1) {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
            configure(&conn, true).map_err(open_err)?;
            worker(
                format!("sqlite-reader-{i}"),
                conn,
                plans.clone(),
                rrx.clone(),
            );
        }
        Ok(Self {
            writer: wtx,
            readers: rtx,
        })
    }

    async fn run<T: Send + 'static>(
        queue: &Sender<Job>,
        f: impl FnOnce(&mut Connection, &Plans) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn, plans| {
            // The caller gave up (timeout, disconnect): do not run work nobody awaits,
            // least of all a write it has already reported as failed.
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(f(conn, plans));
        });
        queue.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                StoreError::Unavailable("too many database requests are waiting".into())
            }
            crossbeam_channel::TrySendError::Disconnected(_) => {
                StoreError::Unavailable("the database threads have stopped".into())
            }
        })?;
        rx.await
            .map_err(|_| StoreError::Internal("a database thread dropped a request".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &Plans) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::run(&self.readers, move |conn, plans| f(conn, plans)).await
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &Plans) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::run(&self.writer, move |conn, plans| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx, plans)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Runs `SELECT 1` on a reader and on the writer.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let select = |conn: &Connection| -> Result<(), StoreError> {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        };
        self.read(move |conn, _| select(conn)).await?;
        Self::run(&self.writer, move |conn, _| select(conn)).await
    }

    /// See [`crate::Store::get`].
    pub async fn get(&self, res: ResourceId, id: String) -> Result<Option<Record>, StoreError> {
        self.read(move |conn, plans| plans.get(conn, res, &id))
            .await
    }

    /// See [`crate::Store::list`].
    pub async fn list(&self, res: ResourceId, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        self.read(move |conn, plans| plans.list(conn, res, query))
            .await
    }

    /// See [`crate::Store::explain`].
    pub async fn explain(
        &self,
        res: ResourceId,
        query: ListQuery,
    ) -> Result<Vec<String>, StoreError> {
        self.read(move |conn, plans| plans.explain(conn, res, query))
            .await
    }

    /// See [`crate::Store::count`].
    pub async fn count(
        &self,
        res: ResourceId,
        filter: Option<sea_query::Expr>,
    ) -> Result<u64, StoreError> {
        self.read(move |conn, plans| plans.count(conn, res, filter))
            .await
    }

    /// See [`crate::Store::get_many`].
    pub async fn get_many(
        &self,
        res: ResourceId,
        ids: Vec<String>,
    ) -> Result<Vec<Record>, StoreError> {
        self.read(move |conn, plans| plans.get_many(conn, res, ids))
            .await
    }

    /// See [`crate::Store::insert`].
    pub async fn insert(&self, res: ResourceId, record: NewRecord) -> Result<Record, StoreError> {
        self.write(move |tx, plans| plans.insert(tx, res, record))
            .await
    }

    /// See [`crate::Store::update`].
    pub async fn update(
        &self,
        res: ResourceId,
        id: String,
        update: Update,
    ) -> Result<Option<Record>, StoreError> {
        self.write(move |tx, plans| plans.update(tx, res, &id, update))
            .await
    }

    /// See [`crate::Store::delete`].
    pub async fn delete(
        &self,
        res: ResourceId,
        id: String,
        if_match: Option<Vec<i64>>,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, plans| plans.delete(tx, res, &id, if_match.as_deref()))
            .await
    }
}
