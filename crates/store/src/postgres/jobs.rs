//! The job queue on PostgreSQL: claims take due rows with `FOR UPDATE SKIP LOCKED`, so
//! workers on any number of nodes never take the same job and never wait for each
//! other; enqueueing a due job sends `NOTIFY ferrobase_jobs` in its transaction, and a
//! listening connection per node wakes its idle workers.

use std::sync::Arc;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgStore;
use crate::jobs::{
    Enqueued, Finish, JOB_COLUMNS, Job, JobEvent, JobFilter, JobState, JobStore, NewJob,
    PURGE_EXPIRED, QueueStats, RawJob, sql,
};
use crate::{Fut, StoreError};

/// The channel enqueues notify.
const CHANNEL: &str = "ferrobase_jobs";

/// Ends a batch of attempts in one statement (see `finish_many`).
const FINISH_MANY: &str = "WITH \"v\" AS (SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS \"v\"(\"id\", \"attempt\", \"state\", \"result\", \"error\", \"run_at\", \"finished_at\")), \
     \"done\" AS (UPDATE \"_ferrobase_jobs\" AS \"j\" SET \"state\" = \"v\".\"state\", \"result\" = \"v\".\"result\", \"last_error\" = COALESCE(\"v\".\"error\", \"j\".\"last_error\"), \"run_at\" = COALESCE(\"v\".\"run_at\", \"j\".\"run_at\"), \"lease_until\" = NULL, \"progress\" = CASE WHEN \"v\".\"state\" = 'completed' THEN 100 ELSE \"j\".\"progress\" END, \"finished_at\" = \"v\".\"finished_at\", \"updated_at\" = $8 FROM \"v\" WHERE \"j\".\"id\" = \"v\".\"id\" AND \"j\".\"attempt\" = \"v\".\"attempt\" AND \"j\".\"state\" = 'running' RETURNING \"j\".\"id\", \"j\".\"state\", \"j\".\"attempt\", \"j\".\"progress\", \"j\".\"message\", \"j\".\"last_error\", \"j\".\"result\"), \
     \"logged\" AS (INSERT INTO \"_ferrobase_job_events\" (\"job_id\", \"at\", \"state\", \"attempt\", \"progress\", \"message\") SELECT \"id\", $8, \"state\", \"attempt\", \"progress\", CASE WHEN \"state\" IN ('retryable', 'dead') THEN \"last_error\" WHEN \"state\" = 'completed' THEN \"result\" ELSE \"message\" END FROM \"done\") \
     SELECT \"id\" FROM \"done\"";

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn raw(row: &Row) -> RawJob {
    RawJob {
        id: row.get(0),
        kind: row.get(1),
        queue: row.get(2),
        state: row.get(3),
        priority: row.get(4),
        payload: row.get(5),
        attempt: row.get(6),
        max_attempts: row.get(7),
        run_at: row.get(8),
        lease_until: row.get(9),
        progress: row.get(10),
        message: row.get(11),
        result: row.get(12),
        last_error: row.get(13),
        created_by: row.get(14),
        created_at: row.get(15),
        updated_at: row.get(16),
        finished_at: row.get(17),
    }
}

fn jobs(rows: Vec<Row>) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(|r| raw(r).decode()).collect()
}

async fn get(
    c: &(impl tokio_postgres::GenericClient + Sync),
    id: &str,
) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM \"_ferrobase_jobs\" WHERE \"id\" = $1");
    c.query_opt(&sql, &[&id])
        .await?
        .map(|r| raw(&r).decode())
        .transpose()
}

/// Runs a statement on a transaction, through the connection's statement cache.
async fn run(
    tx: &deadpool_postgres::Transaction<'_>,
    statement: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let prepared = tx.prepare_cached(statement).await?;
    Ok(tx.execute(&prepared, params).await?)
}

async fn event(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
    now: i64,
) -> Result<(), StoreError> {
    run(tx, sql::EVENT, &[&id, &now]).await?;
    Ok(())
}

impl PgStore {
    /// Runs `statement` on job `id` in a transaction and, when it changed the job,
    /// records the change and returns the job as it now is.
    async fn change(
        &self,
        id: &str,
        now: i64,
        statement: &str,
        params: Params<'_>,
    ) -> Result<Option<Job>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if run(&tx, statement, params).await? == 0 {
            return Ok(None);
        }
        event(&tx, id, now).await?;
        let job = get(&*tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// Listens for enqueued jobs on a connection of its own (reconnecting when it
    /// drops) and wakes `wake`'s waiters for each; other nodes' enqueues reach this
    /// node's idle workers without polling.
    pub fn listen_for_jobs(&self, wake: Arc<tokio::sync::Notify>) {
        super::listen(self.config.clone(), CHANNEL, wake);
    }
}

/// Inserts a job, logs it and (when due) notifies, in one statement.
const ENQUEUE: &str = "WITH \"added\" AS (INSERT INTO \"_ferrobase_jobs\" (\"id\", \"kind\", \"queue\", \"state\", \"priority\", \"payload\", \"attempt\", \"max_attempts\", \"run_at\", \"created_by\", \"created_at\", \"updated_at\") VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $10) RETURNING *), \
     \"logged\" AS (INSERT INTO \"_ferrobase_job_events\" (\"job_id\", \"at\", \"state\", \"attempt\") SELECT \"id\", $10, \"state\", 0 FROM \"added\"), \
     \"woken\" AS (SELECT pg_notify('ferrobase_jobs', \"queue\") FROM \"added\" WHERE \"state\" = 'available') \
     SELECT {COLUMNS}, (SELECT COUNT(*) FROM \"woken\") FROM \"added\"";

impl PgStore {
    /// Enqueues a job without a unique key: one round trip.
    async fn enqueue_plain(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        let state = if job.run_at > job.now {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        let payload = job.payload.to_string();
        let client = self.client().await?;
        let sql = ENQUEUE.replace("{COLUMNS}", JOB_COLUMNS);
        let prepared = client.prepare_cached(&sql).await?;
        let row = client
            .query_one(
                &prepared,
                &[
                    &job.id,
                    &job.kind,
                    &job.queue,
                    &state.as_str(),
                    &job.priority,
                    &payload,
                    &job.max_attempts,
                    &job.run_at,
                    &job.created_by,
                    &job.now,
                ],
            )
            .await?;
        Ok(Enqueued::Created(raw(&row).decode()?))
    }
}

impl JobStore for PgStore {
    fn enqueue(&self, job: NewJob) -> Fut<'_, Result<Enqueued, StoreError>> {
        Box::pin(async move {
            if job.unique.is_none() {
                return self.enqueue_plain(job).await;
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let (key, until) = job.unique.clone().unzip();
            if let Some(key) = &key {
                run(&tx, sql::FREE_UNIQUE, &[key, &job.now]).await?;
            }
            let state = if job.run_at > job.now {
                JobState::Scheduled
            } else {
                JobState::Available
            };
            let payload = job.payload.to_string();
            let inserted = run(
                &tx,
                sql::INSERT,
                &[
                    &job.id,
                    &job.kind,
                    &job.queue,
                    &state.as_str(),
                    &job.priority,
                    &payload,
                    &job.max_attempts,
                    &job.run_at,
                    &key,
                    &until,
                    &job.created_by,
                    &job.now,
                ],
            )
            .await?;
            let outcome = if inserted == 1 {
                event(&tx, &job.id, job.now).await?;
                if state == JobState::Available {
                    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &job.queue])
                        .await?;
                }
                let created = get(&*tx, &job.id)
                    .await?
                    .ok_or_else(|| StoreError::Internal("the new job is gone".into()))?;
                Enqueued::Created(created)
            } else {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM \"_ferrobase_jobs\" WHERE \"unique_key\" = $1"
                );
                let row = tx
                    .query_opt(&sql, &[&key])
                    .await?
                    .ok_or_else(|| StoreError::Internal("the unique job is gone".into()))?;
                Enqueued::Existing(raw(&row).decode()?)
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    fn job(&self, id: String) -> Fut<'_, Result<Option<Job>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            get(&**client, &id).await
        })
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
            let client = self.client().await?;
            if rescue {
                // The rescue and its events in one statement (the insert reads what the
                // update returned: the table itself still shows the rows as they were).
                let statement = format!(
                    "WITH \"rescued\" AS ({}, \"state\", \"attempt\", \"progress\", \"last_error\") INSERT INTO \"_ferrobase_job_events\" (\"job_id\", \"at\", \"state\", \"attempt\", \"progress\", \"message\") SELECT \"id\", $1, \"state\", \"attempt\", \"progress\", \"last_error\" FROM \"rescued\"",
                    sql::RESCUE
                );
                let prepared = client.prepare_cached(&statement).await?;
                client.execute(&prepared, &[&now]).await?;
            }
            // One statement: pick (skipping rows other nodes hold), claim, and record
            // each claim's event.
            let sql = format!(
                "WITH \"picked\" AS (SELECT \"id\" AS \"picked_id\" FROM \"_ferrobase_jobs\" WHERE \"queue\" = $1 AND \"state\" IN ('scheduled', 'available', 'retryable') AND \"run_at\" <= $2 ORDER BY \"priority\" DESC, \"run_at\", \"id\" LIMIT $4 FOR UPDATE SKIP LOCKED), \
                 \"claimed\" AS (UPDATE \"_ferrobase_jobs\" SET \"state\" = 'running', \"attempt\" = \"attempt\" + 1, \"lease_until\" = $3, \"updated_at\" = $2 FROM \"picked\" WHERE \"id\" = \"picked\".\"picked_id\" RETURNING {JOB_COLUMNS}), \
                 \"logged\" AS (INSERT INTO \"_ferrobase_job_events\" (\"job_id\", \"at\", \"state\", \"attempt\", \"progress\", \"message\") SELECT \"id\", $2, 'running', \"attempt\", \"progress\", \"message\" FROM \"claimed\") \
                 SELECT {JOB_COLUMNS} FROM \"claimed\""
            );
            let limit = limit as i64;
            let prepared = client.prepare_cached(&sql).await?;
            let rows = client
                .query(&prepared, &[&queue, &now, &lease_until, &limit])
                .await?;
            let mut claimed = jobs(rows)?;
            crate::jobs::claim_order(&mut claimed);
            Ok(claimed)
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
            let (progress, message) = progress.unzip();
            let reported = progress.is_some();
            let message = message.flatten();
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let n = run(
                &tx,
                sql::HEARTBEAT,
                &[&id, &attempt, &lease_until, &progress, &message, &now],
            )
            .await?;
            if n == 1 && reported {
                event(&tx, &id, now).await?;
            }
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    fn finish_many(
        &self,
        outcomes: Vec<(String, i32, Finish)>,
        now: i64,
    ) -> Fut<'_, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            // One statement for the whole batch: the outcomes as arrays, unnested into
            // rows, applied where the attempt still holds its job, each change logged.
            let mut ids = Vec::with_capacity(outcomes.len());
            let mut attempts = Vec::with_capacity(outcomes.len());
            let mut states = Vec::with_capacity(outcomes.len());
            let mut results = Vec::with_capacity(outcomes.len());
            let mut errors = Vec::with_capacity(outcomes.len());
            let mut run_ats = Vec::with_capacity(outcomes.len());
            let mut finished = Vec::with_capacity(outcomes.len());
            for (id, attempt, finish) in &outcomes {
                let (state, result, error, run_at, at) = finish.columns(now);
                ids.push(id.clone());
                attempts.push(*attempt);
                states.push(state);
                results.push(result);
                errors.push(error);
                run_ats.push(run_at);
                finished.push(at);
            }
            let client = self.client().await?;
            let prepared = client.prepare_cached(FINISH_MANY).await?;
            let rows = client
                .query(
                    &prepared,
                    &[
                        &ids, &attempts, &states, &results, &errors, &run_ats, &finished, &now,
                    ],
                )
                .await?;
            let ended: std::collections::HashSet<String> =
                rows.iter().map(|r| r.get::<_, String>(0)).collect();
            Ok(ids.iter().map(|id| ended.contains(id)).collect())
        })
    }

    fn release(&self, id: String, attempt: i32, now: i64) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            Ok(self
                .change(&id, now, sql::RELEASE, &[&id, &attempt, &now])
                .await?
                .is_some())
        })
    }

    fn list_jobs(&self, filter: JobFilter) -> Fut<'_, Result<Vec<Job>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM \"_ferrobase_jobs\" WHERE ($1::text IS NULL OR \"state\" = $1) AND ($2::text IS NULL OR \"kind\" = $2) AND ($3::text IS NULL OR \"queue\" = $3) AND ($4::text IS NULL OR \"id\" < $4) AND ($6::text IS NULL OR left(\"kind\", length($6)) = $6) ORDER BY \"id\" DESC LIMIT $5"
            );
            let state = filter.state.map(JobState::as_str);
            let limit = filter.limit as i64;
            let rows = client
                .query(
                    &sql,
                    &[
                        &state,
                        &filter.kind,
                        &filter.queue,
                        &filter.before,
                        &limit,
                        &filter.kind_prefix,
                    ],
                )
                .await?;
            jobs(rows)
        })
    }

    fn retry_job(&self, id: String, now: i64) -> Fut<'_, Result<Option<Job>, StoreError>> {
        Box::pin(async move { self.change(&id, now, sql::RETRY, &[&id, &now]).await })
    }

    fn cancel_job(&self, id: String, now: i64) -> Fut<'_, Result<Option<Job>, StoreError>> {
        Box::pin(async move { self.change(&id, now, sql::CANCEL, &[&id, &now]).await })
    }

    fn delete_job(&self, id: String) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let n = run(&tx, sql::DELETE, &[&id]).await?;
            if n == 1 {
                run(&tx, sql::DELETE_EVENTS, &[&id]).await?;
            }
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    fn queue_stats(&self, now: i64) -> Fut<'_, Result<Vec<QueueStats>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let counts = client
                .query(sql::COUNTS, &[])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let oldest = client
                .query(sql::OLDEST_DUE, &[&now])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let minute_ago = now - 60_000_000;
            let done = client
                .query(sql::THROUGHPUT, &[&minute_ago])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            Ok(crate::jobs::stats(counts, oldest, done))
        })
    }

    fn job_events(&self, id: String, after: i64) -> Fut<'_, Result<Vec<JobEvent>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .query(sql::EVENTS, &[&id, &after])
                .await?
                .iter()
                .map(|r| {
                    crate::jobs::job_event((
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                    ))
                })
                .collect()
        })
    }

    fn schedule_tick(&self, name: String) -> Fut<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            Ok(client
                .query_opt(sql::SCHEDULE_TICK, &[&name])
                .await?
                .map(|r| r.get(0)))
        })
    }

    fn advance_schedule(&self, name: String, tick: i64) -> Fut<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let created = run(&tx, sql::SCHEDULE_NEW, &[&name, &tick]).await?;
            let moved =
                created == 1 || run(&tx, sql::SCHEDULE_ADVANCE, &[&name, &tick]).await? == 1;
            tx.commit().await?;
            Ok(moved)
        })
    }

    fn clear_schedule(&self, name: String) -> Fut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client.execute(sql::SCHEDULE_CLEAR, &[&name]).await?;
            Ok(())
        })
    }

    fn purge_jobs(&self, before: i64) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            run(&tx, sql::PURGE_EVENTS, &[&before]).await?;
            let n = run(&tx, sql::PURGE, &[&before]).await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    fn purge_expired(
        &self,
        now: String,
        idempotency_before: String,
    ) -> Fut<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let mut n = 0;
            for (i, (statement, at)) in PURGE_EXPIRED
                .iter()
                .zip([&now, &now, &idempotency_before, &now])
                .enumerate()
            {
                // The email tokens keep their times as text; the others as timestamptz.
                let statement = if i < 3 {
                    statement.replace("$1", "CAST($1::text AS timestamptz)")
                } else {
                    (*statement).to_owned()
                };
                n += client.execute(&statement, &[at]).await?;
            }
            Ok(n)
        })
    }
}
