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

mod error;
mod judge;
mod metrics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ferrobase_access::{Action, Identity, auth_map};
use ferrobase_query::check::Cond;
use ferrobase_records::{RecordError, Records};
use ferrobase_schema::settings::RealtimeSettings;
use ferrobase_store::ResourceId;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, watch};

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

/// A message for a connection's client.
#[derive(Debug, Clone)]
pub enum Out {
    /// A record event the subscriber may see.
    Event {
        /// The event's position in the log.
        seq: i64,
        /// The WebSocket subscription it belongs to (`None` on SSE).
        subscription: Option<Arc<str>>,
        /// `{"op":...,"record":{...}}`, shared by every subscriber who sees the same
        /// fields.
        data: Arc<str>,
    },
    /// The position asked for is older than the log keeps: refetch, then go on.
    Reset {
        /// The WebSocket subscription it belongs to (`None` on SSE).
        subscription: Option<Arc<str>>,
    },
}

impl Out {
    fn size(&self) -> usize {
        match self {
            Out::Event { data, .. } => data.len() + 64,
            Out::Reset { .. } => 64,
        }
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
            let batch = match follower.next_batch(BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "realtime cannot read the event log");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            let full = batch.events.len() >= BATCH;
            {
                let registry = self.0.registry.read().await;
                if !batch.events.is_empty() {
                    judge::deliver(&self.0.records, &self.0.metrics, &registry, &batch.events)
                        .await;
                }
                self.0.position.store(batch.position, Ordering::SeqCst);
            }
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
            tokio::select! {
                _ = written.changed() => {}
                () = &mut notified => {}
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
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

/// One client connection (an SSE stream or a WebSocket): its subscriptions and the
/// queue of messages for it. Dropping it removes its subscriptions.
pub struct Connection {
    hub: Realtime,
    id: u64,
    shared: Arc<ConnShared>,
    rx: mpsc::Receiver<Box<(u64, Out)>>,
    subs: HashMap<Option<String>, Arc<Sub>>,
    key: String,
    transport: &'static str,
}

impl Connection {
    /// This connection's number on the node (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Who the connection acts for now.
    pub fn who(&self) -> Arc<Who> {
        self.shared.who()
    }

    /// The hub's position when nothing is queued for this connection: every event up
    /// to it that the connection's subscriptions may see has been taken from the queue
    /// (`None` while something is queued).
    pub fn idle_position(&self) -> Option<i64> {
        // The position first: events up to it were queued before it moved.
        let position = self.hub.0.position.load(Ordering::SeqCst);
        let live_from = self.subs.values().map(|s| s.live_from).max().unwrap_or(0);
        (self.rx.is_empty() && position >= live_from).then_some(position)
    }

    /// Subscribes; the subscription is live when this returns (see [`Start`] for what
    /// to send before the live events).
    pub async fn subscribe(&mut self, req: SubscribeRequest) -> Result<Subscribed, RealtimeError> {
        let hub = self.hub.clone();
        if *hub.0.shutdown.borrow() {
            return Err(RealtimeError::ShuttingDown);
        }
        if !hub.0.started.load(Ordering::SeqCst) {
            return Err(RealtimeError::NotReady);
        }
        if self.subs.contains_key(&req.name) {
            return Err(RealtimeError::DuplicateSubscription(
                req.name.unwrap_or_default(),
            ));
        }
        if self.subs.len() >= hub.0.settings.max_subscriptions {
            return Err(RealtimeError::TooManySubscriptions {
                limit: hub.0.settings.max_subscriptions,
            });
        }
        let records = &hub.0.records;
        let (res, resource) = records.resource(&req.resource)?;
        let who = self.shared.who();
        records.refuse_early(res, &who.identity, Action::View)?;
        let filter_text: Option<Arc<str>> = req
            .filter
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Arc::from);
        let filter = match filter_text.as_deref() {
            None => None,
            Some(text) => {
                let cond = ferrobase_records::params::filter(records.schema(), resource, text)?;
                if cond.reaches_beyond_dates(records.clock().now()) {
                    return Err(RecordError::InvalidFilter {
                        message: "@now with this offset falls outside the dates a record can hold (years 0001 to 9999)".into(),
                        position: None,
                        hint: None,
                        allowed: Vec::new(),
                    }
                    .into());
                }
                // Each filter that follows a relation is one more condition in the
                // statement the database runs for every event of the resource.
                let following = self
                    .subs
                    .values()
                    .filter(|s| s.filter.as_ref().is_some_and(Cond::follows_relations))
                    .count();
                if cond.follows_relations() && following >= RELATION_FILTERS {
                    return Err(RealtimeError::TooManySubscriptions {
                        limit: RELATION_FILTERS,
                    });
                }
                Some(cond)
            }
        };
        let record_id = match req.record_id.as_deref() {
            None => None,
            Some(raw) => Some(records.record_id(res, raw)?),
        };
        self.register(
            req.name,
            res,
            filter.map(|c| (c, filter_text)),
            record_id,
            req.after,
        )
        .await
    }

    /// Makes a checked subscription live.
    async fn register(
        &mut self,
        name: Option<String>,
        res: ResourceId,
        filter: Option<(Cond, Option<Arc<str>>)>,
        record_id: Option<String>,
        after: Option<i64>,
    ) -> Result<Subscribed, RealtimeError> {
        let (filter, filter_text) = filter.map_or((None, None), |(c, t)| (Some(c), t));
        let hub = self.hub.clone();
        if after.is_none() {
            hub.caught_up().await?;
        }
        let mut registry = hub.0.registry.write().await;
        let position = hub.0.position.load(Ordering::SeqCst);
        let live_from = after.map_or(position, |after| after.max(position));
        let sub = Arc::new(Sub {
            serial: hub.0.next_id.fetch_add(1, Ordering::Relaxed),
            conn: self.shared.clone(),
            name: name.as_deref().map(Arc::from),
            res,
            record_id,
            filter,
            filter_text,
            live_from,
        });
        registry[res.0].push(sub.clone());
        drop(registry);
        hub.0.metrics.subscriptions.inc();
        self.subs.insert(name.clone(), sub.clone());
        let start = match after {
            None => Start::Live,
            Some(after) => match hub.resume_from(after, live_from).await {
                Ok(start) => start,
                Err(e) => {
                    // Not live after all: the client may try again under the same id.
                    self.subs.remove(&name);
                    hub.remove(&sub).await;
                    return Err(e);
                }
            },
        };
        Ok(Subscribed { start })
    }

    /// The events of subscription `name` with `seq` in `(after, upto]` from the log,
    /// judged for it as live events are: a page at a time (`None` when done).
    pub async fn replay(
        &self,
        name: Option<&str>,
        after: i64,
        upto: i64,
    ) -> Result<Option<(Vec<Out>, i64)>, RealtimeError> {
        if after >= upto {
            return Ok(None);
        }
        let Some(sub) = self.subs.get(&name.map(str::to_owned)) else {
            return Ok(None);
        };
        let events = self
            .hub
            .0
            .records
            .store()
            .events()
            .events_between(
                after,
                upto,
                Some(self.hub.0.records.resource_at(sub.res).name.clone()),
                BATCH,
            )
            .await?;
        let next = if events.len() < BATCH {
            upto
        } else {
            events.last().map_or(upto, |e| e.seq)
        };
        let outs = judge::judge_for(&self.hub.0.records, sub, &events).await?;
        Ok(Some((outs, next)))
    }

    /// Ends subscription `name`.
    pub async fn unsubscribe(&mut self, name: Option<&str>) -> Result<(), RealtimeError> {
        let key = name.map(str::to_owned);
        let Some(sub) = self.subs.remove(&key) else {
            return Err(RealtimeError::UnknownSubscription(
                name.unwrap_or_default().to_owned(),
            ));
        };
        self.hub.remove(&sub).await;
        Ok(())
    }

    /// The subscriptions' names and requests, to make again after a fresh `auth`.
    pub fn subscriptions(&self) -> Vec<Option<String>> {
        self.subs.keys().cloned().collect()
    }

    /// Counts the connection against `identity`'s user from now on (a connection opened
    /// anonymously counted against its address): refused when that user already holds
    /// all the connections it may.
    pub fn rekey(&mut self, identity: &Identity) -> Result<(), RealtimeError> {
        let Some(caller) = identity.caller() else {
            return Ok(());
        };
        let key = format!("user:{}", caller.id);
        if key == self.key {
            return Ok(());
        }
        let limit = self.hub.0.settings.max_connections_per_user;
        let mut counts = self.hub.0.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.per_user.get(&key).copied().unwrap_or(0) >= limit {
            return Err(RealtimeError::TooManyConnectionsForUser { limit });
        }
        *counts.per_user.entry(key.clone()).or_default() += 1;
        if let Some(n) = counts.per_user.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_user.remove(&self.key);
            }
        }
        self.key = key;
        Ok(())
    }

    /// Stops delivering events until [`Connection::reauthenticate`] (the credential
    /// expired).
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::Relaxed);
    }

    /// Acts for `identity` from now on: every subscription is made again for it and
    /// resumed from `positions` (the last `seq` the client got per subscription), so
    /// what happened while the credential was expired is judged for the new one.
    pub async fn reauthenticate(
        &mut self,
        identity: Identity,
        expires: Option<OffsetDateTime>,
        positions: &HashMap<Option<String>, i64>,
    ) -> Vec<(Option<String>, Result<Subscribed, RealtimeError>)> {
        let who = Arc::new(self.hub.who(identity, expires));
        *self.shared.who.write().unwrap_or_else(|p| p.into_inner()) = who;
        let old: Vec<(Option<String>, Arc<Sub>)> = self.subs.drain().collect();
        let mut outcomes = Vec::with_capacity(old.len());
        for (name, sub) in old {
            self.hub.remove(&sub).await;
            let after = positions
                .get(&name)
                .copied()
                .unwrap_or(sub.live_from)
                .max(0);
            let outcome = match self.hub.0.records.refuse_early(
                sub.res,
                &self.shared.who().identity,
                Action::View,
            ) {
                Err(e) => Err(RealtimeError::from(e)),
                Ok(()) => {
                    self.register(
                        name.clone(),
                        sub.res,
                        sub.filter.clone().map(|c| (c, sub.filter_text.clone())),
                        sub.record_id.clone(),
                        Some(after),
                    )
                    .await
                }
            };
            outcomes.push((name, outcome));
        }
        self.shared.paused.store(false, Ordering::Relaxed);
        outcomes
    }

    /// The next message, or why the server ends the connection.
    pub async fn next(&mut self) -> Result<Out, Close> {
        let mut stop = self.hub.0.shutdown.subscribe();
        loop {
            if let Some(reason) = self.shared.close_reason() {
                return Err(reason);
            }
            if *stop.borrow_and_update() {
                return Err(Close::Shutdown);
            }
            tokio::select! {
                biased;
                () = self.shared.closing.notified() => {}
                _ = stop.changed() => {}
                out = self.rx.recv() => match out {
                    Some(queued) => {
                        let (serial, out) = *queued;
                        self.shared.queued_bytes.fetch_sub(out.size(), Ordering::Relaxed);
                        if self.subs.values().any(|s| s.serial == serial) {
                            return Ok(out);
                        }
                    }
                    None => return Err(Close::Shutdown),
                },
            }
        }
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

impl Drop for Connection {
    fn drop(&mut self) {
        {
            let mut counts = self.hub.0.counts.lock().unwrap_or_else(|p| p.into_inner());
            counts.total = counts.total.saturating_sub(1);
            if let Some(n) = counts.per_user.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    counts.per_user.remove(&self.key);
                }
            }
        }
        self.hub.0.ended.notify_waiters();
        self.hub
            .0
            .metrics
            .connections
            .get_or_create(&metrics::TransportLabels {
                transport: self.transport,
            })
            .dec();
        let subs: Vec<Arc<Sub>> = self.subs.drain().map(|(_, s)| s).collect();
        if subs.is_empty() {
            return;
        }
        let hub = self.hub.clone();
        // The registry's lock is async; removal runs on its own (the hub skips
        // subscriptions of closed connections meanwhile).
        self.shared.end(Close::Shutdown);
        let removal = async move {
            for sub in &subs {
                hub.remove(sub).await;
            }
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(removal);
        }
    }
}
