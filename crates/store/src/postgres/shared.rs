//! Reads on a few connections that every request shares (`[database] read_connections`).
//!
//! A pooled connection carries one statement at a time: the request checks it out, sends,
//! waits for the answer and gives it back. tokio-postgres can instead send the statements
//! of many requests down one connection back to back and match the answers in order
//! (pipelining), so the server reads a burst of them with one system call and answers them
//! in one. Single-statement reads, which need no transaction, go this way; writes keep the
//! pool, where each commit waits for its own WAL flush without holding up the others.
//!
//! A read goes to the connection with the fewest reads in flight. A connection that has
//! answered nothing for [`STALLED`] while reads wait on it is taken to be stuck behind a
//! slow query, and new reads go elsewhere: to another shared connection, or to the pool
//! when every shared one is stuck. So a slow query holds up only the reads that were queued
//! behind it before it was seen to be slow. A connection that closed (PostgreSQL restarted,
//! say) is opened again by the next read that picks it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sea_query::Values;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::MAX_CACHED_STATEMENTS;
use super::conn::{Conn, caching, refs, typed, types, with_types};
use crate::StoreError;

/// How long opening a shared connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a busy connection may go without answering before reads avoid it (ms). A read
/// here takes a millisecond or two even under load.
const STALLED: u64 = 50;

/// Milliseconds since the first call: a clock that is cheap to read and to store.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The shared read connections of one store.
pub(crate) struct Readers {
    slots: Vec<Slot>,
    config: tokio_postgres::Config,
}

/// One shared connection, opened on first use and again after it closed.
#[derive(Default)]
struct Slot {
    live: Mutex<Option<Arc<Reader>>>,
    /// Held while opening, so concurrent reads wait for one connection, not open several.
    opening: tokio::sync::Mutex<()>,
    /// After opening failed, reads use the pool until then ([`now_ms`]).
    closed_until: AtomicU64,
}

/// How long reads use the pool after a shared connection failed to open (ms).
const REOPEN_AFTER: u64 = 1000;

/// Prepared statements by SQL text, one per list of parameter types.
type Prepared = HashMap<String, Vec<(Vec<Type>, Statement)>>;

/// An open shared connection with its prepared statements.
struct Reader {
    client: Client,
    /// Its prepared statements.
    statements: Mutex<Prepared>,
    /// Reads holding this connection.
    in_flight: AtomicUsize,
    /// When it last answered, or became busy after being idle ([`now_ms`]).
    progress: AtomicU64,
    /// Set when a statement found the connection gone, before the client itself may know.
    broken: AtomicBool,
}

impl Reader {
    /// Whether it can carry reads.
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.client.is_closed()
    }

    /// Whether reads wait on it and it has answered none of them for [`STALLED`].
    fn stalled(&self, now: u64) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
            && now.saturating_sub(self.progress.load(Ordering::Relaxed)) > STALLED
    }
}

/// A shared connection taken for one read; counts as in flight until dropped, or, when
/// dropped while a statement of it is still unanswered, until the connection has answered
/// that statement.
pub(crate) struct Shared {
    reader: Arc<Reader>,
    /// Whether a statement was sent and its answer not yet read.
    waiting: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let reader = &self.reader;
        if self.waiting.load(Ordering::Relaxed)
            && reader.usable()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // The read was given up (its request timed out or went away), but its statement
            // still runs or waits on the connection, and what is sent next waits behind it.
            // So it stays in flight, and the connection can still be seen to stall, until
            // an empty statement sent now is answered: answers come in order.
            let reader = reader.clone();
            runtime.spawn(async move {
                let _ = reader.client.simple_query("").await;
                reader.progress.store(now_ms(), Ordering::Relaxed);
                reader.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
            return;
        }
        reader.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Readers {
    /// `count` shared connections to the database `config` names; none is opened yet.
    pub(crate) fn new(config: tokio_postgres::Config, count: usize) -> Self {
        Self {
            slots: (0..count).map(|_| Slot::default()).collect(),
            config,
        }
    }

    /// Whether reads share connections at all (`read_connections = 0` sends them to the pool).
    pub(crate) fn enabled(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The connection with the fewest reads in flight, opened if it is not; none when every
    /// one is stalled behind a slow query or cannot be opened (the read then takes a pooled
    /// connection).
    pub(crate) async fn take(&self) -> Option<Shared> {
        let now = now_ms();
        let mut best: Option<(usize, &Slot, Option<Arc<Reader>>)> = None;
        for slot in &self.slots {
            let live = slot
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|r| r.usable());
            let unopened = live.is_none() && now < slot.closed_until.load(Ordering::Relaxed);
            if unopened || live.as_ref().is_some_and(|r| r.stalled(now)) {
                continue;
            }
            let load = live
                .as_ref()
                .map_or(0, |r| r.in_flight.load(Ordering::Relaxed));
            if best.as_ref().is_none_or(|(l, _, _)| load < *l) {
                let idle = load == 0;
                best = Some((load, slot, live));
                if idle {
                    break;
                }
            }
        }
        let (_, slot, live) = best?;
        let reader = match live {
            Some(reader) => reader,
            None => match self.open(slot).await {
                Ok(reader) => reader,
                Err(e) => {
                    // The pool may still have connections: reads go there for a while.
                    tracing::warn!(error = %e, "cannot open a shared PostgreSQL read connection; reading on pooled ones");
                    slot.closed_until
                        .store(now_ms() + REOPEN_AFTER, Ordering::Relaxed);
                    return None;
                }
            },
        };
        if reader.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            reader.progress.store(now_ms(), Ordering::Relaxed);
        }
        Some(Shared {
            reader,
            waiting: AtomicBool::new(false),
        })
    }

    /// Opens `slot`'s connection, unless a concurrent read just did.
    async fn open(&self, slot: &Slot) -> Result<Arc<Reader>, StoreError> {
        let _opening = slot.opening.lock().await;
        if now_ms() < slot.closed_until.load(Ordering::Relaxed) {
            // Opening failed while this read waited to try.
            return Err(StoreError::Unavailable(
                "a shared read connection failed to open just now".into(),
            ));
        }
        if let Some(reader) = slot
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|r| r.usable())
        {
            return Ok(reader);
        }
        // Whatever keeps the connection from opening (the server is down, refuses
        // connections, has too many), the database is unavailable for now.
        let (client, connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls))
                .await
                .map_err(|_| StoreError::Unavailable("PostgreSQL did not answer in time".into()))?
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}"))
                })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "a shared PostgreSQL read connection closed");
            }
        });
        let reader = Arc::new(Reader {
            client,
            statements: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            progress: AtomicU64::new(now_ms()),
        });
        *slot.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader.clone());
        Ok(reader)
    }
}

impl Reader {
    /// The statement for `sql` with parameters of `types`, prepared on first use.
    async fn statement(
        &self,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        let cached = {
            let statements = self.statements.lock().unwrap_or_else(|e| e.into_inner());
            statements
                .get(sql)
                .and_then(|v| v.iter().find(|(t, _)| t == types))
                .map(|(_, s)| s.clone())
        };
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare_typed(sql, types).await?;
        let mut statements = self.statements.lock().unwrap_or_else(|e| e.into_inner());
        // Filters make statement texts as varied as clients like: bound the cache.
        if statements.len() >= MAX_CACHED_STATEMENTS {
            statements.clear();
        }
        let prepared = statements.entry(sql.to_owned()).or_default();
        // A concurrent read may have prepared it meanwhile: keep one.
        if let Some((_, earlier)) = prepared.iter().find(|(t, _)| t == types) {
            return Ok(earlier.clone());
        }
        prepared.push((types.to_vec(), statement.clone()));
        Ok(statement)
    }
}

impl Shared {
    async fn run(&self, sql: &str, values: Values) -> Result<Vec<Row>, tokio_postgres::Error> {
        let params = typed(values);
        let reader = &self.reader;
        if !caching() {
            return reader.client.query_typed(sql, &with_types(&params)).await;
        }
        let statement = reader.statement(sql, &types(&params)).await?;
        reader.client.query(&statement, &refs(&params)).await
    }
}

impl Conn for Shared {
    async fn rows(&self, (sql, values): (String, Values)) -> Result<Vec<Row>, StoreError> {
        self.waiting.store(true, Ordering::Relaxed);
        let rows = self.run(&sql, values).await;
        self.waiting.store(false, Ordering::Relaxed);
        self.reader.progress.store(now_ms(), Ordering::Relaxed);
        if let Err(e) = &rows
            && (e.is_closed()
                || e.as_db_error()
                    .is_some_and(|db| db.code() == &SqlState::ADMIN_SHUTDOWN))
        {
            // The next read opens a new connection.
            self.reader.broken.store(true, Ordering::Relaxed);
        }
        Ok(rows?)
    }
}

/// A connection for one read: shared, or checked out of the pool.
pub(crate) enum ReadConn {
    Shared(Shared),
    Pooled(Box<deadpool_postgres::Object>),
}

impl Conn for ReadConn {
    async fn rows(&self, statement: (String, Values)) -> Result<Vec<Row>, StoreError> {
        match self {
            Self::Shared(shared) => shared.rows(statement).await,
            Self::Pooled(client) => {
                let client: &deadpool_postgres::ClientWrapper = client;
                client.rows(statement).await
            }
        }
    }
}
