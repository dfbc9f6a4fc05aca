//! The worker: one loop per queue claims due jobs in batches up to the queue's free
//! concurrency, runs each in a task that keeps its lease alive, and records how it
//! ended under the attempt's fencing token. The schedule loop enqueues cron ticks.

use std::sync::Arc;
use std::time::Duration;

use ferrobase_schema::jobs::{last_tick, parse_cron};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{Enqueued, Finish, Job};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::{
    CLEANUP, FINISHED_JOB_RETENTION, IDEMPOTENCY_RETENTION, Jobs, MAX_RESULT_BYTES,
    duration_micros, from_micros,
};

/// The schedule ferrobase adds for its clean-up (a name no declared schedule can have).
const CLEANUP_SCHEDULE: &str = "_cleanup";

/// How long a schedule's tick stays unique (longer than any sensible cron period).
const TICK_UNIQUE_FOR: Duration = Duration::from_secs(400 * 24 * 3600);

/// An attempt's outcome on its way to the finisher, with where to say whether the
/// attempt still held its job.
type Outcome = (String, i32, Finish, oneshot::Sender<Result<bool, String>>);

/// Most outcomes recorded in one transaction.
const MAX_FINISH_BATCH: usize = 256;

/// A running worker; [`Worker::shutdown`] stops it.
pub struct Worker {
    /// `true` once claiming must stop.
    stop: watch::Sender<bool>,
    /// `true` once running jobs must give their leases back.
    hard_stop: watch::Sender<bool>,
    loops: JoinSet<()>,
}

/// How running a job ended, as far as this worker knows.
enum Delivery {
    /// Record this.
    Done(Finish),
    /// The service answered `202`: it reports through the callbacks.
    Accepted,
}

impl Worker {
    /// Stops claiming, lets running jobs finish for up to `grace`, then hands the
    /// leases of those still running back (their jobs are available again at once).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.loops.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            let _ = self.hard_stop.send(true);
            while self.loops.join_next().await.is_some() {}
        }
    }
}

impl Jobs {
    /// Starts this node's worker: a loop per queue, and the schedules.
    pub fn start_worker(&self) -> Worker {
        let (stop, stop_rx) = watch::channel(false);
        let (hard_stop, hard_rx) = watch::channel(false);
        let mut loops = JoinSet::new();
        let (outcomes, finishing) = mpsc::unbounded_channel();
        let jobs = self.clone();
        loops.spawn(async move { jobs.finisher(finishing).await });
        for (queue, concurrency) in self.queues() {
            let jobs = self.clone();
            let (stop, hard) = (stop_rx.clone(), hard_rx.clone());
            let outcomes = outcomes.clone();
            loops.spawn(async move {
                jobs.queue_loop(queue, concurrency, stop, hard, outcomes)
                    .await;
            });
        }
        let jobs = self.clone();
        let schedules_stop = stop_rx.clone();
        loops.spawn(async move { jobs.schedule_loop(schedules_stop).await });
        if !self.0.hooks.is_empty() {
            let jobs = self.clone();
            let dispatch_stop = stop_rx.clone();
            loops.spawn(async move { jobs.dispatch_loop(dispatch_stop).await });
        }
        Worker {
            stop,
            hard_stop,
            loops,
        }
    }

    async fn queue_loop(
        self,
        queue: String,
        concurrency: usize,
        mut stop: watch::Receiver<bool>,
        hard: watch::Receiver<bool>,
        outcomes: mpsc::UnboundedSender<Outcome>,
    ) {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        let lease = duration_micros(self.0.settings.lease);
        // Expired leases are looked for at most this often (each look is a statement).
        let rescue_every = Duration::from_secs(1).min(self.0.settings.lease / 4);
        let mut last_rescue: Option<std::time::Instant> = None;
        while !*stop.borrow() {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            };
            // Listen before looking, so a wake-up between the claim and the wait counts.
            let wake = self.0.wake.clone();
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.now();
            let want = 1 + slots.available_permits();
            let rescue = last_rescue.is_none_or(|at| at.elapsed() >= rescue_every);
            if rescue {
                last_rescue = Some(std::time::Instant::now());
            }
            let claimed = match self
                .0
                .store
                .jobs()
                .claim(queue.clone(), want, now, now.saturating_add(lease), rescue)
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, queue, "cannot claim jobs");
                    Vec::new()
                }
            };
            while running.try_join_next().is_some() {}
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep(self.0.settings.poll) => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
            let mut permits = vec![first];
            for job in claimed {
                let permit = match permits.pop() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        // Cannot happen (at most the free slots were claimed); hand the
                        // job back rather than run it over the limit.
                        Err(_) => {
                            let _ = self.0.store.jobs().release(job.id, job.attempt, now).await;
                            continue;
                        }
                    },
                };
                let jobs = self.clone();
                let hard = hard.clone();
                let outcomes = outcomes.clone();
                running.spawn(async move { jobs.run_job(job, permit, hard, outcomes).await });
            }
        }
        // Stopped claiming: the running jobs finish (or are released by the hard stop).
        while running.join_next().await.is_some() {}
    }

    /// Records outcomes in batches: whatever arrived while the previous batch was being
    /// written goes in the next transaction. Ends when every sender is gone.
    async fn finisher(self, mut outcomes: mpsc::UnboundedReceiver<Outcome>) {
        while let Some(first) = outcomes.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_FINISH_BATCH {
                match outcomes.try_recv() {
                    Ok(outcome) => batch.push(outcome),
                    Err(_) => break,
                }
            }
            let (items, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|(id, attempt, finish, reply)| ((id, attempt, finish), reply))
                .unzip();
            let now = self.now();
            match self.0.store.jobs().finish_many(items.clone(), now).await {
                Ok(ended) => {
                    for (reply, held) in replies.into_iter().zip(ended) {
                        let _ = reply.send(Ok(held));
                    }
                }
                // One bad outcome must not lose the others: each on its own.
                Err(_) => {
                    for (item, reply) in items.into_iter().zip(replies) {
                        let one = self.0.store.jobs().finish_many(vec![item], now).await;
                        let _ = reply.send(
                            one.map(|held| held.first().copied().unwrap_or(false))
                                .map_err(|e| e.to_string()),
                        );
                    }
                }
            }
        }
    }

    async fn run_job(
        self,
        job: Job,
        _slot: OwnedSemaphorePermit,
        mut hard: watch::Receiver<bool>,
        outcomes: mpsc::UnboundedSender<Outcome>,
    ) {
        let (id, attempt) = (job.id.clone(), job.attempt);
        let started = std::time::Instant::now();
        let metrics = &self.0.metrics;
        metrics.started(&job.kind, (self.now() - job.run_at) as f64 / 1e6);
        tokio::select! {
            delivery = self.execute(&job) => {
                if matches!(delivery, Delivery::Accepted) {
                    metrics.ended(&job.kind, "accepted", started.elapsed().as_secs_f64());
                }
                if let Delivery::Done(finish) = delivery {
                    let state = match &finish {
                        Finish::Completed(_) => "completed",
                        Finish::Retry { .. } => "retryable",
                        Finish::Dead(_) => "dead",
                    };
                    metrics.ended(&job.kind, state, started.elapsed().as_secs_f64());
                    let (reply, recorded) = oneshot::channel();
                    let _ = outcomes.send((id.clone(), attempt, finish, reply));
                    match recorded.await.unwrap_or_else(|_| Err("the worker stopped".into())) {
                        Ok(true) => tracing::info!(
                            job = id, kind = job.kind, attempt, state,
                            run_ms = started.elapsed().as_millis() as u64,
                            "job attempt ended"
                        ),
                        Ok(false) => tracing::warn!(
                            job = id, attempt,
                            "job attempt ended after it lost the job (cancelled or taken over); its outcome is dropped"
                        ),
                        Err(e) => tracing::error!(job = id, error = %e, "cannot record a job's outcome"),
                    }
                }
            }
            () = self.keep_lease(&id, attempt) => {
                metrics.ended(&job.kind, "lost", started.elapsed().as_secs_f64());
                tracing::warn!(job = id, attempt, "job lost its lease (cancelled or taken over); stopped");
            }
            () = stopped(&mut hard) => {
                let now = self.now();
                if let Err(e) = self.0.store.jobs().release(id.clone(), attempt, now).await {
                    tracing::error!(job = id, error = %e, "cannot release a job's lease at shutdown");
                }
            }
        }
    }

    /// Extends the lease every third of its length; returns once the attempt no longer
    /// holds the job.
    async fn keep_lease(&self, id: &str, attempt: i32) {
        let every = self.0.settings.lease / 3;
        let lease = duration_micros(self.0.settings.lease);
        loop {
            tokio::time::sleep(every).await;
            let now = self.now();
            match self
                .0
                .store
                .jobs()
                .heartbeat(id.to_owned(), attempt, now.saturating_add(lease), None, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(job = id, error = %e, "cannot extend a job's lease"),
            }
        }
    }

    async fn execute(&self, job: &Job) -> Delivery {
        if let Some(name) = job.kind.strip_prefix(crate::webhooks::DELIVERY_KIND) {
            return Delivery::Done(self.deliver(job, name).await);
        }
        if job.kind == crate::mail::EMAIL {
            return Delivery::Done(self.send_mail(job).await);
        }
        if job.kind == CLEANUP {
            return Delivery::Done(match self.clean_up().await {
                Ok(result) => Finish::Completed(Some(result)),
                Err(e) => self.failure(job, e, true, self.now()),
            });
        }
        let Some(target) = self.0.targets.get(&job.kind) else {
            return Delivery::Done(Finish::Dead(format!(
                "the job type '{}' is no longer declared in schema.toml",
                job.kind
            )));
        };
        if let Err(refused) = crate::outbound::check_url(&target.url, self.0.allow_private) {
            return Delivery::Done(Finish::Dead(refused.to_string()));
        }
        let body = job.payload.to_string().into_bytes();
        let timestamp = self.0.clock.now().unix_timestamp();
        let token = self.0.tokens.issue(&job.id, job.attempt);
        let mut request = self
            .0
            .client
            .post(&target.url)
            .timeout(target.def.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &job.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("ferrobase-job-id", &job.id)
            .header("ferrobase-job-token", token)
            .header("ferrobase-job-attempt", job.attempt.to_string());
        if let Some(key) = &target.key {
            request = request.header(
                "webhook-signature",
                crate::signature(key, &job.id, timestamp, &body),
            );
        }
        let outcome = match request.body(body).send().await {
            Ok(response) if response.status().as_u16() == 202 => return Delivery::Accepted,
            Ok(response) if response.status().is_success() => Ok(read_limited(response)
                .await
                .and_then(|b| serde_json::from_slice(&b).ok())),
            Ok(response) => {
                let status = response.status();
                let body = read_limited(response).await.unwrap_or_default();
                let text = String::from_utf8_lossy(&body);
                Err(format!(
                    "{status}: {}",
                    text.chars().take(500).collect::<String>()
                ))
            }
            Err(e) if e.is_timeout() => {
                Err(format!("no answer within {}", humanize(target.def.timeout)))
            }
            Err(e) if refused(&e) => return Delivery::Done(Finish::Dead(describe(&e))),
            Err(e) => Err(describe(&e)),
        };
        Delivery::Done(match outcome {
            Ok(result) => Finish::Completed(result),
            Err(error) => self.failure(job, error, true, self.now()),
        })
    }

    /// The built-in clean-up: expired sessions, refresh tokens and idempotency keys,
    /// events past their retention, final jobs older than a week.
    async fn clean_up(&self) -> Result<Value, String> {
        let now = self.0.clock.now();
        let store = self.0.store.clone();
        let text = |d: Duration| {
            format_datetime(now - time::Duration::try_from(d).unwrap_or(time::Duration::ZERO))
        };
        let expired = store
            .jobs()
            .purge_expired(format_datetime(now), text(IDEMPOTENCY_RETENTION))
            .await
            .map_err(|e| e.to_string())?;
        let events = store
            .events()
            .trim_events(text(self.0.events_retention))
            .await
            .map_err(|e| e.to_string())?;
        let jobs = store
            .jobs()
            .purge_jobs(crate::micros(now).saturating_sub(duration_micros(FINISHED_JOB_RETENTION)))
            .await
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({"expired": expired, "events": events, "jobs": jobs}))
    }

    /// Enqueues every schedule's ticks: each tick once across nodes (a unique key per
    /// schedule and tick, and the schedule's last tick moved forward only once), the
    /// last tick missed while no node ran once at start.
    async fn schedule_loop(self, mut stop: watch::Receiver<bool>) {
        let mut schedules = Vec::new();
        for s in &self.0.schema.schedules {
            match s.parsed() {
                Ok((cron, zone)) => {
                    schedules.push((s.name.clone(), cron, zone, s.job.clone(), s.payload.clone()))
                }
                Err(e) => tracing::error!(schedule = s.name, error = e, "schedule skipped"),
            }
        }
        if let Ok(cron) = parse_cron("@hourly") {
            schedules.push((
                CLEANUP_SCHEDULE.to_owned(),
                cron,
                chrono_tz_utc(),
                CLEANUP.to_owned(),
                Value::Object(Default::default()),
            ));
        }
        while !*stop.borrow() {
            let now = self.0.clock.now();
            for (name, cron, zone, kind, payload) in &schedules {
                let Some(tick) = last_tick(cron, *zone, now) else {
                    continue;
                };
                if let Err(e) = self.fire(name, crate::micros(tick), kind, payload).await {
                    tracing::warn!(schedule = name, error = %e, "cannot enqueue a schedule's tick");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.0.settings.poll.min(Duration::from_secs(1))) => {}
                _ = stop.changed() => break,
            }
        }
    }

    async fn fire(
        &self,
        name: &str,
        tick: i64,
        kind: &str,
        payload: &Value,
    ) -> Result<(), crate::JobError> {
        let jobs = self.0.store.jobs();
        match jobs.schedule_tick(name.to_owned()).await? {
            // A schedule seen for the first time starts from now: nothing to catch up.
            None => {
                jobs.advance_schedule(name.to_owned(), tick).await?;
                return Ok(());
            }
            Some(last) if last >= tick => return Ok(()),
            Some(_) => {}
        }
        let (queue, max_attempts) = match self.0.targets.get(kind) {
            Some(t) => (
                t.def.queue.clone(),
                i32::try_from(t.def.max_attempts).unwrap_or(20),
            ),
            None => ("default".to_owned(), 3),
        };
        let unique = Some((
            format!("schedule:{name}:{tick}"),
            tick.saturating_add(duration_micros(TICK_UNIQUE_FOR)),
        ));
        let outcome = self
            .insert(
                kind,
                &queue,
                payload.clone(),
                0,
                tick,
                max_attempts,
                unique,
                None,
            )
            .await?;
        // Enqueue first, then move the tick: a node dying in between leaves the tick to
        // be enqueued again, which its unique key turns into nothing.
        jobs.advance_schedule(name.to_owned(), tick).await?;
        if let Enqueued::Created(job) = outcome {
            tracing::info!(schedule = name, job = job.id, tick = %from_micros(tick), "schedule fired");
        }
        Ok(())
    }
}

/// Returns once `rx` says stop (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

fn chrono_tz_utc() -> chrono_tz::Tz {
    chrono_tz::UTC
}

/// A response body up to [`MAX_RESULT_BYTES`]; `None` when longer or unreadable.
pub(crate) async fn read_limited(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_RESULT_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Whether a transport error is the outbound resolver's refusal (a destination that is
/// not public): retrying cannot help.
pub(crate) fn refused(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<crate::outbound::Refused>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A transport error with its causes, without the URL (it may carry credentials).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed".to_owned()
    } else if e.is_redirect() {
        "redirects are not followed".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
