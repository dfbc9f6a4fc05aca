//! `/api/v1/jobs` and `/api/v1/admin/jobs`: enqueueing, reading and following a job,
//! the callbacks of services that answered `202`, and the admin's list, retry, cancel,
//! delete and queue numbers. Thin: the job service decides everything.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferrobase_jobs::{EnqueueRequest, JobError, Jobs, from_micros};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{Enqueued, Job, JobFilter, JobState};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::identity::{Identity, Via};
use crate::records::json_response;
use crate::state::AppState;

/// Most jobs an admin page holds.
const MAX_PAGE: usize = 200;

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Invalid(fields) => Self::validation(fields),
            JobError::PayloadTooLarge => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!(
                    "a job's payload may be at most {} bytes of JSON",
                    ferrobase_jobs::MAX_PAYLOAD_BYTES
                ),
            ),
            JobError::NotFound => Self::not_found("no such job"),
            JobError::Conflict(why) => Self::new(StatusCode::CONFLICT, "CONFLICT", why),
            JobError::BadToken => Self::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "a valid ferrobase-job-token of this job is required",
            ),
            JobError::Store(e) => e.into(),
        }
    }
}

fn field_error(key: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation([(key.to_owned(), vec![message.into()])].into())
}

fn time_text(us: i64) -> String {
    format_datetime(from_micros(us))
}

/// A job as the API shows it.
pub(crate) fn job_json(jobs: &Jobs, job: &Job) -> Value {
    json!({
        "id": job.id,
        "type": job.kind,
        "queue": job.queue,
        "state": jobs.visible_state(job).as_str(),
        "priority": job.priority,
        "payload": job.payload,
        "attempt": job.attempt,
        "maxAttempts": job.max_attempts,
        "runAt": time_text(job.run_at),
        "leaseUntil": job.lease_until.map(time_text),
        "progress": job.progress,
        "message": job.message,
        "result": job.result,
        "lastError": job.last_error,
        "createdBy": job.created_by,
        "createdAt": time_text(job.created_at),
        "updatedAt": time_text(job.updated_at),
        "finishedAt": job.finished_at.map(time_text),
    })
}

fn jobs_of(state: &AppState) -> Result<&Jobs, ApiError> {
    state
        .jobs
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("jobs are not running on this node"))
}

fn is_admin(identity: &Identity) -> bool {
    identity.caller().is_some_and(|c| {
        c.role == "admin"
            && match &c.via {
                Via::ApiKey { scopes, .. } => scopes.iter().any(|s| s == "*" || s == "jobs:write"),
                _ => true,
            }
    })
}

/// `POST /api/v1/jobs`: `{type, payload, runAt?, priority?}`; admins, and API keys
/// with the `jobs:write` scope. 201 with the job, or 200 with the job already holding
/// the type's unique key.
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    // Admins only: through a session or token, or an admin's API key with jobs:write.
    if !is_admin(&identity) {
        return Err(ApiError::forbidden_with(
            "enqueueing jobs needs an admin, or an admin's API key with the jobs:write scope",
        ));
    }
    let created_by = caller.id.clone();
    let jobs = jobs_of(&state)?;
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let kind = match body.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => {
            return Err(field_error(
                "type",
                "is required: the name of a [jobs.*] type",
            ));
        }
    };
    let payload = match body.remove("payload") {
        None => Value::Object(Map::new()),
        Some(payload @ Value::Object(_)) => payload,
        Some(_) => return Err(field_error("payload", "must be a JSON object")),
    };
    let run_at = match body.remove("runAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(at)) => Some(
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .map_err(|_| field_error("runAt", "must be an RFC 3339 date-time"))?,
        ),
        Some(_) => return Err(field_error("runAt", "must be an RFC 3339 date-time")),
    };
    let priority = match body.remove("priority") {
        None => 0,
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| field_error("priority", "must be an integer from -1000 to 1000"))?,
        Some(_) => {
            return Err(field_error(
                "priority",
                "must be an integer from -1000 to 1000",
            ));
        }
    };
    if let Some(key) = body.keys().next() {
        return Err(field_error(
            key,
            "is not a field of a job (type, payload, runAt, priority)",
        ));
    }
    let outcome = jobs
        .enqueue(
            EnqueueRequest {
                kind,
                payload,
                run_at,
                priority,
            },
            Some(created_by),
        )
        .await?;
    let (status, job) = match &outcome {
        Enqueued::Created(job) => (StatusCode::CREATED, job),
        Enqueued::Existing(job) => (StatusCode::OK, job),
    };
    let mut response = json_response(status, &json!({"data": job_json(jobs, job)}));
    if let Ok(location) = format!("/api/v1/jobs/{}", job.id).parse() {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
    Ok(response)
}

/// The job `id` if the caller may see it: its creator or an admin.
async fn visible_job(jobs: &Jobs, identity: &Identity, id: &str) -> Result<Job, ApiError> {
    let caller = identity.caller().ok_or_else(ApiError::unauthorized)?;
    let job = jobs.job(id).await?.ok_or(JobError::NotFound)?;
    if is_admin(identity) || job.created_by.as_deref() == Some(caller.id.as_str()) {
        Ok(job)
    } else {
        Err(JobError::NotFound.into())
    }
}

/// `GET /api/v1/jobs/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let jobs = jobs_of(&state)?;
    let job = visible_job(jobs, &identity, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": job_json(jobs, &job)}),
    ))
}

/// `GET /api/v1/jobs/{id}/events`: Server-Sent Events of the job's changes (`state`
/// events with state, attempt, progress and message), from its first, ending after a
/// final state. `Last-Event-ID` resumes.
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let jobs = jobs_of(&state)?.clone();
    visible_job(&jobs, &identity, &id).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let stream = async_stream(jobs, id, after);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The events of a job as a stream: read, sent, and read again a moment later, until
/// the job reached a final state.
fn async_stream(
    jobs: Jobs,
    id: String,
    after: i64,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send {
    let state = (
        jobs,
        id,
        after,
        std::collections::VecDeque::<Event>::new(),
        false,
    );
    futures_util::stream::unfold(
        state,
        |(jobs, id, mut after, mut queue, mut done)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((Ok(event), (jobs, id, after, queue, done)));
                }
                if done {
                    return None;
                }
                match jobs.events(&id, after).await {
                    Ok(events) if !events.is_empty() => {
                        for e in events {
                            after = e.seq;
                            done = e.state.is_final();
                            let data = json!({
                                "state": e.state.as_str(),
                                "attempt": e.attempt,
                                "progress": e.progress,
                                "message": e.message,
                                "at": time_text(e.at),
                            });
                            queue.push_back(
                                Event::default()
                                    .id(e.seq.to_string())
                                    .event("state")
                                    .data(data.to_string()),
                            );
                        }
                    }
                    Ok(_) => {
                        // A job can end without a change of its own in the log (rescued
                        // on its last attempt, deleted, purged): the stream ends with it.
                        match jobs.job(&id).await {
                            Ok(Some(job)) if job.state.is_final() => {
                                let data = json!({
                                    "state": job.state.as_str(),
                                    "attempt": job.attempt,
                                    "progress": job.progress,
                                    "message": job.last_error,
                                    "at": time_text(job.updated_at),
                                });
                                queue.push_back(
                                    Event::default().event("state").data(data.to_string()),
                                );
                                done = true;
                            }
                            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                            Ok(None) | Err(_) => return None,
                        }
                    }
                    Err(_) => return None,
                }
            }
        },
    )
}

/// The job token of a callback (`ferrobase-job-token`).
fn job_token(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get("ferrobase-job-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| JobError::BadToken.into())
}

/// `POST /api/v1/jobs/{id}/progress`: `{progress: 0-100, message?}`, by the job token.
pub(crate) async fn progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let jobs = jobs_of(&state)?.clone();
    let token = job_token(req.headers())?;
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let progress = body
        .remove("progress")
        .and_then(|v| v.as_i64())
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| (0..=100).contains(n))
        .ok_or_else(|| field_error("progress", "must be an integer from 0 to 100"))?;
    let message = match body.remove("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if m.chars().count() <= 1000 => Some(m),
        Some(_) => {
            return Err(field_error(
                "message",
                "must be a string of at most 1000 characters",
            ));
        }
    };
    no_more(&body)?;
    let job = jobs.progress(&id, &token, progress, message).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": job_json(&jobs, &job)}),
    ))
}

/// `POST /api/v1/jobs/{id}/complete`: `{result?}`, by the job token.
pub(crate) async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let jobs = jobs_of(&state)?.clone();
    let token = job_token(req.headers())?;
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let result = body.remove("result");
    no_more(&body)?;
    if result
        .as_ref()
        .is_some_and(|r| r.to_string().len() > ferrobase_jobs::MAX_RESULT_BYTES)
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "a job's result may be at most {} bytes of JSON",
                ferrobase_jobs::MAX_RESULT_BYTES
            ),
        ));
    }
    let job = jobs.complete(&id, &token, result).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": job_json(&jobs, &job)}),
    ))
}

/// `POST /api/v1/jobs/{id}/fail`: `{error, retry?: bool}`, by the job token.
pub(crate) async fn fail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let jobs = jobs_of(&state)?.clone();
    let token = job_token(req.headers())?;
    let JsonObject(mut body) = JsonObject::from_request(req, &state).await?;
    let error = match body.remove("error") {
        Some(Value::String(e)) if !e.is_empty() => e,
        _ => return Err(field_error("error", "is required: what went wrong")),
    };
    let retry = match body.remove("retry") {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(field_error("retry", "must be true or false")),
    };
    no_more(&body)?;
    let job = jobs.fail(&id, &token, error, retry).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": job_json(&jobs, &job)}),
    ))
}

fn no_more(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.keys().next() {
        Some(key) => Err(field_error(key, "is not a field of this call")),
        None => Ok(()),
    }
}

fn admin(identity: &Identity) -> Result<(), ApiError> {
    match identity.caller() {
        None => Err(ApiError::unauthorized()),
        Some(_) if is_admin(identity) => Ok(()),
        Some(_) => Err(ApiError::forbidden_with("only admins manage jobs")),
    }
}

/// `GET /api/v1/admin/jobs?state=&type=&queue=&limit=&cursor=`: newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    let jobs = jobs_of(&state)?;
    let mut filter = JobFilter {
        limit: 50,
        ..JobFilter::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "state" => filter.state = Some(state_param("state", &value)?),
            "type" => filter.kind = Some(value),
            "queue" => filter.queue = Some(value),
            "limit" => filter.limit = page_limit(&value)?,
            "cursor" => filter.before = Some(decode_cursor(&value)?),
            other => {
                return Err(field_error(
                    other,
                    "is not a parameter of this list (state, type, queue, limit, cursor)",
                ));
            }
        }
    }
    page(jobs, filter, job_json).await
}

/// One page of jobs, newest first, each as `render` shows it, with the next page's
/// cursor.
async fn page(
    jobs: &Jobs,
    filter: JobFilter,
    render: fn(&Jobs, &Job) -> Value,
) -> Result<Response, ApiError> {
    let limit = filter.limit;
    let mut page = jobs
        .list(JobFilter {
            limit: limit + 1,
            ..filter
        })
        .await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more
        .then(|| page.last().map(|j| URL_SAFE_NO_PAD.encode(j.id.as_bytes())))
        .flatten();
    let data: Vec<Value> = page.iter().map(|j| render(jobs, j)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": data, "meta": {"limit": limit, "nextCursor": next}}),
    ))
}

/// A page size parameter.
fn page_limit(value: &str) -> Result<usize, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or_else(|| field_error("limit", format!("must be 1 to {MAX_PAGE}")))
}

/// A state parameter (named `name` in the list's query).
fn state_param(name: &str, value: &str) -> Result<JobState, ApiError> {
    JobState::parse(value).ok_or_else(|| {
        field_error(
            name,
            format!(
                "must be one of {}",
                JobState::ALL.map(JobState::as_str).join(", ")
            ),
        )
    })
}

/// `POST /api/v1/admin/jobs/{id}/retry`.
pub(crate) async fn retry(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    let jobs = jobs_of(&state)?;
    let job = jobs.retry(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": job_json(jobs, &job)}),
    ))
}

/// `POST /api/v1/admin/jobs/{id}/cancel`.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    let jobs = jobs_of(&state)?;
    let job = jobs.cancel(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": job_json(jobs, &job)}),
    ))
}

/// `DELETE /api/v1/admin/jobs/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    jobs_of(&state)?.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/admin/queues`: per queue, jobs per state, the oldest waiting job's due
/// time and lag, and completions in the last minute.
pub(crate) async fn queues(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    let jobs = jobs_of(&state)?;
    let now = jobs.now();
    let data: Vec<Value> = jobs
        .stats()
        .await?
        .iter()
        .map(|q| {
            json!({
                "queue": q.queue,
                "counts": q.counts,
                "oldestDue": q.oldest_due.map(time_text),
                "lagMs": q.oldest_due.map(|at| (now - at).max(0) / 1000),
                "completedLastMinute": q.completed_last_minute,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"data": data})))
}

/// A webhook delivery as the admin sees it.
fn delivery_json(jobs: &Jobs, job: &Job) -> Value {
    let webhook = job
        .kind
        .strip_prefix(ferrobase_jobs::DELIVERY_KIND)
        .unwrap_or_default();
    let state = jobs.visible_state(job);
    // Failures record "<status> after <ms> ms: ..."; successes {status, ms}.
    let last_code = job
        .result
        .as_ref()
        .and_then(|r| r["status"].as_u64())
        .or_else(|| {
            job.last_error
                .as_deref()
                .and_then(|e| e.get(..3))
                .and_then(|code| code.parse().ok())
        });
    json!({
        "id": job.id,
        "webhook": webhook,
        "event": job.payload["seq"],
        "type": job.payload["body"]["type"],
        "status": state.as_str(),
        "attempts": job.attempt,
        "maxAttempts": job.max_attempts,
        "lastResponseCode": last_code,
        "lastDurationMs": job.result.as_ref().and_then(|r| r["ms"].as_u64()),
        "lastError": job.last_error,
        "nextAttempt": matches!(state, JobState::Retryable | JobState::Scheduled | JobState::Available)
            .then(|| time_text(job.run_at)),
        "createdAt": time_text(job.created_at),
        "finishedAt": job.finished_at.map(time_text),
    })
}

/// `GET /api/v1/admin/webhooks/deliveries?webhook=&status=&limit=&cursor=`: newest first.
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    let jobs = jobs_of(&state)?;
    let mut filter = JobFilter {
        limit: 50,
        kind_prefix: Some(ferrobase_jobs::DELIVERY_KIND.to_owned()),
        ..JobFilter::default()
    };
    for (key, value) in params {
        match key.as_str() {
            "webhook" => {
                if !state.schema.webhooks.iter().any(|h| h.name == value) {
                    return Err(field_error(
                        "webhook",
                        format!("no webhook is called '{value}'"),
                    ));
                }
                filter.kind = Some(format!("{}{value}", ferrobase_jobs::DELIVERY_KIND));
            }
            "status" => filter.state = Some(state_param("status", &value)?),
            "limit" => filter.limit = page_limit(&value)?,
            "cursor" => filter.before = Some(decode_cursor(&value)?),
            other => {
                return Err(field_error(
                    other,
                    "is not a parameter of this list (webhook, status, limit, cursor)",
                ));
            }
        }
    }
    page(jobs, filter, delivery_json).await
}

/// One attempt of a delivery, from the job's change that ended it.
fn attempt_json(e: &ferrobase_store::JobEvent) -> Value {
    let message = e.message.clone().unwrap_or_default();
    let (code, ms, error) = if e.state == JobState::Completed {
        let result: Value = serde_json::from_str(&message).unwrap_or(Value::Null);
        (result["status"].as_u64(), result["ms"].as_u64(), None)
    } else {
        // "<status> <reason> after <ms> ms: <body>", or a transport error.
        let code = message.get(..3).and_then(|c| c.parse::<u64>().ok());
        let ms = message
            .split_once(" after ")
            .and_then(|(_, rest)| rest.split_once(" ms"))
            .and_then(|(n, _)| n.parse::<u64>().ok());
        (code, ms, Some(message))
    };
    json!({
        "attempt": e.attempt,
        "at": time_text(e.at),
        "outcome": e.state.as_str(),
        "responseCode": code,
        "durationMs": ms,
        "error": error,
    })
}

/// `GET /api/v1/admin/webhooks/deliveries/{id}`: a delivery with its `history`, every
/// attempt (when, outcome, response code, duration, error).
pub(crate) async fn delivery(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    let jobs = jobs_of(&state)?;
    let job = jobs.job(&id).await?.ok_or(JobError::NotFound)?;
    if !job.kind.starts_with(ferrobase_jobs::DELIVERY_KIND) {
        return Err(JobError::NotFound.into());
    }
    let attempts: Vec<Value> = jobs
        .events(&id, 0)
        .await?
        .iter()
        .filter(|e| {
            matches!(
                e.state,
                JobState::Retryable | JobState::Dead | JobState::Completed
            ) && e.attempt > 0
        })
        .map(attempt_json)
        .collect();
    let mut data = delivery_json(jobs, &job);
    data["history"] = Value::Array(attempts);
    Ok(json_response(StatusCode::OK, &json!({"data": data})))
}

/// `POST /api/v1/admin/webhooks/deliveries/{id}/redeliver`: sends it again now (an
/// endpoint disabled by `410 Gone` is enabled again).
pub(crate) async fn redeliver(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin(&identity)?;
    let jobs = jobs_of(&state)?;
    let job = jobs.job(&id).await?.ok_or(JobError::NotFound)?;
    let Some(webhook) = job.kind.strip_prefix(ferrobase_jobs::DELIVERY_KIND) else {
        return Err(JobError::NotFound.into());
    };
    jobs.enable_webhook(webhook).await?;
    let job = jobs.retry(&id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"data": delivery_json(jobs, &job)}),
    ))
}

fn decode_cursor(value: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .ok_or_else(|| field_error("cursor", "is not a cursor of this list"))
}
