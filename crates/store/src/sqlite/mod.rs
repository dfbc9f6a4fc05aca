//! SQLite: one writer thread and a pool of reader threads, each owning a connection.
//!
//! WAL lets readers run beside the writer; a single writer avoids `SQLITE_BUSY` between
//! our own connections. Work is sent to the threads as closures and answered through a
//! oneshot channel, so the async runtime never blocks on SQLite.

mod auth;
pub(crate) mod ddl;
mod idempotency;
mod identity;
mod jobs;
pub(crate) mod records;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use ferrobase_schema::Schema;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use sea_query::Expr;

use crate::auth::{ApiKeyRow, RefreshGrant, Rotation};
use crate::events::EventBatch;
use crate::write::{self, run_ready};
use crate::{
    Access, BatchError, BatchOp, BatchOutcome, Claim, Deletion, IdempotencyClaim, ListQuery,
    NewRecord, Record, ResourceId, StoreError, StoredResponse, Update,
};
use records::Plans;

type Job = Box<dyn FnOnce(&mut Connection, &Plans) + Send>;

/// Most requests that may wait for one queue; beyond that callers get 503 at once
/// instead of queueing work nobody will wait for.
const QUEUE_DEPTH: usize = 4096;

/// Marks a thread idle again when its job ends, even by panic.
struct IdleAgain<'a>(&'a AtomicUsize);

impl Drop for IdleAgain<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The database file as it was opened, to notice when it is deleted or replaced under a
/// running server: SQLite keeps writing into the unlinked file (and its WAL) and would
/// acknowledge writes that vanish at the next start.
struct DbFile {
    path: PathBuf,
    /// Kept open so that its link count shows whether the directory entry still exists.
    file: std::fs::File,
    /// Device and inode of the file opened, to notice a different file at the same path.
    identity: (u64, u64),
}

impl DbFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            path: path.to_owned(),
            file,
            identity: (meta.dev(), meta.ino()),
        })
    }

    /// `Unavailable` when the opened file is no longer the one at its path.
    fn check(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let linked = self.file.metadata().is_ok_and(|m| m.nlink() > 0);
        let same = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if linked && same {
            return Ok(());
        }
        tracing::error!(
            path = %self.path.display(),
            "the database file was deleted or replaced while the server runs; writes are refused until it restarts"
        );
        Err(StoreError::FileGone(self.path.display().to_string()))
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    /// The file the writer opened; `None` for an in-memory database.
    file: Option<Arc<DbFile>>,
    writer: Sender<Job>,
    readers: Sender<Job>,
    /// Connections (threads) in all.
    connections: usize,
    /// Threads running a job right now.
    busy: Arc<AtomicUsize>,
    /// Counts the record writes committed, to wake event followers.
    pub(crate) written: tokio::sync::watch::Sender<u64>,
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
    // Plans must not depend on bound values. Without this, SQLite marks a statement for
    // re-preparation when it looked at a parameter while planning (`LIMIT ?`, `x = ?`
    // outside the index, STAT4 probes), and the statement cache's clearing of bindings
    // then forces a full re-parse on every reuse: a seventh of a list request's time.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

/// Drops `ANALYZE`'s statistics of ferrobase's own tables (the event log, the job queue):
/// they start empty and grow by the minute, so statistics taken early (an `ANALYZE` run
/// when the log held two events) make the planner scan the whole log instead of
/// seeking to a `seq` (seen: creates at a quarter of their speed as followers read the
/// log after every write). Without statistics SQLite assumes large tables and seeks.
/// Runs before the readers open, so every connection plans with what is left.
fn forget_internal_statistics(conn: &Connection) -> rusqlite::Result<()> {
    let analyzed: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1')",
        [],
        |row| row.get(0),
    )?;
    if analyzed {
        let forgotten = conn.execute(
            "DELETE FROM sqlite_stat1 WHERE tbl LIKE '\\_ferrobase\\_%' ESCAPE '\\'",
            [],
        )?;
        if forgotten > 0 {
            // Loads the statistics again on this connection.
            conn.execute_batch("ANALYZE sqlite_schema")?;
        }
    }
    Ok(())
}

fn check_file(file: Option<&DbFile>) -> Result<(), StoreError> {
    file.map_or(Ok(()), DbFile::check)
}

fn worker(
    name: String,
    mut conn: Connection,
    plans: Arc<Plans>,
    jobs: Receiver<Job>,
    busy: Arc<AtomicUsize>,
) {
    let spawned = thread::Builder::new().name(name).spawn(move || {
        while let Ok(job) = jobs.recv() {
            busy.fetch_add(1, Ordering::Relaxed);
            let _idle_again = IdleAgain(&busy);
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
    pub fn open(
        path: &Path,
        readers: usize,
        schema: Arc<Schema>,
        policy: crate::migrate::StartupPolicy,
        files: &[crate::migrate::MigrationSource],
    ) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Config(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let open_err =
            |e: rusqlite::Error| StoreError::Config(format!("cannot open {}: {e}", path.display()));
        let mut writer = Connection::open(path).map_err(open_err)?;
        configure(&writer, false).map_err(open_err)?;
        let now = ferrobase_schema::validate::format_datetime(time::OffsetDateTime::now_utc());
        let done = crate::migrate::sqlite::startup(&mut writer, &schema, policy, files, &now)?;
        for change in &done {
            tracing::info!(change = %change, path = %path.display(), "schema change applied");
        }
        forget_internal_statistics(&writer).map_err(open_err)?;
        let plans = Arc::new(Plans::new(schema));
        let busy = Arc::new(AtomicUsize::new(0));
        let (wtx, wrx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        worker(
            "sqlite-writer".into(),
            writer,
            plans.clone(),
            wrx,
            busy.clone(),
        );
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
                busy.clone(),
            );
        }
        let file = DbFile::open(path).ok().map(Arc::new);
        Ok(Self {
            file,
            writer: wtx,
            readers: rtx,
            connections: readers.max(1) + 1,
            busy,
            written: tokio::sync::watch::Sender::new(0),
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
        let file = self.file.clone();
        Self::run(&self.writer, move |conn, plans| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx, plans)?;
            // Never acknowledge a write into a file nobody will open again.
            check_file(file.as_deref())?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Events after `position` (up to `upto`), at most `limit`: on SQLite every committed
    /// event is final, since the one writer commits in `seq` order.
    pub async fn events_after(
        &self,
        position: i64,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<EventBatch, StoreError> {
        self.read(move |conn, _| records::events_after(conn, position, upto, limit))
            .await
    }
}

use crate::Fut;
use crate::auth::{LiveSession, SessionRow};
use ferrobase_schema::validate::format_datetime;

impl crate::RecordStore for SqliteStore {
    fn get(
        &self,
        res: ResourceId,
        id: String,
        visible: Option<Expr>,
    ) -> Fut<'_, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.get_visible(conn, res, &id, visible.as_ref()))
                .await
        })
    }

    fn list(&self, res: ResourceId, query: ListQuery) -> Fut<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.list(conn, res, query))
                .await
        })
    }

    fn explain(
        &self,
        res: ResourceId,
        query: ListQuery,
    ) -> Fut<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.explain(conn, res, query))
                .await
        })
    }

    fn list_joined(
        &self,
        res: ResourceId,
        query: ListQuery,
        joins: Vec<crate::Join>,
    ) -> Fut<'_, Result<Vec<crate::Joined>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.list_joined(conn, res, query, &joins))
                .await
        })
    }

    fn count(&self, res: ResourceId, filter: Option<Expr>) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.count(conn, res, filter))
                .await
        })
    }

    fn count_by(
        &self,
        res: ResourceId,
        filter: Option<Expr>,
        column: String,
        ids: Vec<String>,
    ) -> Fut<'_, Result<Vec<(String, u64)>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.count_by(conn, res, filter, &column, &ids))
                .await
        })
    }

    fn judge(
        &self,
        res: ResourceId,
        record: Record,
        conds: Vec<Expr>,
    ) -> Fut<'_, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.judge(conn, res, &record, conds))
                .await
        })
    }

    fn get_many(
        &self,
        res: ResourceId,
        ids: Vec<String>,
        visible: Option<Expr>,
    ) -> Fut<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, plans| plans.get_many(conn, res, ids, visible))
                .await
        })
    }

    fn insert(
        &self,
        res: ResourceId,
        record: NewRecord,
        allowed: Option<Expr>,
    ) -> Fut<'_, Result<Record, StoreError>> {
        Box::pin(async move {
            let out = async move {
                self.write(move |tx, plans| {
                    run_ready(write::insert(&plans.tx(tx), res, record, allowed.as_ref()))
                })
                .await
            }
            .await;
            self.woke(out)
        })
    }

    fn update(
        &self,
        res: ResourceId,
        id: String,
        update: Update,
        access: Access,
    ) -> Fut<'_, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            let out = async move {
                self.write(move |tx, plans| {
                    run_ready(write::update(&plans.tx(tx), res, &id, update, &access))
                })
                .await
            }
            .await;
            self.woke(out)
        })
    }

    fn delete(
        &self,
        res: ResourceId,
        id: String,
        deletion: Deletion,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let out = async move {
                self.write(move |tx, plans| {
                    run_ready(write::delete(&plans.tx(tx), res, &id, &deletion))
                })
                .await
            }
            .await;
            self.woke(out)
        })
    }

    fn batch(&self, ops: Vec<BatchOp>) -> Fut<'_, Result<Vec<BatchOutcome>, BatchError>> {
        Box::pin(async move {
            let out = async move {
                let whole = |error| BatchError { index: None, error };
                let file = self.file.clone();
                Self::run(&self.writer, move |conn, plans| {
                    let tx =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let mut outcomes = Vec::with_capacity(ops.len());
                    for (index, op) in ops.into_iter().enumerate() {
                        match run_ready(write::batch_op(&plans.tx(&tx), op)) {
                            Ok(outcome) => outcomes.push(outcome),
                            // Dropping the transaction rolls every earlier write back.
                            Err(error) => {
                                return Ok(Err(BatchError {
                                    index: Some(index),
                                    error,
                                }));
                            }
                        }
                    }
                    check_file(file.as_deref())?;
                    tx.commit()?;
                    Ok(Ok(outcomes))
                })
                .await
                .map_err(whole)?
            }
            .await;
            self.woke(out)
        })
    }
}

impl crate::SessionStore for SqliteStore {
    fn insert_refresh(&self, grant: RefreshGrant) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::insert_refresh(tx, &grant))
                .await
        })
    }

    fn rotate_refresh(
        &self,
        presented_hash: String,
        next: RefreshGrant,
    ) -> Fut<'_, Result<Rotation, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let now = next.created_at.clone();
                auth::rotate_refresh(tx, &presented_hash, next, &now)
            })
            .await
        })
    }

    fn revoke_refresh(&self, token_hash: String, now: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::revoke_refresh(tx, &token_hash, &now))
                .await
        })
    }

    fn revoke_user(&self, user_id: String, now: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::revoke_user(tx, &user_id, &now))
                .await
        })
    }

    fn create_email_token(
        &self,
        token_hash: String,
        user_id: String,
        purpose: String,
        now: String,
        expires_at: String,
    ) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                tx.prepare_cached(&crate::jobs::sqlite_params(crate::auth::CREATE_EMAIL_TOKEN))?
                    .execute(rusqlite::params![
                        token_hash, user_id, purpose, now, expires_at
                    ])?;
                Ok(())
            })
            .await
        })
    }

    fn use_email_token(
        &self,
        token_hash: String,
        purpose: String,
        now: String,
    ) -> Fut<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                use rusqlite::OptionalExtension;
                Ok(tx
                    .prepare_cached(&crate::jobs::sqlite_params(crate::auth::USE_EMAIL_TOKEN))?
                    .query_row(rusqlite::params![token_hash, purpose, now], |r| r.get(0))
                    .optional()?)
            })
            .await
        })
    }

    fn insert_session(&self, s: SessionRow) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (created, expires) = (format_datetime(s.created_at), format_datetime(s.expires_at));
            self.write(move |tx, _| {
                auth::insert_session(tx, (&s.id, &s.user_id, &s.token_hash, &created, &expires))
            })
            .await
        })
    }

    fn session(
        &self,
        token_hash: String,
        now: time::OffsetDateTime,
    ) -> Fut<'_, Result<Option<LiveSession>, StoreError>> {
        Box::pin(async move {
            let now = format_datetime(now);
            let found = self
                .read(move |conn, _| auth::session(conn, &token_hash, &now))
                .await?;
            Ok(found.map(|(id, user_id)| LiveSession { id, user_id }))
        })
    }

    fn revoke_session(&self, token_hash: String, now: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::revoke_session(tx, &token_hash, &now))
                .await
        })
    }

    fn insert_api_key(&self, key: ApiKeyRow) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::insert_api_key(tx, &key))
                .await
        })
    }

    fn mfa(&self, user_id: String) -> Fut<'_, Result<Option<crate::MfaRow>, StoreError>> {
        Box::pin(async move { self.read(move |conn, _| auth::mfa(conn, &user_id)).await })
    }

    fn begin_mfa(
        &self,
        user_id: String,
        secret: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::begin_mfa(tx, &user_id, &secret, &now))
                .await
        })
    }

    fn confirm_mfa(
        &self,
        user_id: String,
        secret: String,
        step: i64,
        recovery: Vec<String>,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::confirm_mfa(tx, &user_id, &secret, step, &recovery))
                .await
        })
    }

    fn use_mfa_step(&self, user_id: String, step: i64) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::use_mfa_step(tx, &user_id, step))
                .await
        })
    }

    fn use_recovery_code(
        &self,
        user_id: String,
        hash: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::use_recovery_code(tx, &user_id, &hash, &now))
                .await
        })
    }

    fn delete_mfa(&self, user_id: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::delete_mfa(tx, &user_id))
                .await
        })
    }

    fn put_ticket(&self, ticket: crate::Ticket, now: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| identity::put_ticket(tx, &ticket, &now))
                .await
        })
    }

    fn take_ticket(
        &self,
        kind: String,
        id: String,
        now: String,
    ) -> Fut<'_, Result<Option<crate::Ticket>, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| identity::take_ticket(tx, &kind, &id, &now))
                .await
        })
    }

    fn identity_user(
        &self,
        provider: String,
        subject: String,
    ) -> Fut<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| identity::identity_user(conn, &provider, &subject))
                .await
        })
    }

    fn link_identity(&self, row: crate::IdentityRow) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| identity::link_identity(tx, &row))
                .await
        })
    }

    fn identities(&self, user_id: String) -> Fut<'_, Result<Vec<crate::IdentityRow>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| identity::identities(conn, &user_id))
                .await
        })
    }

    fn unlink_identity(
        &self,
        user_id: String,
        provider: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| identity::unlink_identity(tx, &user_id, &provider))
                .await
        })
    }

    fn add_passkey(&self, row: crate::PasskeyRow) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| identity::add_passkey(tx, &row))
                .await
        })
    }

    fn passkeys_of(&self, user_id: String) -> Fut<'_, Result<Vec<crate::PasskeyRow>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| identity::passkeys(conn, "user_id", &user_id))
                .await
        })
    }

    fn passkeys_by_handle(
        &self,
        handle: String,
    ) -> Fut<'_, Result<Vec<crate::PasskeyRow>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| identity::passkeys(conn, "user_handle", &handle))
                .await
        })
    }

    fn use_passkey(
        &self,
        id: String,
        credential: String,
        counter: i64,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| identity::use_passkey(tx, &id, &credential, counter, &now))
                .await
        })
    }

    fn delete_passkey(&self, user_id: String, id: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| identity::delete_passkey(tx, &user_id, &id))
                .await
        })
    }

    fn api_key(&self, id: String) -> Fut<'_, Result<Option<ApiKeyRow>, StoreError>> {
        Box::pin(async move { self.read(move |conn, _| auth::api_key(conn, &id)).await })
    }

    fn api_keys_of(&self, user_id: String) -> Fut<'_, Result<Vec<ApiKeyRow>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| auth::api_keys_of(conn, &user_id))
                .await
        })
    }

    fn revoke_api_key(
        &self,
        user_id: String,
        id: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::revoke_api_key(tx, &user_id, &id, &now))
                .await
        })
    }

    fn touch_api_key(
        &self,
        id: String,
        now: String,
        stale_before: String,
    ) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::touch_api_key(tx, &id, &now, &stale_before))
                .await
        })
    }

    fn user_id_by_email(&self, email: String) -> Fut<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| auth::user_id_by_email(conn, &email))
                .await
        })
    }

    fn set_password_hash(
        &self,
        user_id: String,
        hash: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| auth::set_password_hash(tx, &user_id, &hash, &now))
                .await
        })
    }
}

impl crate::IdempotencyStore for SqliteStore {
    fn claim_idempotency(&self, claim: IdempotencyClaim) -> Fut<'_, Result<Claim, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| idempotency::claim(tx, &claim))
                .await
        })
    }

    fn complete_idempotency(
        &self,
        key: String,
        response: StoredResponse,
    ) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| idempotency::complete(tx, &key, &response))
                .await
        })
    }

    fn release_idempotency(&self, key: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| idempotency::release(tx, &key))
                .await
        })
    }
}

impl crate::EventLog for SqliteStore {
    fn trim_events(&self, before: String) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let n = tx
                    .prepare_cached("DELETE FROM \"_ferrobase_events\" WHERE \"at\" < ?")?
                    .execute([before])?;
                Ok(n as u64)
            })
            .await
        })
    }

    fn last_event_before(&self, at: String) -> Fut<'_, Result<i64, StoreError>> {
        self.last_event_at(at)
    }

    fn last_event(&self) -> Fut<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            self.read(|conn, _| {
                Ok(conn
                    .prepare_cached("SELECT COALESCE(MAX(\"seq\"), 0) FROM \"_ferrobase_events\"")?
                    .query_row([], |row| row.get(0))?)
            })
            .await
        })
    }

    fn events_between(
        &self,
        after: i64,
        upto: i64,
        resource: Option<String>,
        limit: usize,
    ) -> Fut<'_, Result<Vec<crate::RecordEvent>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| {
                Ok(records::events_of(conn, after, Some(upto), resource.as_deref(), limit)?.events)
            })
            .await
        })
    }

    fn event_at_or_before(&self, seq: i64) -> Fut<'_, Result<Option<(i64, String)>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| {
                let mut stmt = conn.prepare_cached(
                    "SELECT \"seq\", \"at\" FROM \"_ferrobase_events\" WHERE \"seq\" <= ?1 ORDER BY \"seq\" DESC LIMIT 1",
                )?;
                let mut rows = stmt.query([seq])?;
                Ok(match rows.next()? {
                    Some(row) => Some((row.get(0)?, row.get(1)?)),
                    None => None,
                })
            })
            .await
        })
    }
}

impl SqliteStore {
    fn last_event_at(&self, at: String) -> Fut<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| {
                Ok(conn
                    .prepare_cached(
                        "SELECT COALESCE(MAX(\"seq\"), 0) FROM \"_ferrobase_events\" WHERE \"at\" < ?",
                    )?
                    .query_row([at], |row| row.get(0))?)
            })
            .await
        })
    }
}

impl crate::Maintenance for SqliteStore {
    fn wait_ready(&self, _deadline: std::time::Duration) -> Fut<'_, Result<(), StoreError>> {
        // The file is open and its tables made before the store exists.
        Box::pin(async { Ok(()) })
    }

    fn migrations(&self) -> Fut<'_, Result<crate::migrate::History, StoreError>> {
        Box::pin(async move {
            Self::run(&self.writer, |conn, _| crate::migrate::sqlite::load(conn)).await
        })
    }

    fn apply_migrations(
        &self,
        files: Vec<crate::migrate::MigrationSource>,
        allow_destructive: bool,
        now: String,
    ) -> Fut<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Self::run(&self.writer, move |conn, _| {
                crate::migrate::sqlite::apply_pending(conn, &files, allow_destructive, &now)
            })
            .await
        })
    }

    fn ping(&self) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let select = |conn: &Connection| -> Result<(), StoreError> {
                conn.query_row("SELECT 1", [], |_| Ok(()))?;
                Ok(())
            };
            check_file(self.file.as_deref())?;
            self.read(move |conn, _| select(conn)).await?;
            Self::run(&self.writer, move |conn, _| select(conn)).await
        })
    }

    fn pool_stats(&self) -> crate::PoolStats {
        let busy = self.busy.load(Ordering::Relaxed).min(self.connections);
        crate::PoolStats {
            connections: self.connections,
            idle: self.connections - busy,
            waiting: self.writer.len() + self.readers.len(),
        }
    }
}

impl crate::Backend for SqliteStore {
    fn written(&self) -> &tokio::sync::watch::Sender<u64> {
        &self.written
    }

    fn follow<'a>(
        &'a self,
        position: i64,
        _horizons: &'a mut std::collections::VecDeque<crate::events::Horizon>,
        limit: usize,
    ) -> Fut<'a, Result<EventBatch, StoreError>> {
        // One writer commits in `seq` order: everything visible is final.
        if limit == 0 {
            return Box::pin(async move {
                let newest = self
                    .read(|conn, _| {
                        Ok(conn.query_row(
                            "SELECT COALESCE(MAX(\"seq\"), 0) FROM \"_ferrobase_events\"",
                            [],
                            |row| row.get::<_, i64>(0),
                        )?)
                    })
                    .await?;
                Ok(EventBatch {
                    events: Vec::new(),
                    position: newest.max(position),
                })
            });
        }
        Box::pin(self.events_after(position, None, limit))
    }
}

impl SqliteStore {
    /// Wakes this node's event followers after a record write that committed.
    fn woke<T, E>(&self, out: Result<T, E>) -> Result<T, E> {
        if out.is_ok() {
            self.written.send_modify(|n| *n = n.wrapping_add(1));
        }
        out
    }
}
