//! Webhooks (SPEC §8): every node follows the event log from a position kept in the
//! database and turns each matching event into a delivery job (`webhook:<name>`, queue
//! `webhooks`), enqueued before the position moves past it and de-duplicated by a
//! unique key per webhook and event, so no event is lost to a crash and none is
//! delivered twice however many nodes follow. Deliveries are signed with Standard
//! Webhooks headers (`webhook-id` is the event's, the same on every attempt), retried
//! on the configured schedule, and a `410 Gone` disables the endpoint until an admin
//! redelivers.

use std::time::Duration;

use ferrobase_query::check::{Cond, Hop};
use ferrobase_query::env::Env;
use ferrobase_query::eval::{Lookup, eval};
use ferrobase_schema::webhooks::Webhook;
use ferrobase_store::{EventOp, Finish, Job, RecordEvent};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{Jobs, duration_micros};

/// The prefix of delivery jobs' types.
pub const DELIVERY_KIND: &str = "webhook:";

/// The queue deliveries run on.
pub const QUEUE: &str = "webhooks";

/// The mark holding how far the log has been turned into deliveries.
const DISPATCHED: &str = "_webhooks_dispatched";

/// How long a delivery's unique key holds (longer than any retry schedule).
const UNIQUE_FOR: Duration = Duration::from_secs(400 * 24 * 3600);

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A webhook ready to deliver.
#[derive(Debug, Clone)]
pub(crate) struct HookTarget {
    pub(crate) def: Webhook,
    pub(crate) url: String,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) filter: Option<Cond>,
    pub(crate) schedule: Vec<Duration>,
}

/// The mark of an endpoint disabled by `410 Gone`.
fn gone_mark(name: &str) -> String {
    format!("_webhook_gone:{name}")
}

/// A record of an event, for a filter to judge.
struct EventRecord<'a>(&'a Value);

impl Lookup for EventRecord<'_> {
    fn value(&self, _resource: &str, _id: &str, column: &str) -> Option<Value> {
        self.0.get(column).cloned()
    }

    fn follow(&self, _hop: &Hop, _id: &str) -> Vec<String> {
        // Webhook filters cannot follow relations (`ferrobase check` refuses them).
        Vec::new()
    }
}

impl HookTarget {
    fn matches(&self, event: &RecordEvent, now: time::OffsetDateTime) -> bool {
        event.resource == self.def.resource
            && self.def.events.iter().any(|e| e == event.op.as_str())
            && self.filter.as_ref().is_none_or(|filter| {
                eval(
                    filter,
                    &Env::anonymous(now),
                    &EventRecord(&event.record),
                    &event.resource,
                    &event.id,
                )
            })
    }
}

/// The body a receiver gets for an event.
fn body(event: &RecordEvent) -> Value {
    let mut body = json!({
        "type": format!("{}.{}", event.resource, event.op.as_str()),
        "timestamp": event.at,
        "data": event.record,
    });
    if event.op != EventOp::Create {
        body["previous"] = event.previous.clone().unwrap_or(Value::Null);
    }
    body
}

impl Jobs {
    /// Follows the event log and enqueues a delivery per matching webhook and event.
    pub(crate) async fn dispatch_loop(self, mut stop: watch::Receiver<bool>) {
        let store = self.0.store.clone();
        let poll = self.0.settings.poll;
        let mut wake = store.event_wakeups();
        let mut position = loop {
            let start = async {
                match store.jobs().schedule_tick(DISPATCHED.to_owned()).await? {
                    Some(position) => Ok::<i64, crate::JobError>(position),
                    // First start: webhooks deliver what was written since this node
                    // started (the store may have served writes before this loop could
                    // read it), not the log's older history.
                    None => {
                        let head = store
                            .events()
                            .last_event_before(ferrobase_schema::validate::format_datetime(
                                self.0.started,
                            ))
                            .await?;
                        store
                            .jobs()
                            .advance_schedule(DISPATCHED.to_owned(), head)
                            .await?;
                        Ok(head)
                    }
                }
            };
            match start.await {
                Ok(position) => break position,
                Err(e) => {
                    tracing::debug!(error = %e, "webhooks cannot start yet");
                    tokio::select! {
                        () = tokio::time::sleep(poll) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        let mut follower = store.follow_events(position);
        while !*stop.borrow() {
            let batch = match follower.next_batch(500).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event log for webhooks");
                    tokio::select! {
                        () = tokio::time::sleep(poll) => {}
                        _ = stop.changed() => break,
                    }
                    continue;
                }
            };
            let mut failed = false;
            let now = self.0.clock.now();
            'events: for event in &batch.events {
                for hook in self.0.hooks.values().filter(|h| h.matches(event, now)) {
                    if let Err(e) = self.enqueue_delivery(hook, event).await {
                        tracing::warn!(webhook = hook.def.name, seq = event.seq, error = %e, "cannot enqueue a webhook delivery");
                        failed = true;
                        break 'events;
                    }
                }
            }
            if failed {
                // Read again from the last position recorded; unique keys absorb what
                // was enqueued already.
                follower = store.follow_events(position);
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
            if batch.position > position {
                match store
                    .jobs()
                    .advance_schedule(DISPATCHED.to_owned(), batch.position)
                    .await
                {
                    Ok(_) => position = batch.position,
                    Err(e) => tracing::warn!(error = %e, "cannot record the webhooks' position"),
                }
            }
            if batch.events.is_empty() {
                tokio::select! {
                    _ = wake.changed() => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }

    async fn enqueue_delivery(
        &self,
        hook: &HookTarget,
        event: &RecordEvent,
    ) -> Result<(), crate::JobError> {
        let now = self.now();
        let payload = json!({ "seq": event.seq, "body": body(event) });
        let attempts = i32::try_from(hook.schedule.len() + 1).unwrap_or(i32::MAX);
        self.insert(
            &format!("{DELIVERY_KIND}{}", hook.def.name),
            QUEUE,
            payload,
            0,
            now,
            attempts,
            Some((
                format!("webhook:{}:{}", hook.def.name, event.seq),
                now.saturating_add(duration_micros(UNIQUE_FOR)),
            )),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Delivers one event to one webhook.
    pub(crate) async fn deliver(&self, job: &Job, name: &str) -> Finish {
        let Some(hook) = self.0.hooks.get(name) else {
            return Finish::Dead(format!("the webhook '{name}' is no longer declared"));
        };
        match self.0.store.jobs().schedule_tick(gone_mark(name)).await {
            Ok(Some(_)) => {
                return Finish::Dead(
                    "the endpoint answered 410 Gone earlier and is disabled; redeliver to enable it again"
                        .into(),
                );
            }
            Ok(None) => {}
            Err(e) => return self.failure(job, e.to_string(), true, self.now()),
        }
        if let Err(refused) = crate::outbound::check_url(&hook.url, self.0.allow_private) {
            return Finish::Dead(refused.to_string());
        }
        let seq = job.payload["seq"].as_i64().unwrap_or_default();
        let body = job.payload["body"].to_string().into_bytes();
        let id = format!("evt_{seq}");
        let timestamp = self.0.clock.now().unix_timestamp();
        let mut request = self
            .0
            .client
            .post(&hook.url)
            .timeout(TIMEOUT)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(key) = &hook.key {
            request = request.header(
                "webhook-signature",
                crate::signature(key, &id, timestamp, &body),
            );
        }
        let started = std::time::Instant::now();
        let sent = request.body(body).send().await;
        let ms = started.elapsed().as_millis() as u64;
        match sent {
            Ok(response) if response.status().is_success() => Finish::Completed(Some(json!({
                "status": response.status().as_u16(),
                "ms": ms,
            }))),
            Ok(response) if response.status().as_u16() == 410 => {
                if let Err(e) = self
                    .0
                    .store
                    .jobs()
                    .advance_schedule(gone_mark(name), self.now())
                    .await
                {
                    tracing::warn!(webhook = name, error = %e, "cannot record a disabled endpoint");
                }
                tracing::warn!(webhook = name, "the endpoint answered 410 Gone: disabled");
                Finish::Dead(format!("410 Gone after {ms} ms: the endpoint is disabled"))
            }
            Ok(response) => {
                let status = response.status();
                let text = crate::worker::read_limited(response)
                    .await
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                let error = format!(
                    "{status} after {ms} ms: {}",
                    text.chars().take(300).collect::<String>()
                );
                self.failure(job, error, true, self.now())
            }
            Err(e) if crate::worker::refused(&e) => Finish::Dead(crate::worker::describe(&e)),
            Err(e) => {
                let error = if e.is_timeout() {
                    format!("no answer within {}s", TIMEOUT.as_secs())
                } else {
                    crate::worker::describe(&e)
                };
                self.failure(job, error, true, self.now())
            }
        }
    }

    /// The delay after failed attempt `attempt` of a delivery to `name`; `None` when it
    /// was the last.
    pub(crate) fn webhook_delay(&self, name: &str, attempt: i32) -> Option<Duration> {
        let hook = self.0.hooks.get(name)?;
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        hook.schedule.get(index).copied()
    }

    /// Lets deliveries to an endpoint disabled by `410 Gone` go out again.
    pub async fn enable_webhook(&self, name: &str) -> Result<(), crate::JobError> {
        self.0.store.jobs().clear_schedule(gone_mark(name)).await?;
        Ok(())
    }
}
