//! PostgreSQL: a pool of connections (deadpool) for writes and transactions, a few shared
//! pipelined connections for single-statement reads ([`shared`]), statements built by
//! sea-query, each write in one transaction with row locks (or one statement). The schema's tables are created by a
//! background task that retries until the database answers, so the server can start
//! (and report itself not ready) before PostgreSQL is up.

mod auth;
mod conn;
mod group;
pub(crate) use conn::cache_statements;
pub(crate) mod ddl;
mod idempotency;
mod identity;
mod jobs;
pub(crate) mod records;
mod shared;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use ferrobase_schema::{Resource, Schema};
use sea_query::Expr;
use tokio_postgres::{Client, NoTls};

use crate::auth::{ApiKeyRow, RefreshGrant, Rotation};
use crate::events::EventBatch;
use crate::write;
use crate::{
    Access, BatchError, BatchOp, BatchOutcome, Claim, Deletion, IdempotencyClaim, ListQuery,
    NewRecord, Record, ResourceId, StoreError, StoredResponse, Update,
};

/// Most horizons a follower keeps while a long transaction holds the log back.
const MAX_HORIZONS: usize = 1024;

/// Most prepared statements kept per connection.
pub(crate) const MAX_CACHED_STATEMENTS: usize = 512;

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// The connections single-statement reads share (see [`shared`]).
    readers: shared::Readers,
    /// Writes creates in groups (see [`group`]); none with `create_batch = 1`.
    creates: Option<group::Creates>,
    schema: Arc<Schema>,
    ready: Arc<AtomicBool>,
    /// Announces readiness (or a refusal to start) to waiters.
    ready_signal: tokio::sync::watch::Receiver<Readiness>,
    /// Counts the record writes this node committed, to wake its event followers.
    pub(crate) written: tokio::sync::watch::Sender<u64>,
    /// How to connect (the job listener's own connection).
    config: tokio_postgres::Config,
}

/// Where preparing the database stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Readiness {
    /// Waiting for the database or changing its schema.
    Preparing,
    /// Serving.
    Ready,
    /// The database cannot be used as configured (a refused migration, say).
    Refused(String),
}

impl PgStore {
    /// A store for `url`; tables are created in the background as soon as the database
    /// answers (until then every operation is `Unavailable`).
    pub fn connect(
        settings: &ferrobase_schema::settings::DatabaseSettings,
        schema: Arc<Schema>,
        policy: crate::migrate::StartupPolicy,
        files: Vec<crate::migrate::MigrationSource>,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        // A connection whose peer vanished without closing it (a host gone, a dropped
        // route) is given up after 30 s of unanswered sends, not the kernel's quarter of an
        // hour, so statements queued on it fail as unavailable and it is opened again.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(2))
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("cannot build the PostgreSQL pool: {e}")))?;
        let ready = Arc::new(AtomicBool::new(false));
        let (signal, ready_signal) = tokio::sync::watch::channel(Readiness::Preparing);
        let (p, s, r) = (pool.clone(), schema.clone(), ready.clone());
        tokio::spawn(async move { prepare(p, s, r, signal, policy, files).await });
        let written = tokio::sync::watch::Sender::new(0);
        let creates = (settings.create_batch > 1).then(|| {
            group::Creates::start(
                pool.clone(),
                schema.clone(),
                written.clone(),
                // Leave the pool a connection for every other write.
                settings.create_writers.min(settings.pool_size.max(2) - 1),
                settings.create_batch,
            )
        });
        Ok(Self {
            readers: shared::Readers::new(config.clone(), settings.read_connections),
            creates,
            pool,
            schema,
            ready,
            ready_signal,
            written,
            config,
        })
    }

    fn resource(&self, res: ResourceId) -> Result<&Resource, StoreError> {
        self.schema
            .resources
            .get(res.0)
            .ok_or_else(|| StoreError::Internal(format!("unknown resource {}", res.0)))
    }

    /// `Unavailable` until the schema's tables are in place.
    fn ready(&self) -> Result<(), StoreError> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "PostgreSQL is not ready yet".into(),
            ))
        }
    }

    /// A connection for one read: a shared one, or one from the pool when reads share none
    /// or every shared one is stalled.
    async fn reader(&self) -> Result<shared::ReadConn, StoreError> {
        if self.readers.enabled() {
            self.ready()?;
            if let Some(shared) = self.readers.take().await {
                return Ok(shared::ReadConn::Shared(shared));
            }
        }
        Ok(shared::ReadConn::Pooled(Box::new(self.client().await?)))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.ready()?;
        checkout(&self.pool).await
    }
}

/// A connection from `pool`.
async fn checkout(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    let client = pool.get().await?;
    // Filters make statement texts as varied as clients like: bound the cache.
    if client.statement_cache.size() > MAX_CACHED_STATEMENTS {
        client.statement_cache.clear();
    }
    Ok(client)
}

/// Brings the schema's tables up to date (see [`crate::migrate::StartupPolicy`]),
/// retrying with backoff until the database answers.
async fn prepare(
    pool: Pool,
    schema: Arc<Schema>,
    ready: Arc<AtomicBool>,
    signal: tokio::sync::watch::Sender<Readiness>,
    policy: crate::migrate::StartupPolicy,
    files: Vec<crate::migrate::MigrationSource>,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut client = pool.get().await?;
            let now = ferrobase_schema::validate::format_datetime(time::OffsetDateTime::now_utc());
            crate::migrate::postgres::startup(&mut client, &schema, policy, &files, &now).await
        };
        match attempt.await {
            Ok(done) => {
                for change in &done {
                    tracing::info!(change = %change, "schema change applied");
                }
                tracing::info!("PostgreSQL is ready");
                ready.store(true, Ordering::SeqCst);
                let _ = signal.send(Readiness::Ready);
                return;
            }
            Err(StoreError::Config(message)) => {
                tracing::error!(error = %message, "the database does not match the schema");
                let _ = signal.send(Readiness::Refused(message));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "PostgreSQL is not reachable yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs `$body` with `$c` bound to a connection for one read (see [`PgStore::reader`]).
macro_rules! read {
    ($self:ident, $c:ident => $body:expr) => {{
        let conn = $self.reader().await?;
        let $c = &conn;
        $body
    }};
}

/// Runs `$body` with `$c` bound to a transaction that commits when it succeeds.
macro_rules! write {
    ($self:ident, $c:ident => $body:expr) => {{
        let mut client = $self.client().await?;
        let transaction = client.transaction().await?;
        let out = {
            let $c: &deadpool_postgres::Transaction<'_> = &transaction;
            $body
        }?;
        transaction.commit().await?;
        Ok(out)
    }};
}

impl PgStore {
    /// The statements of a write on `tx`, for the shared write routine.
    fn tx<'a, C: conn::Conn>(&'a self, tx: &'a C) -> records::PgTx<'a, C> {
        records::PgTx {
            conn: tx,
            schema: &self.schema,
        }
    }

    /// Reads the event log for an [`crate::EventFollower`] at `position`: up to the
    /// highest `seq` that no running transaction can still commit (see the follower's
    /// docs), at most `limit` events; with `limit` 0 none, and the position moves past
    /// every final event unread.
    pub(crate) async fn follow_log(
        &self,
        position: i64,
        horizons: &mut VecDeque<crate::events::Horizon>,
        limit: usize,
    ) -> Result<EventBatch, StoreError> {
        let client = self.client().await?;
        // First how far the sequence has been handed out, then which transactions hold
        // a transaction id: every transaction that took a `seq` up to there already had
        // its id (a record write precedes its event), so while it runs it is among them.
        let handed: i64 = client
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM \"_ferrobase_event_seq\"",
                &[],
            )
            .await?
            .get(0);
        let running: Vec<u32> = client
            .query(
                "SELECT backend_xid::text FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND datname = current_database()",
                &[],
            )
            .await?
            .iter()
            .filter_map(|row| row.get::<_, Option<String>>(0)?.parse().ok())
            .collect();
        if handed > position && horizons.back().is_none_or(|h| handed > h.seq) {
            if horizons.len() >= MAX_HORIZONS {
                // A later horizon covers an earlier one: whatever took a seq below the
                // earlier one and still ran at the later reading is in the later set.
                horizons.pop_back();
            }
            horizons.push_back(crate::events::Horizon {
                seq: handed,
                running: running.clone(),
            });
        }
        let mut safe = position;
        while let Some(front) = horizons.front() {
            if front.running.iter().any(|xid| running.contains(xid)) {
                break;
            }
            safe = safe.max(front.seq);
            horizons.pop_front();
        }
        if safe <= position || limit == 0 {
            return Ok(EventBatch {
                events: Vec::new(),
                position: safe.max(position),
            });
        }
        let conn: &deadpool_postgres::ClientWrapper = &client;
        let events = records::events_between(conn, position, safe, None, limit).await?;
        let position = match events.last() {
            Some(last) if events.len() >= limit => last.seq,
            _ => safe,
        };
        Ok(EventBatch { events, position })
    }
}

use crate::Fut;
use crate::auth::{LiveSession, SessionRow};
use ferrobase_schema::validate::format_datetime;

impl crate::RecordStore for PgStore {
    fn get(
        &self,
        res: ResourceId,
        id: String,
        visible: Option<Expr>,
    ) -> Fut<'_, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            read!(self, c => records::get(c, resource, &id, visible).await)
        })
    }

    fn list(&self, res: ResourceId, query: ListQuery) -> Fut<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            read!(self, c => records::select(c, resource, query).await)
        })
    }

    fn explain(
        &self,
        res: ResourceId,
        query: ListQuery,
    ) -> Fut<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            read!(self, c => records::explain(c, resource, &query).await)
        })
    }

    fn list_joined(
        &self,
        res: ResourceId,
        query: ListQuery,
        joins: Vec<crate::Join>,
    ) -> Fut<'_, Result<Vec<crate::Joined>, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            let targets = joins
                .iter()
                .map(|j| self.resource(j.target))
                .collect::<Result<Vec<_>, _>>()?;
            read!(self, c => records::select_joined(c, resource, &query, &joins, &targets).await)
        })
    }

    fn count(&self, res: ResourceId, filter: Option<Expr>) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            read!(self, c => records::count(c, resource, filter).await)
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
            let resource = self.resource(res)?;
            read!(self, c => records::count_by(c, resource, filter, &column, &ids).await)
        })
    }

    fn judge(
        &self,
        res: ResourceId,
        record: Record,
        conds: Vec<Expr>,
    ) -> Fut<'_, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            read!(self, c => records::judge(c, resource, &record, conds).await)
        })
    }

    fn get_many(
        &self,
        res: ResourceId,
        ids: Vec<String>,
        visible: Option<Expr>,
    ) -> Fut<'_, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            read!(self, c => records::get_many(c, resource, ids, visible).await)
        })
    }

    fn insert(
        &self,
        res: ResourceId,
        record: NewRecord,
        allowed: Option<Expr>,
    ) -> Fut<'_, Result<Record, StoreError>> {
        Box::pin(async move {
            let resource = self.resource(res)?;
            let out = if records::insert_fits_one_statement(resource, allowed.as_ref()) {
                records::insert_at_once(self, res, resource, record).await
            } else {
                async move {
                    write!(self, tx => write::insert(&self.tx(tx), res, record, allowed.as_ref()).await)
                }
                .await
            };
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
                write!(self, tx => write::update(&self.tx(tx), res, &id, update, &access).await)
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
                write!(self, tx => write::delete(&self.tx(tx), res, &id, &deletion).await)
            }
            .await;
            self.woke(out)
        })
    }

    fn batch(&self, ops: Vec<BatchOp>) -> Fut<'_, Result<Vec<BatchOutcome>, BatchError>> {
        Box::pin(async move {
            let out = async move {
                let whole = |error| BatchError { index: None, error };
                let mut client = self.client().await.map_err(whole)?;
                let transaction = client.transaction().await.map_err(|e| whole(e.into()))?;
                let mut outcomes = Vec::with_capacity(ops.len());
                for (index, op) in ops.into_iter().enumerate() {
                    match write::batch_op(&self.tx(&transaction), op).await {
                        Ok(outcome) => outcomes.push(outcome),
                        // Dropping the transaction rolls every earlier write back.
                        Err(error) => {
                            return Err(BatchError {
                                index: Some(index),
                                error,
                            });
                        }
                    }
                }
                transaction.commit().await.map_err(|e| whole(e.into()))?;
                Ok(outcomes)
            }
            .await;
            self.woke(out)
        })
    }
}

impl crate::SessionStore for PgStore {
    fn insert_refresh(&self, grant: RefreshGrant) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move { write!(self, tx => auth::insert_refresh(tx, &grant).await) })
    }

    fn rotate_refresh(
        &self,
        presented_hash: String,
        next: RefreshGrant,
    ) -> Fut<'_, Result<Rotation, StoreError>> {
        Box::pin(async move {
            write!(self, tx => auth::rotate_refresh(tx, &presented_hash, next).await)
        })
    }

    fn revoke_refresh(&self, token_hash: String, now: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(
            async move { write!(self, tx => auth::revoke_refresh(tx, &token_hash, &now).await) },
        )
    }

    fn revoke_user(&self, user_id: String, now: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move { write!(self, tx => auth::revoke_user(tx, &user_id, &now).await) })
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
            let client = self.client().await?;
            let sql = crate::auth::CREATE_EMAIL_TOKEN.replace("$2", "CAST($2::text AS uuid)");
            client
                .execute(&sql, &[&token_hash, &user_id, &purpose, &now, &expires_at])
                .await?;
            Ok(())
        })
    }

    fn use_email_token(
        &self,
        token_hash: String,
        purpose: String,
        now: String,
    ) -> Fut<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let sql = crate::auth::USE_EMAIL_TOKEN
                .replace("RETURNING \"user_id\"", "RETURNING \"user_id\"::text");
            Ok(client
                .query_opt(&sql, &[&token_hash, &purpose, &now])
                .await?
                .map(|r| r.get(0)))
        })
    }

    fn insert_session(&self, s: SessionRow) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let row = [
                s.id,
                s.user_id,
                s.token_hash,
                format_datetime(s.created_at),
                format_datetime(s.expires_at),
            ];
            write!(self, tx => auth::insert_session(tx, &row).await)
        })
    }

    fn session(
        &self,
        token_hash: String,
        now: time::OffsetDateTime,
    ) -> Fut<'_, Result<Option<LiveSession>, StoreError>> {
        Box::pin(async move {
            let now = format_datetime(now);
            let found: Option<(String, String)> =
                read!(self, c => auth::session(c, &token_hash, &now).await)?;
            Ok(found.map(|(id, user_id)| LiveSession { id, user_id }))
        })
    }

    fn revoke_session(&self, token_hash: String, now: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(
            async move { write!(self, tx => auth::revoke_session(tx, &token_hash, &now).await) },
        )
    }

    fn insert_api_key(&self, key: ApiKeyRow) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move { write!(self, tx => auth::insert_api_key(tx, &key).await) })
    }

    fn api_key(&self, id: String) -> Fut<'_, Result<Option<ApiKeyRow>, StoreError>> {
        Box::pin(async move { read!(self, c => auth::api_key(c, &id).await) })
    }

    fn api_keys_of(&self, user_id: String) -> Fut<'_, Result<Vec<ApiKeyRow>, StoreError>> {
        Box::pin(async move { read!(self, c => auth::api_keys_of(c, &user_id).await) })
    }

    fn put_ticket(&self, ticket: crate::Ticket, now: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move { write!(self, tx => identity::put_ticket(tx, &ticket, &now).await) })
    }

    fn take_ticket(
        &self,
        kind: String,
        id: String,
        now: String,
    ) -> Fut<'_, Result<Option<crate::Ticket>, StoreError>> {
        Box::pin(
            async move { write!(self, tx => identity::take_ticket(tx, &kind, &id, &now).await) },
        )
    }

    fn identity_user(
        &self,
        provider: String,
        subject: String,
    ) -> Fut<'_, Result<Option<String>, StoreError>> {
        Box::pin(
            async move { read!(self, c => identity::identity_user(c, &provider, &subject).await) },
        )
    }

    fn link_identity(&self, row: crate::IdentityRow) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move { write!(self, tx => identity::link_identity(tx, &row).await) })
    }

    fn identities(&self, user_id: String) -> Fut<'_, Result<Vec<crate::IdentityRow>, StoreError>> {
        Box::pin(async move { read!(self, c => identity::identities(c, &user_id).await) })
    }

    fn unlink_identity(
        &self,
        user_id: String,
        provider: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            write!(self, tx => identity::unlink_identity(tx, &user_id, &provider).await)
        })
    }

    fn add_passkey(&self, row: crate::PasskeyRow) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move { write!(self, tx => identity::add_passkey(tx, &row).await) })
    }

    fn passkeys_of(&self, user_id: String) -> Fut<'_, Result<Vec<crate::PasskeyRow>, StoreError>> {
        Box::pin(async move { read!(self, c => identity::passkeys(c, "user_id", &user_id).await) })
    }

    fn passkeys_by_handle(
        &self,
        handle: String,
    ) -> Fut<'_, Result<Vec<crate::PasskeyRow>, StoreError>> {
        Box::pin(
            async move { read!(self, c => identity::passkeys(c, "user_handle", &handle).await) },
        )
    }

    fn use_passkey(
        &self,
        id: String,
        credential: String,
        counter: i64,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            write!(self, tx => identity::use_passkey(tx, &id, &credential, counter, &now).await)
        })
    }

    fn delete_passkey(&self, user_id: String, id: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(
            async move { write!(self, tx => identity::delete_passkey(tx, &user_id, &id).await) },
        )
    }

    fn mfa(&self, user_id: String) -> Fut<'_, Result<Option<crate::MfaRow>, StoreError>> {
        Box::pin(async move { read!(self, c => auth::mfa(c, &user_id).await) })
    }

    fn begin_mfa(
        &self,
        user_id: String,
        secret: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(
            async move { write!(self, tx => auth::begin_mfa(tx, &user_id, &secret, &now).await) },
        )
    }

    fn confirm_mfa(
        &self,
        user_id: String,
        secret: String,
        step: i64,
        recovery: Vec<String>,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            write!(self, tx => auth::confirm_mfa(tx, &user_id, &secret, step, &recovery).await)
        })
    }

    fn use_mfa_step(&self, user_id: String, step: i64) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move { write!(self, tx => auth::use_mfa_step(tx, &user_id, step).await) })
    }

    fn use_recovery_code(
        &self,
        user_id: String,
        hash: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            write!(self, tx => auth::use_recovery_code(tx, &user_id, &hash, &now).await)
        })
    }

    fn delete_mfa(&self, user_id: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move { write!(self, tx => auth::delete_mfa(tx, &user_id).await) })
    }

    fn revoke_api_key(
        &self,
        user_id: String,
        id: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(
            async move { write!(self, tx => auth::revoke_api_key(tx, &user_id, &id, &now).await) },
        )
    }

    fn touch_api_key(
        &self,
        id: String,
        now: String,
        stale_before: String,
    ) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            write!(self, tx => auth::touch_api_key(tx, &id, &now, &stale_before).await)
        })
    }

    fn user_id_by_email(&self, email: String) -> Fut<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move { read!(self, c => auth::user_id_by_email(c, &email).await) })
    }

    fn set_password_hash(
        &self,
        user_id: String,
        hash: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            write!(self, tx => auth::set_password_hash(tx, &user_id, &hash, &now).await)
        })
    }
}

impl crate::IdempotencyStore for PgStore {
    fn claim_idempotency(&self, claim: IdempotencyClaim) -> Fut<'_, Result<Claim, StoreError>> {
        Box::pin(async move { write!(self, tx => idempotency::claim(tx, &claim).await) })
    }

    fn complete_idempotency(
        &self,
        key: String,
        response: StoredResponse,
    ) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move { write!(self, tx => idempotency::complete(tx, &key, response).await) })
    }

    fn release_idempotency(&self, key: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move { write!(self, tx => idempotency::release(tx, &key).await) })
    }
}

impl crate::EventLog for PgStore {
    fn trim_events(&self, before: String) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let n = client
            .execute(
                "DELETE FROM \"_ferrobase_events\" WHERE \"at\" < CAST($1::text AS timestamptz)",
                &[&before],
            )
            .await?;
            Ok(n)
        })
    }

    fn last_event_before(&self, at: String) -> Fut<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            Ok(client
                .query_one(
                    "SELECT COALESCE(MAX(\"seq\"), 0) FROM \"_ferrobase_events\" WHERE \"at\" < CAST($1::text AS timestamptz)",
                    &[&at],
                )
                .await?
                .get(0))
        })
    }

    fn last_event(&self) -> Fut<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            Ok(client
                .query_one(
                    "SELECT COALESCE(MAX(\"seq\"), 0) FROM \"_ferrobase_events\"",
                    &[],
                )
                .await?
                .get(0))
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
            let client = self.client().await?;
            let conn: &deadpool_postgres::ClientWrapper = &client;
            records::events_between(conn, after, upto, resource.as_deref(), limit).await
        })
    }

    fn event_at_or_before(&self, seq: i64) -> Fut<'_, Result<Option<(i64, String)>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let conn: &deadpool_postgres::ClientWrapper = &client;
            records::event_at_or_before(conn, seq).await
        })
    }
}

impl crate::Maintenance for PgStore {
    fn migrations(&self) -> Fut<'_, Result<crate::migrate::History, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let out = crate::migrate::postgres::load(&tx).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    fn apply_migrations(
        &self,
        files: Vec<crate::migrate::MigrationSource>,
        allow_destructive: bool,
        now: String,
    ) -> Fut<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            crate::migrate::postgres::apply_pending(&mut client, &files, allow_destructive, &now)
                .await
        })
    }

    fn ping(&self) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let c: &Client = &client;
            c.simple_query("SELECT 1").await?;
            Ok(())
        })
    }

    fn wait_ready(&self, deadline: Duration) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut signal = self.ready_signal.clone();
            let state =
                tokio::time::timeout(deadline, signal.wait_for(|r| *r != Readiness::Preparing))
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable("PostgreSQL did not become ready in time".into())
                    })?
                    .map_err(|_| {
                        StoreError::Unavailable("PostgreSQL could not be prepared".into())
                    })?
                    .clone();
            match state {
                Readiness::Refused(why) => Err(StoreError::Config(why)),
                _ => Ok(()),
            }
        })
    }

    fn pool_stats(&self) -> crate::PoolStats {
        let status = self.pool.status();
        crate::PoolStats {
            connections: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }
}

impl crate::Backend for PgStore {
    fn written(&self) -> &tokio::sync::watch::Sender<u64> {
        &self.written
    }

    fn listen_for_jobs(&self, wake: Arc<tokio::sync::Notify>) {
        PgStore::listen_for_jobs(self, wake);
    }

    fn listen_for_events(&self, wake: Arc<tokio::sync::Notify>) {
        listen(self.config.clone(), EVENTS_CHANNEL, wake);
    }

    fn announce_events(&self) {
        PgStore::announce_events(self);
    }

    fn follow<'a>(
        &'a self,
        position: i64,
        horizons: &'a mut VecDeque<crate::events::Horizon>,
        limit: usize,
    ) -> Fut<'a, Result<EventBatch, StoreError>> {
        Box::pin(self.follow_log(position, horizons, limit))
    }
}

impl PgStore {
    /// Wakes this node's event followers after a record write that committed.
    fn woke<T, E>(&self, out: Result<T, E>) -> Result<T, E> {
        if out.is_ok() {
            self.written.send_modify(|n| *n = n.wrapping_add(1));
        }
        out
    }
}

/// The shortest time between two announcements of record writes.
const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(10);

/// The channel that carries the newest `seq` after record writes, to every node.
const EVENTS_CHANNEL: &str = "ferrobase_events";

/// Listens on `channel` on a connection of its own (reconnecting when it drops) and
/// wakes `wake`'s waiters for each notification, and once after every (re)connect:
/// what was announced while nobody listened is found by that wake-up.
pub(crate) fn listen(
    config: tokio_postgres::Config,
    channel: &'static str,
    wake: Arc<tokio::sync::Notify>,
) {
    tokio::spawn(async move {
        loop {
            match config.connect(NoTls).await {
                Ok((client, mut connection)) => {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let driver = tokio::spawn(async move {
                        loop {
                            let message =
                                std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                            match message {
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                                    if tx.send(()).is_err() {
                                        break;
                                    }
                                }
                                Some(Ok(_)) => {}
                                Some(Err(_)) | None => break,
                            }
                        }
                    });
                    if client
                        .batch_execute(&format!("LISTEN {channel}"))
                        .await
                        .is_ok()
                    {
                        wake.notify_waiters();
                        while rx.recv().await.is_some() {
                            // Notifications that queued up meanwhile need one wake-up.
                            while rx.try_recv().is_ok() {}
                            wake.notify_waiters();
                        }
                    }
                    driver.abort();
                }
                Err(e) => tracing::debug!(error = %e, channel, "cannot listen"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

impl PgStore {
    /// Announces this node's record writes to every node (`NOTIFY ferrobase_events`
    /// with the newest `seq` handed out), outside the writes' transactions: a write
    /// never waits for it, and writes that commit while one announcement is on its way,
    /// or within [`ANNOUNCE_INTERVAL`] after it, share the next one.
    pub(crate) fn announce_events(&self) {
        let mut written = self.written.subscribe();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while written.changed().await.is_ok() {
                let sent = async {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    client
                        .execute(
                            "SELECT pg_notify($1, last_value::text) FROM \"_ferrobase_event_seq\"",
                            &[&EVENTS_CHANNEL],
                        )
                        .await
                        .map_err(|e| e.to_string())
                };
                if let Err(e) = sent.await {
                    tracing::debug!(error = %e, "cannot announce record writes");
                }
                // At most one announcement per interval: every `NOTIFY` is a commit that
                // wakes each listening connection, and under a stream of writes one per
                // write cost the database more than the writes' own events. Writes of
                // the interval share the next one (other nodes hear of them at most
                // this much later).
                tokio::time::sleep(ANNOUNCE_INTERVAL).await;
            }
        });
    }
}
