//! One client connection (an SSE stream or a WebSocket): its subscriptions, its queue
//! and its place in the node's limits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrobase_access::{Action, Identity};
use ferrobase_query::check::Cond;
use ferrobase_records::RecordError;
use ferrobase_store::ResourceId;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::{
    BATCH, Close, ConnShared, Out, RELATION_FILTERS, Realtime, RealtimeError, Start, Sub,
    SubscribeRequest, Subscribed, Who, judge, metrics,
};

/// One client connection (an SSE stream or a WebSocket): its subscriptions and the
/// queue of messages for it. Dropping it removes its subscriptions.
pub struct Connection {
    pub(crate) hub: Realtime,
    pub(crate) id: u64,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) rx: mpsc::Receiver<Box<(u64, Out)>>,
    pub(crate) subs: HashMap<Option<String>, Arc<Sub>>,
    pub(crate) key: String,
    pub(crate) transport: &'static str,
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
        // The hub may be skipping the log while nobody subscribed: it reads it now.
        hub.0.demand.notify_one();
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
