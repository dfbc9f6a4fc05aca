//! The job queue on SQLite: every change through the one writer (claims included, so
//! two workers of a node never take the same job), reads on the reader pool.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::jobs::{
    Enqueued, Finish, JOB_COLUMNS, Job, JobEvent, JobFilter, JobState, JobStore, NewJob,
    PURGE_EXPIRED, QueueStats, RawJob, sql, sqlite_params,
};
use crate::{Fut, StoreError};

fn raw(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: row.get(0)?,
        kind: row.get(1)?,
        queue: row.get(2)?,
        state: row.get(3)?,
        priority: row.get(4)?,
        payload: row.get(5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        run_at: row.get(8)?,
        lease_until: row.get(9)?,
        progress: row.get(10)?,
        message: row.get(11)?,
        result: row.get(12)?,
        last_error: row.get(13)?,
        created_by: row.get(14)?,
        created_at: row.get(15)?,
        updated_at: row.get(16)?,
        finished_at: row.get(17)?,
    })
}

fn get(conn: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM \"_ferrobase_jobs\" WHERE \"id\" = ?1");
    conn.prepare_cached(&sql)?
        .query_row([id], raw)
        .optional()?
        .map(RawJob::decode)
        .transpose()
}

fn exec(
    conn: &Connection,
    statement: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(&sqlite_params(statement))?
        .execute(params)?)
}

fn event(conn: &Connection, id: &str, now: i64) -> Result<(), StoreError> {
    exec(conn, sql::EVENT, params![id, now])?;
    Ok(())
}

/// Runs `statement` on job `id` and, when it changed the job, records the change and
/// returns the job as it now is.
fn change(
    conn: &Connection,
    id: &str,
    now: i64,
    statement: &str,
    params: impl rusqlite::Params,
) -> Result<Option<Job>, StoreError> {
    if exec(conn, statement, params)? == 0 {
        return Ok(None);
    }
    event(conn, id, now)?;
    get(conn, id)
}

impl JobStore for SqliteStore {
    fn enqueue(&self, job: NewJob) -> Fut<'_, Result<Enqueued, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let (key, until) = job.unique.clone().unzip();
                if let Some(key) = &key {
                    exec(tx, sql::FREE_UNIQUE, params![key, job.now])?;
                }
                let state = if job.run_at > job.now {
                    JobState::Scheduled
                } else {
                    JobState::Available
                };
                let inserted = exec(
                    tx,
                    sql::INSERT,
                    params![
                        job.id,
                        job.kind,
                        job.queue,
                        state.as_str(),
                        job.priority,
                        job.payload.to_string(),
                        job.max_attempts,
                        job.run_at,
                        key,
                        until,
                        job.created_by,
                        job.now
                    ],
                )?;
                if inserted == 1 {
                    event(tx, &job.id, job.now)?;
                    let created = get(tx, &job.id)?
                        .ok_or_else(|| StoreError::Internal("the new job is gone".into()))?;
                    return Ok(Enqueued::Created(created));
                }
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM \"_ferrobase_jobs\" WHERE \"unique_key\" = ?1"
                );
                let existing = tx
                    .prepare_cached(&sql)?
                    .query_row([&key], raw)
                    .optional()?
                    .ok_or_else(|| StoreError::Internal("the unique job is gone".into()))?;
                Ok(Enqueued::Existing(existing.decode()?))
            })
            .await
        })
    }

    fn job(&self, id: String) -> Fut<'_, Result<Option<Job>, StoreError>> {
        Box::pin(async move { self.read(move |conn, _| get(conn, &id)).await })
    }

    fn claim(
        &self,
        queue: String,
        limit: usize,
        now: i64,
        lease_until: i64,
        rescue: bool,
    ) -> Fut<'_, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                if rescue {
                    let rescued: Vec<String> = tx
                        .prepare_cached(&sqlite_params(sql::RESCUE))?
                        .query_map([now], |row| row.get(0))?
                        .collect::<Result<_, _>>()?;
                    for id in rescued {
                        exec(tx, sql::RESCUE_EVENT, rusqlite::params![id, now])?;
                    }
                }
                let sql = format!(
                    "UPDATE \"_ferrobase_jobs\" SET \"state\" = 'running', \"attempt\" = \"attempt\" + 1, \"lease_until\" = ?3, \"updated_at\" = ?2 WHERE \"id\" IN (SELECT \"id\" FROM \"_ferrobase_jobs\" WHERE \"queue\" = ?1 AND \"state\" IN ('scheduled', 'available', 'retryable') AND \"run_at\" <= ?2 ORDER BY \"priority\" DESC, \"run_at\", \"id\" LIMIT ?4) RETURNING {JOB_COLUMNS}"
                );
                let mut jobs = tx
                    .prepare_cached(&sql)?
                    .query_map(params![queue, now, lease_until, limit as i64], raw)?
                    .map(|r| r.map_err(StoreError::from).and_then(RawJob::decode))
                    .collect::<Result<Vec<_>, _>>()?;
                for job in &jobs {
                    event(tx, &job.id, now)?;
                }
                crate::jobs::claim_order(&mut jobs);
                Ok(jobs)
            })
            .await
        })
    }

    fn heartbeat(
        &self,
        id: String,
        attempt: i32,
        lease_until: i64,
        progress: Option<(i32, Option<String>)>,
        now: i64,
    ) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let (progress, message) = progress.unzip();
                let reported = progress.is_some();
                let n = exec(
                    tx,
                    sql::HEARTBEAT,
                    params![id, attempt, lease_until, progress, message.flatten(), now],
                )?;
                if n == 1 && reported {
                    event(tx, &id, now)?;
                }
                Ok(n == 1)
            })
            .await
        })
    }

    fn finish_many(
        &self,
        outcomes: Vec<(String, i32, Finish)>,
        now: i64,
    ) -> Fut<'_, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let mut ended = Vec::with_capacity(outcomes.len());
                for (id, attempt, finish) in outcomes {
                    let (state, result, error, run_at, finished) = finish.columns(now);
                    let n = exec(
                        tx,
                        sql::FINISH,
                        params![id, attempt, state, result, error, run_at, finished, now],
                    )?;
                    if n == 1 {
                        event(tx, &id, now)?;
                    }
                    ended.push(n == 1);
                }
                Ok(ended)
            })
            .await
        })
    }

    fn release(&self, id: String, attempt: i32, now: i64) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                Ok(change(tx, &id, now, sql::RELEASE, params![id, attempt, now])?.is_some())
            })
            .await
        })
    }

    fn list_jobs(&self, filter: JobFilter) -> Fut<'_, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM \"_ferrobase_jobs\" WHERE (?1 IS NULL OR \"state\" = ?1) AND (?2 IS NULL OR \"kind\" = ?2) AND (?3 IS NULL OR \"queue\" = ?3) AND (?4 IS NULL OR \"id\" < ?4) AND (?6 IS NULL OR substr(\"kind\", 1, length(?6)) = ?6) ORDER BY \"id\" DESC LIMIT ?5"
                );
                conn.prepare_cached(&sql)?
                    .query_map(
                        params![
                            filter.state.map(JobState::as_str),
                            filter.kind,
                            filter.queue,
                            filter.before,
                            filter.limit as i64,
                            filter.kind_prefix
                        ],
                        raw,
                    )?
                    .map(|r| r.map_err(StoreError::from).and_then(RawJob::decode))
                    .collect()
            })
            .await
        })
    }

    fn retry_job(&self, id: String, now: i64) -> Fut<'_, Result<Option<Job>, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| change(tx, &id, now, sql::RETRY, params![id, now]))
                .await
        })
    }

    fn cancel_job(&self, id: String, now: i64) -> Fut<'_, Result<Option<Job>, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| change(tx, &id, now, sql::CANCEL, params![id, now]))
                .await
        })
    }

    fn delete_job(&self, id: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let n = exec(tx, sql::DELETE, [&id])?;
                if n == 1 {
                    exec(tx, sql::DELETE_EVENTS, [&id])?;
                }
                Ok(n == 1)
            })
            .await
        })
    }

    fn queue_stats(&self, now: i64) -> Fut<'_, Result<Vec<QueueStats>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| {
                let counts: Vec<(String, String, i64)> = conn
                    .prepare_cached(sql::COUNTS)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let oldest: Vec<(String, i64)> = conn
                    .prepare_cached(&sqlite_params(sql::OLDEST_DUE))?
                    .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let done: Vec<(String, i64)> = conn
                    .prepare_cached(&sqlite_params(sql::THROUGHPUT))?
                    .query_map([now - 60_000_000], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(crate::jobs::stats(counts, oldest, done))
            })
            .await
        })
    }

    fn job_events(&self, id: String, after: i64) -> Fut<'_, Result<Vec<JobEvent>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| {
                let rows: Vec<crate::jobs::JobEventRow> = conn
                    .prepare_cached(&sqlite_params(sql::EVENTS))?
                    .query_map(params![id, after], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
                rows.into_iter().map(crate::jobs::job_event).collect()
            })
            .await
        })
    }

    fn schedule_tick(&self, name: String) -> Fut<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            self.read(move |conn, _| {
                Ok(conn
                    .prepare_cached(&sqlite_params(sql::SCHEDULE_TICK))?
                    .query_row([name], |r| r.get(0))
                    .optional()?)
            })
            .await
        })
    }

    fn advance_schedule(&self, name: String, tick: i64) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let created = exec(tx, sql::SCHEDULE_NEW, params![name, tick])?;
                Ok(created == 1 || exec(tx, sql::SCHEDULE_ADVANCE, params![name, tick])? == 1)
            })
            .await
        })
    }

    fn clear_schedule(&self, name: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                exec(tx, sql::SCHEDULE_CLEAR, [name])?;
                Ok(())
            })
            .await
        })
    }

    fn purge_jobs(&self, before: i64) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                exec(tx, sql::PURGE_EVENTS, [before])?;
                Ok(exec(tx, sql::PURGE, [before])? as u64)
            })
            .await
        })
    }

    fn purge_expired(
        &self,
        now: String,
        idempotency_before: String,
    ) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.write(move |tx, _| {
                let [sessions, tokens, keys, mail] = PURGE_EXPIRED;
                let n = exec(tx, sessions, [&now])?
                    + exec(tx, tokens, [&now])?
                    + exec(tx, keys, [&idempotency_before])?
                    + exec(tx, mail, [&now])?;
                Ok(n as u64)
            })
            .await
        })
    }
}
