//! The job service (SPEC §8, "Jobs"): enqueueing under the schema's job types, the
//! callbacks of services that answered `202`, and the worker that claims due jobs,
//! delivers them over HTTP (Standard Webhooks signatures) or runs ferrobase's own kinds,
//! keeps their leases, and retries failures with capped exponential backoff and jitter
//! until they are dead. Cron schedules enqueue their ticks once across nodes.
//!
//! Everything reads time from the injected clock, so tests move time instead of
//! sleeping.
#![forbid(unsafe_code)]

mod mail;
mod metrics;
pub mod outbound;
mod sign;
mod webhooks;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferrobase_records::Clock;
use ferrobase_schema::jobs::{BUILTIN_JOBS, Backoff, JobType};
use ferrobase_schema::settings::JobSettings;
use ferrobase_schema::{Schema, Settings};
use ferrobase_store::{Enqueued, Finish, Job, JobFilter, JobState, NewJob, Store, StoreError};
use serde_json::Value;

pub use mail::{EMAIL, Template};
pub use metrics::JobMetrics;
pub use sign::{JobTokens, secret_key, signature};
pub use webhooks::{DELIVERY_KIND, QUEUE as WEBHOOK_QUEUE};

/// Largest payload a job may carry (serialised JSON).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Largest result or error kept from a service's answer.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// The built-in clean-up kind's queue and schedule.
const CLEANUP: &str = "cleanup";

/// How long final jobs are kept before the clean-up deletes them.
const FINISHED_JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long an idempotency key is kept (matches the HTTP layer's replay window).
const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why a job operation did not happen.
#[derive(Debug)]
pub enum JobError {
    /// The body does not validate (400 `VALIDATION_FAILED`), per field.
    Invalid(BTreeMap<String, Vec<String>>),
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`] (413 `PAYLOAD_TOO_LARGE`).
    PayloadTooLarge,
    /// No such job (404 `NOT_FOUND`).
    NotFound,
    /// The job is not in a state that allows this (409 `CONFLICT`).
    Conflict(String),
    /// The job token is missing, forged, or of an attempt that no longer holds the job
    /// (401 `UNAUTHORIZED`).
    BadToken,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(fields) => write!(f, "invalid job: {fields:?}"),
            Self::PayloadTooLarge => {
                write!(f, "the payload is larger than {MAX_PAYLOAD_BYTES} bytes")
            }
            Self::NotFound => f.write_str("no such job"),
            Self::Conflict(why) => f.write_str(why),
            Self::BadToken => f.write_str("the job token is not valid for this job's attempt"),
            Self::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for JobError {}

fn invalid(field: &str, message: impl Into<String>) -> JobError {
    JobError::Invalid([(field.to_owned(), vec![message.into()])].into())
}

/// A job type ready to deliver: its declaration with the URL and secret read.
#[derive(Debug, Clone)]
struct Target {
    def: JobType,
    url: String,
    key: Option<Vec<u8>>,
}

/// What `POST /api/v1/jobs` asks for.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    /// The job type.
    pub kind: String,
    /// Its payload.
    pub payload: Value,
    /// When it is due; now when absent.
    pub run_at: Option<time::OffsetDateTime>,
    /// Higher runs first (-1000 to 1000, default 0).
    pub priority: i32,
}

/// The job service; cheap to clone.
#[derive(Clone)]
pub struct Jobs(Arc<Inner>);

struct Inner {
    schema: Arc<Schema>,
    store: Store,
    clock: Arc<dyn Clock>,
    settings: JobSettings,
    /// Whether outbound HTTP may reach private addresses.
    allow_private: bool,
    /// `[events] retention`, which the clean-up enforces.
    events_retention: Duration,
    tokens: JobTokens,
    targets: HashMap<String, Target>,
    /// The webhooks, by name.
    hooks: HashMap<String, webhooks::HookTarget>,
    /// How mail leaves.
    mailer: mail::Mailer,
    client: reqwest::Client,
    /// Woken by enqueues on this node and, on PostgreSQL, by other nodes' `NOTIFY`.
    wake: Arc<tokio::sync::Notify>,
    metrics: JobMetrics,
    /// When the service was made (the node's start).
    started: time::OffsetDateTime,
}

/// Where a job type or webhook sends: its URL and signing key, read from the
/// environment where they say `env:NAME`.
fn destination(
    url: &ferrobase_schema::jobs::ConfigValue,
    secret: Option<&ferrobase_schema::jobs::ConfigValue>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, Option<Vec<u8>>), String> {
    let url = url.resolve(env)?;
    if !ferrobase_schema::jobs::is_http_url(&url) {
        return Err(format!("'{url}' is not an http(s) URL"));
    }
    let key = secret
        .map(|s| s.resolve(env).map(|s| secret_key(&s)))
        .transpose()?;
    Ok((url, key))
}

/// The hex SHA-256 of a unique key's value.
fn key_digest(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Text the stores can keep: no NUL characters (PostgreSQL refuses them), at most
/// [`MAX_RESULT_BYTES`].
pub(crate) fn storable(text: String) -> String {
    let mut text = text.replace('\0', "");
    if text.len() > MAX_RESULT_BYTES {
        let mut cut = MAX_RESULT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Microseconds since the epoch of a time.
pub fn micros(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// The time of microseconds since the epoch.
pub fn from_micros(us: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Jobs {
    /// The service for `schema`'s job types. Their `env:` URLs and secrets are read
    /// through `env`; every one missing or invalid is listed in the error.
    pub fn new(
        schema: Arc<Schema>,
        store: Store,
        clock: Arc<dyn Clock>,
        settings: &Settings,
        project: &std::path::Path,
        token_key: [u8; 32],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut targets = HashMap::new();
        for def in &schema.jobs {
            match destination(&def.url, def.secret.as_ref(), &env) {
                Ok((url, key)) => {
                    targets.insert(
                        def.name.clone(),
                        Target {
                            def: def.clone(),
                            url,
                            key,
                        },
                    );
                }
                Err(e) => problems.push(format!("[jobs.{}]: {e}", def.name)),
            }
        }
        let mut hooks = HashMap::new();
        for def in &schema.webhooks {
            match destination(&def.url, def.secret.as_ref(), &env) {
                Ok((url, key)) => {
                    hooks.insert(
                        def.name.clone(),
                        webhooks::HookTarget {
                            filter: ferrobase_query::webhook_filter(&schema, def),
                            schedule: def
                                .retry_schedule
                                .clone()
                                .unwrap_or_else(|| settings.webhooks.retry_schedule.clone()),
                            def: def.clone(),
                            url,
                            key,
                        },
                    );
                }
                Err(e) => problems.push(format!("[webhooks.{}]: {e}", def.name)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mailer = mail::Mailer::new(
            &settings.email,
            project,
            project.join(&settings.server.data_dir).join("outbox"),
        )
        .map_err(|e| vec![e])?;
        let allow_private = settings.webhooks.allow_private_addresses;
        let client = outbound::client(allow_private)
            .map_err(|e| vec![format!("cannot build the HTTP client: {e}")])?;
        let wake = Arc::new(tokio::sync::Notify::new());
        store.listen_for_jobs(wake.clone());
        let started = clock.now();
        Ok(Self(Arc::new(Inner {
            schema,
            store,
            clock,
            settings: settings.jobs.clone(),
            allow_private,
            events_retention: settings.events.retention,
            tokens: JobTokens::new(token_key),
            targets,
            hooks,
            mailer,
            client,
            wake,
            metrics: JobMetrics::default(),
            started,
        })))
    }

    /// Now, in microseconds.
    pub fn now(&self) -> i64 {
        micros(self.0.clock.now())
    }

    /// What the worker counts (registered on the node's `/metrics`).
    pub fn metrics(&self) -> &JobMetrics {
        &self.0.metrics
    }

    /// The job tokens (for tests and the HTTP layer).
    pub fn tokens(&self) -> &JobTokens {
        &self.0.tokens
    }

    /// A job's state as callers see it: a scheduled job whose time has come is
    /// available.
    pub fn visible_state(&self, job: &Job) -> JobState {
        if job.state == JobState::Scheduled && job.run_at <= self.now() {
            JobState::Available
        } else {
            job.state
        }
    }

    /// Enqueues a job of a declared type; a job of a type with `unique` returns the job
    /// already holding the key within its period instead.
    pub async fn enqueue(
        &self,
        request: EnqueueRequest,
        created_by: Option<String>,
    ) -> Result<Enqueued, JobError> {
        let Some(target) = self.0.targets.get(&request.kind) else {
            let known: Vec<&str> = self.0.targets.keys().map(String::as_str).collect();
            return Err(invalid(
                "type",
                if known.is_empty() {
                    format!(
                        "unknown job type '{}': schema.toml declares none",
                        request.kind
                    )
                } else {
                    format!(
                        "unknown job type '{}'; declared: {}",
                        request.kind,
                        known.join(", ")
                    )
                },
            ));
        };
        if !(-1000..=1000).contains(&request.priority) {
            return Err(invalid("priority", "must be an integer from -1000 to 1000"));
        }
        let now = self.now();
        let run_at = request.run_at.map_or(now, micros);
        let unique = match &target.def.unique {
            Some(unique) => match unique.key_of(&request.payload) {
                // A prefix no schedule or webhook key has, and a digest so that a
                // long key fits any index.
                Some(key) => Some((
                    format!("t:{}:{}", target.def.name, key_digest(&key)),
                    now.saturating_add(duration_micros(unique.period)),
                )),
                None => {
                    return Err(invalid(
                        "payload",
                        format!(
                            "must contain {} (the job type's unique key)",
                            std::iter::once("payload")
                                .chain(unique.key.iter().map(String::as_str))
                                .collect::<Vec<_>>()
                                .join(".")
                        ),
                    ));
                }
            },
            None => None,
        };
        self.insert(
            &request.kind,
            &target.def.queue.clone(),
            request.payload,
            request.priority,
            run_at,
            i32::try_from(target.def.max_attempts).unwrap_or(i32::MAX),
            unique,
            created_by,
        )
        .await
    }

    #[expect(clippy::too_many_arguments, reason = "the columns of a new job")]
    async fn insert(
        &self,
        kind: &str,
        queue: &str,
        payload: Value,
        priority: i32,
        run_at: i64,
        max_attempts: i32,
        unique: Option<(String, i64)>,
        created_by: Option<String>,
    ) -> Result<Enqueued, JobError> {
        if !payload.is_object() {
            return Err(invalid("payload", "must be a JSON object"));
        }
        if serde_json::to_vec(&payload).map_or(usize::MAX, |b| b.len()) > MAX_PAYLOAD_BYTES {
            return Err(JobError::PayloadTooLarge);
        }
        let now = self.now();
        let outcome = self
            .0
            .store
            .jobs()
            .enqueue(NewJob {
                id: uuid::Uuid::now_v7().to_string(),
                kind: kind.to_owned(),
                queue: queue.to_owned(),
                priority,
                payload,
                max_attempts,
                run_at,
                unique,
                created_by,
                now,
            })
            .await?;
        if matches!(&outcome, Enqueued::Created(job) if job.run_at <= now) {
            self.0.wake.notify_waiters();
        }
        Ok(outcome)
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<Option<Job>, JobError> {
        Ok(self.0.store.jobs().job(id.to_owned()).await?)
    }

    /// A job's changes after `after`.
    pub async fn events(
        &self,
        id: &str,
        after: i64,
    ) -> Result<Vec<ferrobase_store::JobEvent>, JobError> {
        Ok(self.0.store.jobs().job_events(id.to_owned(), after).await?)
    }

    /// The running attempt a token belongs to, when it still holds the job.
    async fn holder(&self, id: &str, token: &str) -> Result<(Job, i32), JobError> {
        let attempt = self.0.tokens.verify(id, token).ok_or(JobError::BadToken)?;
        let job = self.job(id).await?.ok_or(JobError::BadToken)?;
        if job.state != JobState::Running || job.attempt != attempt {
            return Err(JobError::Conflict(format!(
                "attempt {attempt} no longer holds this job (it is {} at attempt {})",
                job.state.as_str(),
                job.attempt
            )));
        }
        Ok((job, attempt))
    }

    /// `POST /jobs/{id}/progress`: records progress and extends the lease.
    pub async fn progress(
        &self,
        id: &str,
        token: &str,
        progress: i32,
        message: Option<String>,
    ) -> Result<Job, JobError> {
        let (_, attempt) = self.holder(id, token).await?;
        let now = self.now();
        let lease_until = now.saturating_add(duration_micros(self.0.settings.lease));
        let held = self
            .0
            .store
            .jobs()
            .heartbeat(
                id.to_owned(),
                attempt,
                lease_until,
                Some((progress, message)),
                now,
            )
            .await?;
        self.after_callback(id, held).await
    }

    /// `POST /jobs/{id}/complete`.
    pub async fn complete(
        &self,
        id: &str,
        token: &str,
        result: Option<Value>,
    ) -> Result<Job, JobError> {
        let (_, attempt) = self.holder(id, token).await?;
        let held = self
            .0
            .store
            .jobs()
            .finish(
                id.to_owned(),
                attempt,
                Finish::Completed(result),
                self.now(),
            )
            .await?;
        self.after_callback(id, held).await
    }

    /// `POST /jobs/{id}/fail`: retried by the job type's backoff unless `retry` is
    /// false or it was the last attempt.
    pub async fn fail(
        &self,
        id: &str,
        token: &str,
        error: String,
        retry: bool,
    ) -> Result<Job, JobError> {
        let (job, attempt) = self.holder(id, token).await?;
        let now = self.now();
        let finish = self.failure(&job, error, retry, now);
        let held = self
            .0
            .store
            .jobs()
            .finish(id.to_owned(), attempt, finish, now)
            .await?;
        self.after_callback(id, held).await
    }

    async fn after_callback(&self, id: &str, held: bool) -> Result<Job, JobError> {
        if !held {
            return Err(JobError::Conflict(
                "the attempt lost this job while the call was made".into(),
            ));
        }
        self.job(id).await?.ok_or(JobError::NotFound)
    }

    /// How a failed attempt ends: retried after `min(cap, base * 2^(attempt-1))` ±10 %
    /// when attempts remain and a retry is wanted, dead otherwise.
    fn failure(&self, job: &Job, error: String, retry: bool, now: i64) -> Finish {
        let error = storable(error);
        if !retry || job.attempt >= job.max_attempts {
            return Finish::Dead(error);
        }
        if let Some(name) = job.kind.strip_prefix(webhooks::DELIVERY_KIND) {
            return match self.webhook_delay(name, job.attempt) {
                Some(delay) => Finish::Retry {
                    error,
                    at: now.saturating_add(duration_micros(delay)),
                },
                None => Finish::Dead(error),
            };
        }
        let backoff = self.backoff(&job.kind);
        let delay = backoff
            .delay(u32::try_from(job.attempt).unwrap_or(1))
            .as_secs_f64();
        let jittered = delay * (0.9 + fastrand::f64() * 0.2);
        Finish::Retry {
            error,
            at: now.saturating_add((jittered * 1e6) as i64),
        }
    }

    fn backoff(&self, kind: &str) -> Backoff {
        self.0.targets.get(kind).map_or(
            Backoff {
                base: Duration::from_secs(15),
                cap: Duration::from_secs(6 * 3600),
            },
            |t| t.def.backoff,
        )
    }

    /// Jobs for an admin.
    pub async fn list(&self, filter: JobFilter) -> Result<Vec<Job>, JobError> {
        Ok(self.0.store.jobs().list_jobs(filter).await?)
    }

    /// Runs a job again now.
    pub async fn retry(&self, id: &str) -> Result<Job, JobError> {
        let now = self.now();
        match self.0.store.jobs().retry_job(id.to_owned(), now).await? {
            Some(job) => {
                self.0.wake.notify_waiters();
                Ok(job)
            }
            None => Err(self.refusal(id, "running or waiting to run").await),
        }
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<Job, JobError> {
        let now = self.now();
        match self.0.store.jobs().cancel_job(id.to_owned(), now).await? {
            Some(job) => Ok(job),
            None => Err(self.refusal(id, "finished").await),
        }
    }

    /// Deletes a job that is not running.
    pub async fn delete(&self, id: &str) -> Result<(), JobError> {
        if self.0.store.jobs().delete_job(id.to_owned()).await? {
            Ok(())
        } else {
            Err(self.refusal(id, "running").await)
        }
    }

    async fn refusal(&self, id: &str, why: &str) -> JobError {
        match self.job(id).await {
            Ok(Some(job)) => JobError::Conflict(format!(
                "the job is {} ({why})",
                self.visible_state(&job).as_str()
            )),
            Ok(None) => JobError::NotFound,
            Err(e) => e,
        }
    }

    /// Numbers per queue.
    pub async fn stats(&self) -> Result<Vec<ferrobase_store::QueueStats>, JobError> {
        Ok(self.0.store.jobs().queue_stats(self.now()).await?)
    }

    /// Whether `kind` is a job type `POST /api/v1/jobs` accepts.
    pub fn is_declared(&self, kind: &str) -> bool {
        self.0.targets.contains_key(kind)
    }

    /// Every queue this node works: the configured ones, those the job types name, and
    /// the one of the built-in kinds.
    fn queues(&self) -> Vec<(String, usize)> {
        let mut queues: BTreeMap<String, usize> = self.0.settings.queues.iter().cloned().collect();
        for def in &self.0.schema.jobs {
            let n = self.0.settings.concurrency(&def.queue);
            queues.entry(def.queue.clone()).or_insert(n);
        }
        queues
            .entry("default".to_owned())
            .or_insert_with(|| self.0.settings.concurrency("default"));
        if !self.0.hooks.is_empty() {
            // Deliveries wait on other systems: more at once than one by default.
            let configured = self
                .0
                .settings
                .queues
                .iter()
                .any(|(q, _)| q == webhooks::QUEUE);
            queues
                .entry(webhooks::QUEUE.to_owned())
                .or_insert(if configured { 1 } else { 10 });
        }
        queues.into_iter().collect()
    }
}

/// Names of ferrobase's own job kinds (re-exported for the HTTP layer's errors).
pub fn builtin_kinds() -> &'static [&'static str] {
    BUILTIN_JOBS
}

pub use worker::Worker;
