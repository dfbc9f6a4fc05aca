//! The job queue's rows and statements, shared by SQLite and PostgreSQL (SPEC §8,
//! "Jobs"). Times are microseconds since the Unix epoch in `BIGINT` columns on both
//! stores, so the claim, lease and backoff comparisons are the same integers everywhere.
//!
//! A job's `attempt` is its fencing token: claiming increments it, and every later
//! statement of that attempt (heartbeat, finish, release) names it and only applies while
//! the job is still `running` that attempt. A worker that lost its lease (the job was
//! rescued and claimed again) therefore cannot complete or fail it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{Fut, StoreError};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting for its `run_at`.
    Scheduled,
    /// Due, waiting for a worker.
    Available,
    /// Claimed by a worker whose lease has not expired.
    Running,
    /// Failed an attempt; runs again at `run_at`.
    Retryable,
    /// Done.
    Completed,
    /// Failed its last attempt (the last error is kept).
    Dead,
    /// Cancelled by an admin.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 7] = [
        Self::Scheduled,
        Self::Available,
        Self::Running,
        Self::Retryable,
        Self::Completed,
        Self::Dead,
        Self::Cancelled,
    ];

    /// The state's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Available => "available",
            Self::Running => "running",
            Self::Retryable => "retryable",
            Self::Completed => "completed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the job will not run again by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Dead | Self::Cancelled)
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Its id (UUIDv7 text).
    pub id: String,
    /// The job type (or built-in kind).
    pub kind: String,
    /// The queue it runs on.
    pub queue: String,
    /// Its state as stored (a `scheduled` job past its `run_at` is due).
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// What the job is given.
    pub payload: Value,
    /// Attempts so far (the running attempt included); the fencing token.
    pub attempt: i32,
    /// Attempts before it is dead.
    pub max_attempts: i32,
    /// When it is due (µs since the epoch).
    pub run_at: i64,
    /// Until when the running attempt holds the job (µs).
    pub lease_until: Option<i64>,
    /// Reported progress, 0-100.
    pub progress: Option<i32>,
    /// The last progress message.
    pub message: Option<String>,
    /// What the job returned.
    pub result: Option<Value>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Who enqueued it (a user id), if a user did.
    pub created_by: Option<String>,
    /// When it was enqueued (µs).
    pub created_at: i64,
    /// When it last changed (µs).
    pub updated_at: i64,
    /// When it reached a final state (µs).
    pub finished_at: Option<i64>,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: String,
    /// The job type.
    pub kind: String,
    /// The queue.
    pub queue: String,
    /// Higher runs first.
    pub priority: i32,
    /// The payload.
    pub payload: Value,
    /// Attempts before it is dead.
    pub max_attempts: i32,
    /// When it is due (µs).
    pub run_at: i64,
    /// De-duplication: the key and until when it holds (µs).
    pub unique: Option<(String, i64)>,
    /// Who enqueues it.
    pub created_by: Option<String>,
    /// Now (µs).
    pub now: i64,
}

/// What enqueueing did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// A new job.
    Created(Job),
    /// A job with the same unique key within its period: nothing was added.
    Existing(Job),
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// It succeeded, with an optional result.
    Completed(Option<Value>),
    /// It failed and runs again at the given time (µs).
    Retry {
        /// What went wrong.
        error: String,
        /// When to run again.
        at: i64,
    },
    /// It failed for good.
    Dead(String),
}

/// Which jobs an admin lists, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this type.
    pub kind: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only types starting with this.
    pub kind_prefix: Option<String>,
    /// Only jobs older than this id (the previous page's last).
    pub before: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// One queue's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Jobs per state.
    pub counts: BTreeMap<&'static str, i64>,
    /// The due time of the oldest job waiting for a worker (µs).
    pub oldest_due: Option<i64>,
    /// Jobs completed in the last minute.
    pub completed_last_minute: i64,
}

/// A change of a job, for its event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// Position in the stream (increasing).
    pub seq: i64,
    /// When (µs).
    pub at: i64,
    /// The state after the change.
    pub state: JobState,
    /// The attempt.
    pub attempt: i32,
    /// The progress then.
    pub progress: Option<i32>,
    /// A message (progress) or the error (failures).
    pub message: Option<String>,
}

/// The job queue.
pub trait JobStore: Send + Sync {
    /// Adds a job, or returns the one holding its unique key.
    fn enqueue(&self, job: NewJob) -> Fut<'_, Result<Enqueued, StoreError>>;

    /// One job.
    fn job(&self, id: String) -> Fut<'_, Result<Option<Job>, StoreError>>;

    /// Takes up to `limit` due jobs of `queue` (highest priority, then oldest due
    /// first), each with its attempt incremented and a lease until `lease_until`. With
    /// `rescue`, jobs whose lease expired are rescued first: retryable at once, or dead
    /// when that was their last attempt.
    fn claim(
        &self,
        queue: String,
        limit: usize,
        now: i64,
        lease_until: i64,
        rescue: bool,
    ) -> Fut<'_, Result<Vec<Job>, StoreError>>;

    /// Extends the lease of a running attempt, recording progress when given; `false`
    /// when the attempt no longer holds the job.
    fn heartbeat(
        &self,
        id: String,
        attempt: i32,
        lease_until: i64,
        progress: Option<(i32, Option<String>)>,
        now: i64,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Ends a running attempt; `false` when it no longer holds the job (fenced out).
    fn finish(
        &self,
        id: String,
        attempt: i32,
        finish: Finish,
        now: i64,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let ended = self.finish_many(vec![(id, attempt, finish)], now).await?;
            Ok(ended.first().copied().unwrap_or(false))
        })
    }

    /// Ends many running attempts in one transaction (a busy worker's outcomes
    /// together); per attempt, whether it still held its job.
    fn finish_many(
        &self,
        outcomes: Vec<(String, i32, Finish)>,
        now: i64,
    ) -> Fut<'_, Result<Vec<bool>, StoreError>>;

    /// Hands a running attempt back untried (shutdown): available again at once. The
    /// attempt number is never reused (it is the fencing token), so the job gets one more
    /// attempt instead.
    fn release(&self, id: String, attempt: i32, now: i64) -> Fut<'_, Result<bool, StoreError>>;

    /// Jobs for an admin, newest first.
    fn list_jobs(&self, filter: JobFilter) -> Fut<'_, Result<Vec<Job>, StoreError>>;

    /// Runs a job that is not running or waiting again, now (one more attempt allowed
    /// when it had used them all). `None` when there is no such job or it is running or
    /// due already.
    fn retry_job(&self, id: String, now: i64) -> Fut<'_, Result<Option<Job>, StoreError>>;

    /// Cancels a job that has not ended; a running attempt is fenced out. `None` when
    /// there is no such job or it ended already.
    fn cancel_job(&self, id: String, now: i64) -> Fut<'_, Result<Option<Job>, StoreError>>;

    /// Deletes a job that is not running; `false` when there is none such.
    fn delete_job(&self, id: String) -> Fut<'_, Result<bool, StoreError>>;

    /// Numbers per queue.
    fn queue_stats(&self, now: i64) -> Fut<'_, Result<Vec<QueueStats>, StoreError>>;

    /// A job's changes after `after`.
    fn job_events(&self, id: String, after: i64) -> Fut<'_, Result<Vec<JobEvent>, StoreError>>;

    /// The last tick a schedule enqueued (µs); `None` for a schedule never seen.
    fn schedule_tick(&self, name: String) -> Fut<'_, Result<Option<i64>, StoreError>>;

    /// Moves a schedule's last tick forward to `tick` (or records it for a new
    /// schedule); `false` when another node moved it there first.
    fn advance_schedule(&self, name: String, tick: i64) -> Fut<'_, Result<bool, StoreError>>;

    /// Forgets a schedule's (or any other named mark's) position.
    fn clear_schedule(&self, name: String) -> Fut<'_, Result<(), StoreError>>;

    /// Deletes final jobs that ended before `before` (µs) and their events.
    fn purge_jobs(&self, before: i64) -> Fut<'_, Result<u64, StoreError>>;

    /// Deletes refresh tokens and sessions expired at `now`, and idempotency keys made
    /// before `idempotency_before` (canonical datetime text).
    fn purge_expired(
        &self,
        now: String,
        idempotency_before: String,
    ) -> Fut<'_, Result<u64, StoreError>>;
}

/// The columns of a job, in the order the decoders read them.
pub(crate) const JOB_COLUMNS: &str = "\"id\", \"kind\", \"queue\", \"state\", \"priority\", \"payload\", \"attempt\", \"max_attempts\", \"run_at\", \"lease_until\", \"progress\", \"message\", \"result\", \"last_error\", \"created_by\", \"created_at\", \"updated_at\", \"finished_at\"";

/// A job's columns as read from a row, before decoding the JSON and the state.
pub(crate) struct RawJob {
    pub id: String,
    pub kind: String,
    pub queue: String,
    pub state: String,
    pub priority: i32,
    pub payload: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: i64,
    pub lease_until: Option<i64>,
    pub progress: Option<i32>,
    pub message: Option<String>,
    pub result: Option<String>,
    pub last_error: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

impl RawJob {
    pub(crate) fn decode(self) -> Result<Job, StoreError> {
        let state = JobState::parse(&self.state)
            .ok_or_else(|| StoreError::Internal(format!("unknown job state '{}'", self.state)))?;
        let json = |text: &str| {
            serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("job JSON: {e}")))
        };
        Ok(Job {
            payload: json(&self.payload)?,
            result: self.result.as_deref().map(json).transpose()?,
            id: self.id,
            kind: self.kind,
            queue: self.queue,
            state,
            priority: self.priority,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            run_at: self.run_at,
            lease_until: self.lease_until,
            progress: self.progress,
            message: self.message,
            last_error: self.last_error,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        })
    }
}

/// The statements both stores run, written once with `$n` parameters (PostgreSQL's
/// spelling; SQLite reads them as `?n` after [`sqlite_params`]).
pub(crate) mod sql {
    /// Frees a unique key whose period is over or whose job was cancelled or died.
    /// (Keys of schedule ticks and webhook deliveries hold for their whole period: they
    /// are what keeps several nodes from making a tick or a delivery twice.)
    pub const FREE_UNIQUE: &str = "UPDATE \"_ferrobase_jobs\" SET \"unique_key\" = NULL WHERE \"unique_key\" = $1 AND (\"unique_until\" <= $2 OR (\"state\" IN ('cancelled', 'dead') AND \"unique_key\" LIKE 't:%'))";

    /// Inserts a job unless its unique key is held.
    pub const INSERT: &str = "INSERT INTO \"_ferrobase_jobs\" (\"id\", \"kind\", \"queue\", \"state\", \"priority\", \"payload\", \"attempt\", \"max_attempts\", \"run_at\", \"unique_key\", \"unique_until\", \"created_by\", \"created_at\", \"updated_at\") VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $11, $12, $12) ON CONFLICT (\"unique_key\") WHERE \"unique_key\" IS NOT NULL DO NOTHING";

    /// Records the end of the attempts [`RESCUE`] took back, in the job's history (the
    /// ids the rescue returned; the message is the one it stored).
    pub const RESCUE_EVENT: &str = "INSERT INTO \"_ferrobase_job_events\" (\"job_id\", \"at\", \"state\", \"attempt\", \"progress\", \"message\") SELECT \"id\", CAST($2 AS BIGINT), \"state\", \"attempt\", \"progress\", \"last_error\" FROM \"_ferrobase_jobs\" WHERE \"id\" = $1";

    /// Rescues jobs whose lease expired; returns their ids (each gets a
    /// [`RESCUE_EVENT`]).
    pub const RESCUE: &str = "UPDATE \"_ferrobase_jobs\" SET \"state\" = CASE WHEN \"attempt\" >= \"max_attempts\" THEN 'dead' ELSE 'retryable' END, \"last_error\" = 'the worker running attempt ' || \"attempt\" || ' stopped renewing its lease', \"lease_until\" = NULL, \"run_at\" = $1, \"updated_at\" = $1, \"finished_at\" = CASE WHEN \"attempt\" >= \"max_attempts\" THEN $1 ELSE NULL END WHERE \"state\" = 'running' AND \"lease_until\" < $1 RETURNING \"id\"";

    /// Extends a running attempt's lease, with progress.
    pub const HEARTBEAT: &str = "UPDATE \"_ferrobase_jobs\" SET \"lease_until\" = $3, \"progress\" = COALESCE($4, \"progress\"), \"message\" = COALESCE($5, \"message\"), \"updated_at\" = $6 WHERE \"id\" = $1 AND \"attempt\" = $2 AND \"state\" = 'running'";

    /// Ends a running attempt.
    pub const FINISH: &str = "UPDATE \"_ferrobase_jobs\" SET \"state\" = $3, \"result\" = $4, \"last_error\" = COALESCE($5, \"last_error\"), \"run_at\" = COALESCE($6, \"run_at\"), \"lease_until\" = NULL, \"progress\" = CASE WHEN $3 = 'completed' THEN 100 ELSE \"progress\" END, \"finished_at\" = $7, \"updated_at\" = $8 WHERE \"id\" = $1 AND \"attempt\" = $2 AND \"state\" = 'running'";

    /// Hands a running attempt back.
    pub const RELEASE: &str = "UPDATE \"_ferrobase_jobs\" SET \"state\" = 'available', \"max_attempts\" = \"max_attempts\" + 1, \"lease_until\" = NULL, \"run_at\" = $3, \"updated_at\" = $3 WHERE \"id\" = $1 AND \"attempt\" = $2 AND \"state\" = 'running'";

    /// Runs a job again.
    pub const RETRY: &str = "UPDATE \"_ferrobase_jobs\" SET \"state\" = 'available', \"run_at\" = $2, \"max_attempts\" = CASE WHEN \"max_attempts\" > \"attempt\" THEN \"max_attempts\" ELSE \"attempt\" + 1 END, \"finished_at\" = NULL, \"updated_at\" = $2 WHERE \"id\" = $1 AND (\"state\" IN ('completed', 'dead', 'cancelled', 'retryable') OR (\"state\" = 'scheduled' AND \"run_at\" > $2))";

    /// Cancels a job.
    pub const CANCEL: &str = "UPDATE \"_ferrobase_jobs\" SET \"state\" = 'cancelled', \"lease_until\" = NULL, \"finished_at\" = $2, \"updated_at\" = $2 WHERE \"id\" = $1 AND \"state\" NOT IN ('completed', 'dead', 'cancelled')";

    /// Deletes a job that is not running.
    pub const DELETE: &str =
        "DELETE FROM \"_ferrobase_jobs\" WHERE \"id\" = $1 AND \"state\" <> 'running'";

    /// Deletes a job's events.
    pub const DELETE_EVENTS: &str = "DELETE FROM \"_ferrobase_job_events\" WHERE \"job_id\" = $1";

    /// Records a change of a job (from its row as it now is).
    pub const EVENT: &str = "INSERT INTO \"_ferrobase_job_events\" (\"job_id\", \"at\", \"state\", \"attempt\", \"progress\", \"message\") SELECT \"id\", CAST($2 AS BIGINT), \"state\", \"attempt\", \"progress\", CASE WHEN \"state\" IN ('retryable', 'dead') THEN \"last_error\" WHEN \"state\" = 'completed' THEN \"result\" ELSE \"message\" END FROM \"_ferrobase_jobs\" WHERE \"id\" = $1";

    /// A job's changes after a position.
    pub const EVENTS: &str = "SELECT \"seq\", \"at\", \"state\", \"attempt\", \"progress\", \"message\" FROM \"_ferrobase_job_events\" WHERE \"job_id\" = $1 AND \"seq\" > $2 ORDER BY \"seq\" LIMIT 1000";

    /// Counts per queue and state.
    pub const COUNTS: &str = "SELECT \"queue\", \"state\", COUNT(*) FROM \"_ferrobase_jobs\" GROUP BY \"queue\", \"state\"";

    /// The oldest due job per queue.
    pub const OLDEST_DUE: &str = "SELECT \"queue\", MIN(\"run_at\") FROM \"_ferrobase_jobs\" WHERE \"state\" IN ('scheduled', 'available', 'retryable') AND \"run_at\" <= $1 GROUP BY \"queue\"";

    /// Completions in the last minute per queue.
    pub const THROUGHPUT: &str = "SELECT \"queue\", COUNT(*) FROM \"_ferrobase_jobs\" WHERE \"state\" = 'completed' AND \"finished_at\" > $1 GROUP BY \"queue\"";

    /// A schedule's last tick.
    pub const SCHEDULE_TICK: &str =
        "SELECT \"last_tick\" FROM \"_ferrobase_schedules\" WHERE \"name\" = $1";

    /// Records a new schedule.
    pub const SCHEDULE_NEW: &str = "INSERT INTO \"_ferrobase_schedules\" (\"name\", \"last_tick\") VALUES ($1, $2) ON CONFLICT (\"name\") DO NOTHING";

    /// Forgets a mark.
    pub const SCHEDULE_CLEAR: &str = "DELETE FROM \"_ferrobase_schedules\" WHERE \"name\" = $1";

    /// Moves a schedule forward.
    pub const SCHEDULE_ADVANCE: &str = "UPDATE \"_ferrobase_schedules\" SET \"last_tick\" = $2 WHERE \"name\" = $1 AND \"last_tick\" < $2";

    /// Deletes final jobs that ended before a time.
    pub const PURGE_EVENTS: &str = "DELETE FROM \"_ferrobase_job_events\" WHERE \"job_id\" IN (SELECT \"id\" FROM \"_ferrobase_jobs\" WHERE \"state\" IN ('completed', 'dead', 'cancelled') AND \"finished_at\" < $1)";

    /// Deletes final jobs that ended before a time.
    pub const PURGE: &str = "DELETE FROM \"_ferrobase_jobs\" WHERE \"state\" IN ('completed', 'dead', 'cancelled') AND \"finished_at\" < $1";
}

/// Deletes expired sessions, refresh tokens and idempotency keys ($1: now, $2: the
/// idempotency horizon; PostgreSQL casts them).
pub(crate) const PURGE_EXPIRED: [&str; 4] = [
    "DELETE FROM \"_ferrobase_sessions\" WHERE \"expires_at\" < $1",
    "DELETE FROM \"_ferrobase_refresh_tokens\" WHERE \"expires_at\" < $1",
    "DELETE FROM \"_ferrobase_idempotency\" WHERE \"created_at\" < $1",
    // Text on both stores (canonical datetimes compare as text).
    "DELETE FROM \"_ferrobase_email_tokens\" WHERE \"expires_at\" < $1",
];

/// `(state, result, error, run_at, finished_at)` of a finishing statement.
pub(crate) type FinishColumns = (
    &'static str,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

impl Finish {
    /// `(state, result, error, run_at, finished_at)` of the finishing statement.
    pub(crate) fn columns(&self, now: i64) -> FinishColumns {
        match self {
            Self::Completed(result) => (
                JobState::Completed.as_str(),
                result.as_ref().map(Value::to_string),
                None,
                None,
                Some(now),
            ),
            Self::Retry { error, at } => (
                JobState::Retryable.as_str(),
                None,
                Some(error.clone()),
                Some(*at),
                None,
            ),
            Self::Dead(error) => (
                JobState::Dead.as_str(),
                None,
                Some(error.clone()),
                None,
                Some(now),
            ),
        }
    }
}

/// Queue numbers from the three statistics queries' rows.
pub(crate) fn stats(
    counts: Vec<(String, String, i64)>,
    oldest: Vec<(String, i64)>,
    done: Vec<(String, i64)>,
) -> Vec<QueueStats> {
    fn entry(stats: &mut BTreeMap<String, QueueStats>, queue: String) -> &mut QueueStats {
        stats.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..QueueStats::default()
        })
    }
    let mut stats = BTreeMap::<String, QueueStats>::new();
    for (queue, state, n) in counts {
        if let Some(state) = JobState::parse(&state) {
            entry(&mut stats, queue).counts.insert(state.as_str(), n);
        }
    }
    for (queue, at) in oldest {
        entry(&mut stats, queue).oldest_due = Some(at);
    }
    for (queue, n) in done {
        entry(&mut stats, queue).completed_last_minute = n;
    }
    stats.into_values().collect()
}

/// Claimed jobs in the order a claim picks them (`RETURNING` keeps none): highest
/// priority first, then the oldest due, then the id.
pub(crate) fn claim_order(jobs: &mut [Job]) {
    jobs.sort_by(|a, b| (b.priority, a.run_at, &a.id).cmp(&(a.priority, b.run_at, &b.id)));
}

/// A job event's columns: seq, at, state, attempt, progress, message.
pub(crate) type JobEventRow = (i64, i64, String, i32, Option<i32>, Option<String>);

/// A job event from its row.
pub(crate) fn job_event(
    (seq, at, state, attempt, progress, message): JobEventRow,
) -> Result<JobEvent, StoreError> {
    Ok(JobEvent {
        seq,
        at,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Internal(format!("unknown job state '{state}'")))?,
        attempt,
        progress,
        message,
    })
}

/// The `$n` parameters of a shared statement as SQLite's `?n`.
pub(crate) fn sqlite_params(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The job tables (SQLite).
pub(crate) const SQLITE_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS "_ferrobase_jobs" (
  "id" TEXT PRIMARY KEY NOT NULL,
  "kind" TEXT NOT NULL,
  "queue" TEXT NOT NULL,
  "state" TEXT NOT NULL,
  "priority" INTEGER NOT NULL,
  "payload" TEXT NOT NULL,
  "attempt" INTEGER NOT NULL,
  "max_attempts" INTEGER NOT NULL,
  "run_at" INTEGER NOT NULL,
  "lease_until" INTEGER,
  "progress" INTEGER,
  "message" TEXT,
  "result" TEXT,
  "last_error" TEXT,
  "unique_key" TEXT,
  "unique_until" INTEGER,
  "created_by" TEXT,
  "created_at" INTEGER NOT NULL,
  "updated_at" INTEGER NOT NULL,
  "finished_at" INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS "ix___ferrobase_jobs__due" ON "_ferrobase_jobs" ("queue", "priority" DESC, "run_at", "id") WHERE "state" IN ('scheduled', 'available', 'retryable');
CREATE INDEX IF NOT EXISTS "ix___ferrobase_jobs__lease" ON "_ferrobase_jobs" ("lease_until") WHERE "state" = 'running';
CREATE INDEX IF NOT EXISTS "ix___ferrobase_jobs__finished" ON "_ferrobase_jobs" ("finished_at") WHERE "finished_at" IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS "ux___ferrobase_jobs__unique" ON "_ferrobase_jobs" ("unique_key") WHERE "unique_key" IS NOT NULL;
CREATE TABLE IF NOT EXISTS "_ferrobase_job_events" (
  "seq" INTEGER PRIMARY KEY AUTOINCREMENT,
  "job_id" TEXT NOT NULL,
  "at" INTEGER NOT NULL,
  "state" TEXT NOT NULL,
  "attempt" INTEGER NOT NULL,
  "progress" INTEGER,
  "message" TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS "ix___ferrobase_job_events__job" ON "_ferrobase_job_events" ("job_id", "seq");
CREATE TABLE IF NOT EXISTS "_ferrobase_schedules" (
  "name" TEXT PRIMARY KEY NOT NULL,
  "last_tick" INTEGER NOT NULL
) STRICT;
"#;

/// The job tables (PostgreSQL).
pub(crate) const POSTGRES_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS "_ferrobase_jobs" (
  "id" text PRIMARY KEY,
  "kind" text NOT NULL,
  "queue" text NOT NULL,
  "state" text NOT NULL,
  "priority" integer NOT NULL,
  "payload" text NOT NULL,
  "attempt" integer NOT NULL,
  "max_attempts" integer NOT NULL,
  "run_at" bigint NOT NULL,
  "lease_until" bigint,
  "progress" integer,
  "message" text,
  "result" text,
  "last_error" text,
  "unique_key" text,
  "unique_until" bigint,
  "created_by" text,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "finished_at" bigint
);
CREATE INDEX IF NOT EXISTS "ix___ferrobase_jobs__due" ON "_ferrobase_jobs" ("queue", "priority" DESC, "run_at", "id") WHERE "state" IN ('scheduled', 'available', 'retryable');
CREATE INDEX IF NOT EXISTS "ix___ferrobase_jobs__lease" ON "_ferrobase_jobs" ("lease_until") WHERE "state" = 'running';
CREATE INDEX IF NOT EXISTS "ix___ferrobase_jobs__finished" ON "_ferrobase_jobs" ("finished_at") WHERE "finished_at" IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS "ux___ferrobase_jobs__unique" ON "_ferrobase_jobs" ("unique_key") WHERE "unique_key" IS NOT NULL;
CREATE TABLE IF NOT EXISTS "_ferrobase_job_events" (
  "seq" bigserial PRIMARY KEY,
  "job_id" text NOT NULL,
  "at" bigint NOT NULL,
  "state" text NOT NULL,
  "attempt" integer NOT NULL,
  "progress" integer,
  "message" text
);
CREATE INDEX IF NOT EXISTS "ix___ferrobase_job_events__job" ON "_ferrobase_job_events" ("job_id", "seq");
CREATE TABLE IF NOT EXISTS "_ferrobase_schedules" (
  "name" text PRIMARY KEY,
  "last_tick" bigint NOT NULL
);
"#;
