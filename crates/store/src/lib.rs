//! Record storage. [`Store`] hides which database holds the data: SQLite today (WAL, one
//! writer thread and a pool of reader threads), PostgreSQL with the same interface later.
//! Rows are decoded by each field's declared type, never by driver type information.
#![forbid(unsafe_code)]

pub mod auth;
mod common;
mod error;
pub mod events;
mod list;
pub mod migrate;
mod postgres;
mod sqlite;
mod write;

use std::path::Path;
use std::sync::Arc;

use ferrobase_schema::{Schema, Settings};
use sea_query::Expr;
use serde_json::Value;

pub use auth::{ApiKeyRow, RefreshGrant, Rotation};
pub use error::StoreError;
pub use events::{EventBatch, EventFollower, EventOp, RecordEvent};
pub use list::{KeyType, ListQuery, SortKey};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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

/// Calls the same method on whichever database backs the store.
macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

/// Row-level access of one write, compiled from the resource's rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Records outside this condition do not exist for the caller (404).
    pub visible: Option<Expr>,
    /// Visible records outside this condition may not be changed (403).
    pub allowed: Option<Expr>,
}

/// The data store, whichever database backs it.
#[derive(Clone)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(Arc<SqliteStore>),
    /// PostgreSQL, shared by any number of nodes.
    Postgres(Arc<PgStore>),
}

impl Store {
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
            Ok(Self::Sqlite(Arc::new(store)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Must run inside the async runtime: the tables are prepared by a task.
            let store = PgStore::connect(url, settings.database.pool_size, schema, policy, files)?;
            Ok(Self::Postgres(Arc::new(store)))
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL: {url}"
            )))
        }
    }

    /// The recorded schema state (`None` before the first migration) and the applied
    /// migrations.
    pub async fn migrations(&self) -> Result<migrate::History, StoreError> {
        dispatch!(self, s => s.migrations().await)
    }

    /// Applies the pending migrations of `files`, each in its own transaction; refuses
    /// destructive steps unless allowed. Returns the names applied.
    pub async fn apply_migrations(
        &self,
        files: Vec<migrate::MigrationSource>,
        allow_destructive: bool,
        now: String,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.apply_migrations(files, allow_destructive, now).await)
    }

    /// Waits until the store can serve (PostgreSQL: its tables exist), at most `deadline`.
    pub async fn wait_ready(&self, deadline: std::time::Duration) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(s) => s.wait_ready(deadline).await,
        }
    }

    /// Wakes this node's event followers after a record write that may have committed.
    fn written(&self, ok: bool) {
        if ok {
            self.wakeups_sender()
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wakeups_sender(&self) -> &tokio::sync::watch::Sender<u64> {
        match self {
            Self::Sqlite(s) => &s.written,
            Self::Postgres(s) => &s.written,
        }
    }

    /// Changes after every record write this node commits: an in-process wake-up for
    /// event followers (other nodes' writes are found by polling, or by the cross-node
    /// notifications realtime adds).
    pub fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wakeups_sender().subscribe()
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

    /// Deletes the events written before `before` (canonical datetime text): the
    /// retention of `[events] retention`. Returns how many.
    pub async fn trim_events(&self, before: String) -> Result<u64, StoreError> {
        dispatch!(self, s => s.trim_events(before).await)
    }

    /// The highest `seq` committed so far (0 before the first event).
    pub async fn last_event(&self) -> Result<i64, StoreError> {
        dispatch!(self, s => s.last_event().await)
    }

    /// Which SQL dialect the store speaks.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// How busy the connections are.
    pub fn pool_stats(&self) -> PoolStats {
        dispatch!(self, s => s.pool_stats())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// One record by id, if it exists and satisfies `visible` (the view rule).
    pub async fn get(
        &self,
        res: ResourceId,
        id: String,
        visible: Option<Expr>,
    ) -> Result<Option<Record>, StoreError> {
        dispatch!(self, s => s.get(res, id, visible).await)
    }

    /// Records matching a list query, in its order.
    pub async fn list(&self, res: ResourceId, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        dispatch!(self, s => s.list(res, query).await)
    }

    /// The database's plan for a list query, one line per step (for diagnosing slow
    /// lists and for tests that prove an index is used).
    pub async fn explain(
        &self,
        res: ResourceId,
        query: ListQuery,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.explain(res, query).await)
    }

    /// How many records match `filter`.
    pub async fn count(&self, res: ResourceId, filter: Option<Expr>) -> Result<u64, StoreError> {
        dispatch!(self, s => s.count(res, filter).await)
    }

    /// The records with these ids that satisfy `visible` (in no particular order;
    /// missing ids are skipped).
    pub async fn get_many(
        &self,
        res: ResourceId,
        ids: Vec<String>,
        visible: Option<Expr>,
    ) -> Result<Vec<Record>, StoreError> {
        dispatch!(self, s => s.get_many(res, ids, visible).await)
    }

    /// Inserts a record and returns it as stored; when the new record does not satisfy
    /// `allowed` (the create rule) nothing is stored and the result is `Forbidden`.
    pub async fn insert(
        &self,
        res: ResourceId,
        record: NewRecord,
        allowed: Option<Expr>,
    ) -> Result<Record, StoreError> {
        let out = dispatch!(self, s => s.insert(res, record, allowed).await);
        self.written(out.is_ok());
        out
    }

    /// Applies an update; `Ok(None)` when no visible record has that id, `Forbidden`
    /// when the record is visible but `access.allowed` refuses.
    pub async fn update(
        &self,
        res: ResourceId,
        id: String,
        update: Update,
        access: Access,
    ) -> Result<Option<Record>, StoreError> {
        let out = dispatch!(self, s => s.update(res, id, update, access).await);
        self.written(out.is_ok());
        out
    }

    /// Deletes a record; `Ok(false)` when no visible record has that id. With `if_match`,
    /// only when the stored version is one of those (else [`StoreError::VersionMismatch`]).
    pub async fn delete(
        &self,
        res: ResourceId,
        id: String,
        deletion: Deletion,
    ) -> Result<bool, StoreError> {
        let out = dispatch!(self, s => s.delete(res, id, deletion).await);
        self.written(out.is_ok());
        out
    }

    /// Runs every write in one transaction, in order: all of them happen, or none.
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<Vec<BatchOutcome>, BatchError> {
        let out = dispatch!(self, s => s.batch(ops).await);
        self.written(out.is_ok());
        out
    }

    /// Claims an idempotency key (see [`Claim`]); expired keys are purged on the way.
    pub async fn claim_idempotency(&self, claim: IdempotencyClaim) -> Result<Claim, StoreError> {
        dispatch!(self, s => s.claim_idempotency(claim).await)
    }

    /// Stores the response of a claimed key's request.
    pub async fn complete_idempotency(
        &self,
        key: String,
        response: StoredResponse,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.complete_idempotency(key, response).await)
    }

    /// Gives a claimed key up (its request failed in a way worth retrying).
    pub async fn release_idempotency(&self, key: String) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_idempotency(key).await)
    }

    /// Stores a new refresh token (the first of a family at login).
    pub async fn insert_refresh(&self, grant: RefreshGrant) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_refresh(grant).await)
    }

    /// Presents a refresh token: rotation, or family revocation on reuse.
    pub async fn rotate_refresh(
        &self,
        presented_hash: String,
        next: RefreshGrant,
    ) -> Result<Rotation, StoreError> {
        dispatch!(self, s => s.rotate_refresh(presented_hash, next).await)
    }

    /// Revokes the family of a refresh token (logout).
    pub async fn revoke_refresh(
        &self,
        token_hash: String,
        now: String,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke_refresh(token_hash, now).await)
    }

    /// Revokes all refresh tokens and sessions of a user.
    pub async fn revoke_user(&self, user_id: String, now: String) -> Result<(), StoreError> {
        dispatch!(self, s => s.revoke_user(user_id, now).await)
    }

    /// Stores a cookie session: `[id, user id, token hash, created at, expires at]`.
    pub async fn insert_session(&self, session: [String; 5]) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_session(session).await)
    }

    /// The live session with this token hash: `(session id, user id)`.
    pub async fn session(
        &self,
        token_hash: String,
        now: String,
    ) -> Result<Option<(String, String)>, StoreError> {
        dispatch!(self, s => s.session(token_hash, now).await)
    }

    /// Ends a cookie session.
    pub async fn revoke_session(
        &self,
        token_hash: String,
        now: String,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke_session(token_hash, now).await)
    }

    /// Stores an API key.
    pub async fn insert_api_key(&self, key: ApiKeyRow) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_api_key(key).await)
    }

    /// One API key by id.
    pub async fn api_key(&self, id: String) -> Result<Option<ApiKeyRow>, StoreError> {
        dispatch!(self, s => s.api_key(id).await)
    }

    /// A user's API keys.
    pub async fn api_keys_of(&self, user_id: String) -> Result<Vec<ApiKeyRow>, StoreError> {
        dispatch!(self, s => s.api_keys_of(user_id).await)
    }

    /// Revokes a user's API key; whether it exists.
    pub async fn revoke_api_key(
        &self,
        user_id: String,
        id: String,
        now: String,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke_api_key(user_id, id, now).await)
    }

    /// Records an API key's use (at most once per `stale_before` window).
    pub async fn touch_api_key(
        &self,
        id: String,
        now: String,
        stale_before: String,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.touch_api_key(id, now, stale_before).await)
    }

    /// The id of the user with this email (case-insensitive).
    pub async fn user_id_by_email(&self, email: String) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.user_id_by_email(email).await)
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(
        &self,
        user_id: String,
        hash: String,
        now: String,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.set_password_hash(user_id, hash, now).await)
    }
}
