//! Realtime (SPEC §10): every node follows the event log and hands each event to the
//! subscriptions it holds, after judging it against each subscriber's view rule and
//! filter (in memory, or in SQL once per event for all subscribers whose rule follows
//! relations), shaped exactly like a REST read for that subscriber.
//!
//! Transports (SSE and WebSocket in `http`) open a [`Connection`], subscribe, and read
//! [`Out`] messages from it. A subscription is live from the moment [`Connection::subscribe`]
//! returns: it is registered at the hub's position under the registry's write lock, which
//! the hub holds (shared) while it delivers a batch, so no event falls between the
//! subscription and the hub. Resuming (`after`, `Last-Event-ID`) replays the missed
//! events from the log before the live ones; a position older than the retention gets a
//! `reset` instead.
#![forbid(unsafe_code)]

mod connection;
mod error;
mod judge;
mod metrics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ferrobase_access::{Identity, auth_map};
use ferrobase_query::check::Cond;
use ferrobase_records::Records;
use ferrobase_schema::settings::RealtimeSettings;
use ferrobase_store::ResourceId;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, watch};

pub use connection::Connection;
pub use error::RealtimeError;
pub use metrics::RealtimeMetrics;

/// Events read from the log per step.
const BATCH: usize = 500;

/// Subscriptions per connection whose filter follows a relation (each adds to the SQL
/// the database runs for every event of its resource).
const RELATION_FILTERS: usize = 5;

/// Who a connection acts for: the caller, the caller as rules see it, and when the
/// credential stops being good.
#[derive(Debug, Clone)]
pub struct Who {
    /// The caller.
    pub identity: Identity,
    /// `@auth` of the caller, built once.
    auth: Option<Map<String, Value>>,
    /// Equal for callers whom every rule judges alike (same user, role, user record and
    /// credential scopes): judgements of an event are shared between them.
    key: Arc<str>,
    /// When the credential expires (bearer access tokens).
    pub expires: Option<OffsetDateTime>,
}

impl Who {
    /// How long until the credential expires at `now` (zero once it has; `None` when it
    /// does not expire).
    pub fn expires_in(&self, now: OffsetDateTime) -> Option<Duration> {
        let left = self.expires? - now;
        Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
    }
}

/// A record event for a connection's client, which its subscriber may see.
#[derive(Debug, Clone)]
pub struct Out {
    /// The event's position in the log.
    pub seq: i64,
    /// The WebSocket subscription it belongs to (`None` on SSE).
    pub subscription: Option<Arc<str>>,
    /// `{"op":...,"record":{...}}`, shared by every subscriber who sees the same fields.
    pub data: Arc<str>,
}

impl Out {
    fn size(&self) -> usize {
        self.data.len() + 64
    }
}

/// Why a connection is being ended by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// It fell a whole buffer behind (count or bytes); the client resumes from its last
    /// `seq`.
    Overflow,
    /// The node is shutting down; the client reconnects elsewhere.
    Shutdown,
}

/// The realtime service of one node; cheap to clone.
#[derive(Clone)]
pub struct Realtime(Arc<Inner>);

struct Inner {
    records: Records,
    settings: RealtimeSettings,
    retention: Duration,
    /// Live subscriptions per resource. The hub holds it shared while it delivers a
    /// batch; subscribing takes it exclusively.
    registry: tokio::sync::RwLock<Vec<Vec<Arc<Sub>>>>,
    /// Every event up to here has been handed to the live subscriptions.
    position: AtomicI64,
    started: AtomicBool,
    counts: Mutex<Counts>,
    metrics: RealtimeMetrics,
    shutdown: watch::Sender<bool>,
    wake: Arc<Notify>,
    /// Signalled when a subscription needs the hub now: one is about to start, or has
    /// just started (the hub skips the log unread while nobody subscribes).
    demand: Notify,
    /// Signalled whenever a connection ends.
    ended: Notify,
    /// Signalled whenever the hub moved its position.
    advanced: Notify,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// One subscription, as the hub sees it.
pub(crate) struct Sub {
    /// Unique on the node: queued messages carry it, so those of a subscription that
    /// ended (unsubscribed, or made again after a fresh `auth`) are never sent.
    pub(crate) serial: u64,
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) res: ResourceId,
    pub(crate) record_id: Option<String>,
    pub(crate) filter: Option<Cond>,
    /// The filter as written: subscribers with the same caller and filter share one
    /// judgement per event.
    pub(crate) filter_text: Option<Arc<str>>,
    /// Events up to here are not this subscription's (it began, or resumed, after them).
    pub(crate) live_from: i64,
}

/// A connection's side shared with the hub: its queue and who it acts for.
pub(crate) struct ConnShared {
    /// Boxed: the queue's slots are allocated in blocks up front, and an idle
    /// connection's memory matters more than one small allocation per message.
    tx: mpsc::Sender<Box<(u64, Out)>>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    who: RwLock<Arc<Who>>,
    /// Why the server ends the connection (0: it does not), and the wake-up of its
    /// reader (smaller than a watch channel: idle connections are many).
    close: std::sync::atomic::AtomicU8,
    closing: Notify,
    /// No events while the credential is expired (WebSocket, until a fresh `auth`).
    paused: AtomicBool,
}

impl ConnShared {
    fn close_reason(&self) -> Option<Close> {
        match self.close.load(Ordering::SeqCst) {
            1 => Some(Close::Overflow),
            2 => Some(Close::Shutdown),
            _ => None,
        }
    }

    /// Ends the connection for `reason` unless it already ends; true when this did.
    pub(crate) fn end(&self, reason: Close) -> bool {
        let code = match reason {
            Close::Overflow => 1,
            Close::Shutdown => 2,
        };
        let ended = self
            .close
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if ended {
            self.closing.notify_one();
        }
        ended
    }

    pub(crate) fn who(&self) -> Arc<Who> {
        self.who
            .read()
            .map_or_else(|p| p.into_inner().clone(), |w| w.clone())
    }

    pub(crate) fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Queues a message; a connection that cannot take it is cut off (it resumes).
    pub(crate) fn offer(&self, serial: u64, out: Out, metrics: &RealtimeMetrics) -> bool {
        match self.close_reason() {
            None => {}
            Some(Close::Overflow) => {
                metrics.dropped.inc();
                return false;
            }
            // A connection that ended is owed nothing.
            Some(Close::Shutdown) => return false,
        }
        let size = out.size();
        let queued = self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size;
        if queued > self.max_bytes || self.tx.try_send(Box::new((serial, out))).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            metrics.dropped.inc();
            if self.end(Close::Overflow) {
                metrics.overflows.inc();
            }
            return false;
        }
        metrics.delivered.inc();
        true
    }
}

/// What a subscription asks for.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    /// The WebSocket subscription's id (`None` for SSE: one per connection).
    pub name: Option<String>,
    /// The resource.
    pub resource: String,
    /// A filter in the expression language.
    pub filter: Option<String>,
    /// Only this record.
    pub record_id: Option<String>,
    /// Resume after this `seq`.
    pub after: Option<i64>,
}

/// How a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event.
    Live,
    /// With the events after `after` up to `upto` from the log ([`Connection::replay`]),
    /// then the live ones.
    Replay {
        /// The position resumed from.
        after: i64,
        /// Where the live events begin.
        upto: i64,
    },
    /// The position is older than the log keeps: a `reset`, then the live events,
    /// which begin after `at` (the position to resume from next time).
    Reset {
        /// Where the live events begin.
        at: i64,
    },
}

/// A subscription that [`Connection::subscribe`] made live.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// How it starts.
    pub start: Start,
}

impl Realtime {
    /// The service over `records` (which it follows the log of); start it with
    /// [`Realtime::start`].
    pub fn new(records: Records, settings: RealtimeSettings, retention: Duration) -> Self {
        let resources = records.schema().resources.len();
        Realtime(Arc::new(Inner {
            records,
            settings,
            retention,
            registry: tokio::sync::RwLock::new(vec![Vec::new(); resources]),
            position: AtomicI64::new(0),
            started: AtomicBool::new(false),
            counts: Mutex::new(Counts::default()),
            metrics: RealtimeMetrics::default(),
            shutdown: watch::Sender::new(false),
            wake: Arc::new(Notify::new()),
            demand: Notify::new(),
            ended: Notify::new(),
            advanced: Notify::new(),
            next_id: AtomicU64::new(1),
        }))
    }

    /// The metrics, to register with the node's registry.
    pub fn metrics(&self) -> &RealtimeMetrics {
        &self.0.metrics
    }

    /// The settings.
    pub fn settings(&self) -> &RealtimeSettings {
        &self.0.settings
    }

    /// The record service underneath.
    pub fn records(&self) -> &Records {
        &self.0.records
    }

    /// Finds the log's end and starts following it: this node's writes wake the hub at
    /// once, other nodes' through the store's notifications (PostgreSQL `LISTEN`), and a
    /// poll once a second finds anything else (a command writing to the SQLite file).
    pub async fn start(&self) -> Result<(), ferrobase_store::StoreError> {
        let store = self.0.records.store().clone();
        // Begin a little in the past: on PostgreSQL a write may still be committing
        // below the newest `seq`; the follower waits for such writes, and events that
        // nobody subscribed to yet cost one read.
        let since = ferrobase_schema::validate::format_datetime(
            self.0.records.clock().now() - time::Duration::seconds(10),
        );
        let position = store.events().last_event_before(since).await?;
        self.0.position.store(position, Ordering::SeqCst);
        self.0.started.store(true, Ordering::SeqCst);
        store.listen_for_events(self.0.wake.clone());
        let hub = self.clone();
        tokio::spawn(async move { hub.follow(position).await });
        Ok(())
    }

    /// The hub: reads the log in `seq` order and hands every event to the subscriptions.
    /// While nobody subscribes it reads no event: it moves its position past the final
    /// ones once a second, or at once when a subscription is about to start (which then
    /// begins at the log's end), so writes cost realtime nothing until it is used.
    async fn follow(self, position: i64) {
        let records = self.0.records.clone();
        let mut follower = records.follow_events(position);
        let mut written = records.event_wakeups();
        let mut stop = self.0.shutdown.subscribe();
        let wake = self.0.wake.clone();
        let mut waiting = Duration::ZERO;
        loop {
            if *stop.borrow() {
                return;
            }
            // Armed before reading, so a notification during the read is not lost.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let demanded = self.0.demand.notified();
            tokio::pin!(demanded);
            demanded.as_mut().enable();
            // How many events were read (none while skipping), and whether nobody
            // subscribes.
            let (read, idle) = {
                // Held across the read: a subscription starts either before it (and is
                // handed the events) or after it, at the position it reached.
                let registry = self.0.registry.read().await;
                if registry.iter().all(Vec::is_empty) {
                    let skipped = follower.skip().await.map(|position| {
                        self.0.position.store(position, Ordering::SeqCst);
                        0
                    });
                    (skipped, true)
                } else {
                    let read = match follower.next_batch(BATCH).await {
                        Ok(batch) => {
                            if !batch.events.is_empty() {
                                judge::deliver(
                                    &self.0.records,
                                    &self.0.metrics,
                                    &registry,
                                    &batch.events,
                                )
                                .await;
                            }
                            self.0.position.store(batch.position, Ordering::SeqCst);
                            Ok(batch.events.len())
                        }
                        Err(e) => Err(e),
                    };
                    (read, false)
                }
            };
            let full = match read {
                Ok(events) => events >= BATCH,
                Err(e) => {
                    tracing::warn!(error = %e, "realtime cannot read the event log");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            self.0.advanced.notify_waiters();
            if full {
                continue;
            }
            // Writes of other transactions still committing below the newest seq
            // (PostgreSQL) are read again shortly, not at the next wake-up.
            // Back off while a long transaction holds the log back.
            let pause = if follower.pending() {
                waiting = (waiting * 2).clamp(Duration::from_millis(2), Duration::from_millis(100));
                waiting
            } else {
                waiting = Duration::ZERO;
                Duration::from_secs(1)
            };
            if idle {
                tokio::select! {
                    () = &mut demanded => {}
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
            } else {
                tokio::select! {
                    _ = written.changed() => {}
                    () = &mut notified => {}
                    () = &mut demanded => {}
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Ends every stream with a final `shutdown` and refuses new ones.
    pub fn shutdown(&self) {
        self.0.shutdown.send_replace(true);
    }

    /// Waits until every connection has ended (after [`Realtime::shutdown`], each sends
    /// its final message first).
    pub async fn closed(&self) {
        loop {
            let ended = self.0.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self
                .0
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .total
                == 0
            {
                return;
            }
            ended.await;
        }
    }

    /// Whether the node is shutting down.
    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.0.shutdown.subscribe()
    }

    /// Opens a connection for `who`; `client` keys the per-user limit of anonymous
    /// callers (their address).
    pub fn connect(
        &self,
        identity: Identity,
        expires: Option<OffsetDateTime>,
        client: &str,
        transport: &'static str,
    ) -> Result<Connection, RealtimeError> {
        if *self.0.shutdown.borrow() {
            return Err(RealtimeError::ShuttingDown);
        }
        let key = identity
            .caller()
            .map_or_else(|| client.to_owned(), |c| format!("user:{}", c.id));
        {
            let mut counts = self.0.counts.lock().unwrap_or_else(|p| p.into_inner());
            if counts.total >= self.0.settings.max_connections {
                return Err(RealtimeError::NodeFull);
            }
            let mine = counts.per_user.get(&key).copied().unwrap_or(0);
            if mine >= self.0.settings.max_connections_per_user {
                return Err(RealtimeError::TooManyConnectionsForUser {
                    limit: self.0.settings.max_connections_per_user,
                });
            }
            counts.total += 1;
            *counts.per_user.entry(key.clone()).or_default() += 1;
        }
        self.0
            .metrics
            .connections
            .get_or_create(&metrics::TransportLabels { transport })
            .inc();
        let (tx, rx) = mpsc::channel(self.0.settings.buffer);
        let shared = Arc::new(ConnShared {
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: self.0.settings.buffer_bytes,
            who: RwLock::new(Arc::new(self.who(identity, expires))),
            close: std::sync::atomic::AtomicU8::new(0),
            closing: Notify::new(),
            paused: AtomicBool::new(false),
        });
        Ok(Connection {
            hub: self.clone(),
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            shared,
            rx,
            subs: HashMap::new(),
            key,
            transport,
        })
    }

    fn who(&self, identity: Identity, expires: Option<OffsetDateTime>) -> Who {
        let auth = identity.caller().map(auth_map);
        let key = match identity.caller() {
            None => Arc::from("anonymous"),
            Some(caller) => {
                let scopes = match &caller.via {
                    ferrobase_access::Via::ApiKey { scopes, .. } => Some(scopes),
                    _ => None,
                };
                Arc::from(serde_json::json!([auth, scopes]).to_string())
            }
        };
        Who {
            identity,
            auth,
            key,
            expires,
        }
    }

    /// Waits until the hub has handed out every event committed before this call, so a
    /// new subscription starts at "now": neither an event written before it (the hub may
    /// lag behind the log: another node's write whose notice is on its way, a writer
    /// still committing below it on PostgreSQL) nor, as ever, one written after it is
    /// missed. Gives up waiting after a few seconds (a long transaction holding the log
    /// back): the subscription then starts where the hub is.
    async fn caught_up(&self) -> Result<(), RealtimeError> {
        let target = self.0.records.store().events().last_event().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let advanced = self.0.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if self.0.position.load(Ordering::SeqCst) >= target {
                return Ok(());
            }
            // The hub may be asleep until its next poll: wake it.
            self.0.demand.notify_one();
            self.0.wake.notify_one();
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Where a resumed subscription starts: replay from the log, or `reset` when the
    /// position is older than now − retention (trimmed or not).
    async fn resume_from(&self, after: i64, live_from: i64) -> Result<Start, RealtimeError> {
        if after >= live_from {
            return Ok(Start::Live);
        }
        let kept = self
            .0
            .records
            .store()
            .events()
            .event_at_or_before(after)
            .await?;
        let horizon = self.0.records.clock().now()
            - time::Duration::try_from(self.0.retention).unwrap_or(time::Duration::DAY);
        let horizon = ferrobase_schema::validate::format_datetime(horizon);
        let reset = Start::Reset { at: live_from };
        Ok(match kept {
            Some((_, at)) if at.as_str() < horizon.as_str() => reset,
            Some(_) => Start::Replay {
                after,
                upto: live_from,
            },
            // Nothing kept at or before the position: the very start of a log that
            // was never trimmed (its first event is still there), or a position that
            // was trimmed away.
            None if after == 0 && self.log_starts_at_one(live_from).await? => Start::Replay {
                after,
                upto: live_from,
            },
            None => reset,
        })
    }

    /// Whether the log still holds its first event (nothing was trimmed), or is empty.
    async fn log_starts_at_one(&self, upto: i64) -> Result<bool, RealtimeError> {
        let first = self
            .0
            .records
            .store()
            .events()
            .events_between(0, upto.max(1), None, 1)
            .await?;
        Ok(first.first().is_none_or(|e| e.seq == 1))
    }
}

impl Realtime {
    async fn remove(&self, sub: &Arc<Sub>) {
        let mut registry = self.0.registry.write().await;
        let list = &mut registry[sub.res.0];
        if let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, sub)) {
            list.swap_remove(i);
            self.0.metrics.subscriptions.dec();
        }
    }
}
