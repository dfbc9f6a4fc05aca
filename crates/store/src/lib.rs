//! Persistence. [`Store`] hides which database holds the data, SQLite (WAL, one writer
//! thread and a pool of reader threads) or PostgreSQL, behind one trait per concern
//! ([`RecordStore`], [`SessionStore`], [`IdempotencyStore`], [`EventLog`],
//! [`Maintenance`]) that both implement. Record writes of both run the one write routine
//! (`write.rs`). Rows are decoded by each field's declared type, never by driver type
//! information.
#![forbid(unsafe_code)]

pub mod auth;
mod common;
mod concerns;
mod error;
pub mod events;
pub mod jobs;
mod list;
pub mod migrate;
mod postgres;
mod sqlite;
mod write;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use ferrobase_schema::{Schema, Settings};
use sea_query::Expr;
use serde_json::Value;

pub use auth::{
    ApiKeyRow, IdentityRow, LiveSession, MfaRow, PasskeyRow, RefreshGrant, Rotation, SessionRow,
    Ticket,
};
pub use concerns::{EventLog, IdempotencyStore, Maintenance, RecordStore, SessionStore};
pub use error::StoreError;
pub use events::{EventBatch, EventFollower, EventOp, RecordEvent};
pub use jobs::{
    Enqueued, Finish, Job, JobEvent, JobFilter, JobState, JobStore, NewJob, QueueStats,
};
pub use list::{Join, Joined, KeyType, ListQuery, PerParent, SortKey};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Counting the store calls (each one statement, or one transaction for a write) that a
/// piece of work makes: the request log reports them, so a page that loads its relations
/// one query per level shows it.
pub mod calls {
    use std::cell::Cell;
    use std::future::Future;

    tokio::task_local! {
        static CALLS: Cell<u32>;
    }

    /// Runs `work`, counting the store calls made while it is polled (not those of tasks
    /// it spawns).
    pub async fn counted<F: Future>(work: F) -> (F::Output, u32) {
        CALLS
            .scope(Cell::new(0), async move {
                let out = work.await;
                (out, CALLS.with(Cell::get))
            })
            .await
    }

    /// Adds one call to the current count, if any.
    pub(crate) fn count() {
        let _ = CALLS.try_with(|c| c.set(c.get().saturating_add(1)));
    }
}

/// A boxed future of the store's traits (they are used as trait objects).
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Index of a resource in [`Schema::resources`]; the store's handle for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceId(pub usize);

/// One stored record, with field values aligned to the resource's declared fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// UUIDv7 id.
    pub id: String,
    /// Bumped on every write.
    pub version: i64,
    /// Creation time, for resources with timestamps.
    pub created_at: Option<String>,
    /// Time of the last write, for resources with timestamps.
    pub updated_at: Option<String>,
    /// `values[i]` belongs to `resource.fields[i]`; `Null` when unset. Many relations
    /// hold an array of ids.
    pub values: Vec<Value>,
}

/// A record to insert: the caller has validated it and applied defaults.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Server-generated id.
    pub id: String,
    /// Creation time (canonical datetime text).
    pub now: String,
    /// Aligned to the resource's fields; `Null` leaves a field unset.
    pub values: Vec<Value>,
    /// Which records the relations may point at.
    pub targets: Targets,
    /// The user who writes (recorded in the event log), when a user does.
    pub actor: Option<String>,
}

/// Which records a writer may point relations at: besides existing, a target must meet
/// its resource's view rule for the writer, so that a relation neither reveals which
/// ids exist nor pins a record its writer cannot see. A record the writer may not see
/// gets the same answer as a missing one.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// `(field index, condition over the target resource's table)`; relation fields not
    /// listed accept any existing record (trusted writers: registration, the CLI).
    pub scoped: Vec<(usize, Expr)>,
    /// The writer's own user id: naming oneself in a relation to `users` reveals nothing,
    /// so it is accepted whatever the view rule of `users` says.
    pub own_user: Option<String>,
}

impl Targets {
    /// The condition targets of field `i` must meet, beyond existing; `None` for none.
    pub fn condition(&self, i: usize) -> Option<&Expr> {
        self.scoped.iter().find(|(f, _)| *f == i).map(|(_, e)| e)
    }

    /// Whether `id` is the writer's own user record in a relation to `target`.
    pub fn is_own(&self, target: &str, id: &str) -> bool {
        target == ferrobase_schema::USERS && self.own_user.as_deref() == Some(id)
    }
}

pub use ferrobase_schema::input::Change;

/// A validated update.
#[derive(Clone)]
pub struct Update {
    /// Time of the write.
    pub now: String,
    /// `(field index, change)` pairs.
    pub changes: Vec<(usize, Change)>,
    /// Only update when the stored version is one of these (`If-Match`); `None` means
    /// unconditionally.
    pub if_match: Option<Vec<i64>>,
    /// Judges the record as it stands, inside the write transaction, before the changes
    /// apply (field write rules); its refusal aborts the write.
    pub guard: Option<WriteGuard>,
    /// Which records changed relations may point at.
    pub targets: Targets,
    /// The user who writes (recorded in the event log), when a user does.
    pub actor: Option<String>,
}

impl std::fmt::Debug for Update {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Update")
            .field("now", &self.now)
            .field("changes", &self.changes)
            .field("if_match", &self.if_match)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

/// A check the caller runs on the current record inside a write transaction; refusing
/// with [`StoreError::Rejected`] rolls the write back.
pub type WriteGuard = Arc<dyn Fn(&Record) -> Result<(), StoreError> + Send + Sync>;

/// One write of a batch.
pub enum BatchOp {
    /// See [`Store::insert`].
    Insert {
        /// The resource.
        res: ResourceId,
        /// The record.
        record: NewRecord,
        /// The create rule.
        allowed: Option<Expr>,
    },
    /// See [`Store::update`]; a record the caller cannot see fails the batch.
    Update {
        /// The resource.
        res: ResourceId,
        /// The record's id.
        id: String,
        /// The changes.
        update: Update,
        /// The view and update rules.
        access: Access,
    },
    /// See [`Store::delete`]; a record the caller cannot see fails the batch.
    Delete {
        /// The resource.
        res: ResourceId,
        /// The record's id.
        id: String,
        /// Preconditions, rules and who deletes.
        deletion: Deletion,
    },
}

/// A delete, as judged for its caller.
#[derive(Debug, Clone)]
pub struct Deletion {
    /// Only delete when the stored version is one of these (`If-Match`).
    pub if_match: Option<Vec<i64>>,
    /// The view and delete rules.
    pub access: Access,
    /// The user who deletes (recorded in the event log), when a user does.
    pub actor: Option<String>,
    /// Time of the write (canonical datetime text).
    pub now: String,
}

/// What one write of a successful batch did.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// The stored record.
    Inserted(Record),
    /// The updated record.
    Updated(Record),
    /// The record is gone.
    Deleted,
}

/// Why a batch failed: the first operation that failed, and how. Nothing was written.
#[derive(Debug)]
pub struct BatchError {
    /// Position of the failed operation; `None` when the batch failed as a whole (the
    /// transaction could not begin or commit).
    pub index: Option<usize>,
    /// Its failure.
    pub error: StoreError,
}

/// What a store keeps of a response to replay it for a repeated `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers worth replaying, as a JSON array of `[name, value]` pairs.
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

/// The state of an idempotency key after trying to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or expired, or abandoned): the caller runs the request.
    Fresh,
    /// A request with this key is still running.
    InFlight,
    /// The key was used with a different request.
    Mismatch,
    /// The key's request finished: replay this.
    Done(StoredResponse),
}

/// A request to claim an idempotency key.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// The key, already scoped to its caller (and hashed).
    pub key: String,
    /// Fingerprint of the request (method, path, body).
    pub request_hash: String,
    /// Now (canonical datetime).
    pub now: String,
    /// Keys created before this are forgotten (24 h).
    pub expired_before: String,
    /// A request still running since before this is taken to have died.
    pub abandoned_before: String,
}

/// How busy the database connections are (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub connections: usize,
    /// Connections not running anything.
    pub idle: usize,
    /// Requests waiting for a connection.
    pub waiting: usize,
}

/// Row-level access of one write, compiled from the resource's rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Records outside this condition do not exist for the caller (404).
    pub visible: Option<Expr>,
    /// Visible records outside this condition may not be changed (403).
    pub allowed: Option<Expr>,
}

/// The data store, whichever database backs it: a handle on one concern at a time
/// ([`Store::records`], [`Store::sessions`], ...), each a trait both databases implement.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn Backend>,
    postgres: bool,
}

/// Everything a database provides, and what the store itself needs of it.
pub(crate) trait Backend:
    RecordStore + SessionStore + IdempotencyStore + EventLog + JobStore + Maintenance
{
    /// Counts this node's committed record writes, to wake event followers.
    fn written(&self) -> &tokio::sync::watch::Sender<u64>;

    /// Wakes `wake`'s waiters when another node enqueues a job (PostgreSQL's
    /// `LISTEN`); a single SQLite node has no other node to hear.
    fn listen_for_jobs(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = wake;
    }

    /// Wakes `wake`'s waiters when any node announces record writes (PostgreSQL's
    /// `LISTEN`); on SQLite every writer of the file is this node or a command whose
    /// writes a poll finds.
    fn listen_for_events(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = wake;
    }

    /// Announces this node's record writes to the other nodes (PostgreSQL's `NOTIFY`).
    fn announce_events(&self) {}

    /// Reads the event log for a follower (see [`EventFollower`]); `limit` 0 reads no
    /// event and moves the position past every final one.
    fn follow<'a>(
        &'a self,
        position: i64,
        horizons: &'a mut std::collections::VecDeque<crate::events::Horizon>,
        limit: usize,
    ) -> Fut<'a, Result<EventBatch, StoreError>>;
}

impl Store {
    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.inner
    }

    /// Records: reads, and the one write routine.
    pub fn records(&self) -> &dyn RecordStore {
        calls::count();
        &*self.inner
    }

    /// Identity state: refresh tokens, sessions, API keys, password hashes.
    pub fn sessions(&self) -> &dyn SessionStore {
        calls::count();
        &*self.inner
    }

    /// Idempotency keys.
    pub fn idempotency(&self) -> &dyn IdempotencyStore {
        calls::count();
        &*self.inner
    }

    /// Trimming the event log and finding its end (followers: [`Store::follow_events`]).
    pub fn events(&self) -> &dyn EventLog {
        calls::count();
        &*self.inner
    }

    /// The job queue.
    pub fn jobs(&self) -> &dyn JobStore {
        calls::count();
        &*self.inner
    }

    /// Wakes `wake`'s waiters whenever another node enqueues a due job.
    pub fn listen_for_jobs(&self, wake: Arc<tokio::sync::Notify>) {
        self.inner.listen_for_jobs(wake);
    }

    /// Wakes `wake`'s waiters whenever some node announces record writes, and starts
    /// announcing this node's (PostgreSQL; nothing on SQLite). Realtime follows the log
    /// on every node with it instead of polling.
    pub fn listen_for_events(&self, wake: Arc<tokio::sync::Notify>) {
        self.inner.announce_events();
        self.inner.listen_for_events(wake);
    }

    /// Migrations, readiness, pool statistics.
    pub fn maintenance(&self) -> &dyn Maintenance {
        &*self.inner
    }

    /// Opens the database named by the settings (relative paths resolve against `dir`)
    /// and brings its tables up to date as the environment allows: development applies
    /// pending migrations and additive changes itself, production refuses to start with
    /// anything pending (see [`migrate::StartupPolicy`]).
    pub fn open(dir: &Path, settings: &Settings, schema: Arc<Schema>) -> Result<Self, StoreError> {
        let policy = if settings.env == ferrobase_schema::settings::Environment::Production {
            migrate::StartupPolicy::Strict
        } else {
            migrate::StartupPolicy::Additive
        };
        Self::open_with(dir, settings, schema, policy)
    }

    /// [`Store::open`] with an explicit start-up policy (`migrate` commands use
    /// [`migrate::StartupPolicy::Manual`]).
    pub fn open_with(
        dir: &Path,
        settings: &Settings,
        schema: Arc<Schema>,
        policy: migrate::StartupPolicy,
    ) -> Result<Self, StoreError> {
        let files =
            migrate::read_migrations(&dir.join("migrations")).map_err(StoreError::Config)?;
        let url = settings.database.url.as_str();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            let path = dir.join(path);
            let store =
                SqliteStore::open(&path, settings.database.pool_size, schema, policy, &files)?;
            Ok(Self {
                inner: Arc::new(store),
                postgres: false,
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Must run inside the async runtime: the tables are prepared by a task.
            postgres::cache_statements(settings.database.statement_cache);
            let store = PgStore::connect(&settings.database, schema, policy, files)?;
            Ok(Self {
                inner: Arc::new(store),
                postgres: true,
            })
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL: {url}"
            )))
        }
    }

    /// Changes after every record write this node commits: an in-process wake-up for
    /// event followers (other nodes' writes are found by polling, or by the cross-node
    /// notifications realtime adds).
    pub fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.written().subscribe()
    }

    /// A follower of the event log starting after `position` (0: from the start of what
    /// is kept).
    pub fn follow_events(&self, position: i64) -> EventFollower {
        EventFollower {
            store: self.clone(),
            position,
            horizons: std::collections::VecDeque::new(),
        }
    }

    /// Which SQL dialect the store speaks.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// `"table"."id" = id`, typed as the store keeps ids.
    pub fn id_is(&self, table: &str, id: &str) -> sea_query::Expr {
        use sea_query::ExprTrait;
        let column =
            sea_query::Expr::col((sea_query::Alias::new(table), sea_query::Alias::new("id")));
        let value = sea_query::Expr::val(id.to_owned());
        column.eq(if self.postgres {
            value.cast_as("uuid".to_owned())
        } else {
            value
        })
    }
}
