//! Jobs through the real binary (SPEC §8, "Jobs"): delivery to a service, retries by
//! the documented backoff until `dead`, the `202` callbacks and the progress stream,
//! unique jobs, the admin API, leases and fencing after `kill -9`, cron ticks once per
//! tick across nodes and a missed tick caught up. Time moves through
//! `FERROBASE_TEST_CLOCK`; no test sleeps for time to pass. `pg_jobs.rs` runs the same
//! bodies on PostgreSQL.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use ferrobase_testkit::receiver::{Received, Receiver};
use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_jobs.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "whsec_dGVzdC1zaWduaW5nLXNlY3JldC0xMjM0NQ==";

/// The receiver listens on loopback, which outbound calls refuse unless allowed.
const JOB_SETTINGS: &str = "[jobs]\npoll = \"50ms\"\nlease = \"30s\"\nqueues = [\"default=4\"]\n[webhooks]\nallow_private_addresses = true\n[rate_limit]\ndefault = \"100000/1m\"\n";

/// A project whose job types deliver to `receiver`, on a clock the test moves.
pub(crate) fn project(receiver: &Receiver, extra_schema: &str) -> Project {
    let schema = format!(
        r#"
[jobs.send_invoice]
url = "{url}/invoices"
secret = "env:INVOICE_SECRET"
max_attempts = 3
backoff = {{ base = "10s", cap = "15s" }}
unique = {{ key = "payload.invoice_id", period = "1h" }}

[jobs.render]
url = "env:RENDER_URL"
timeout = "5s"
{extra_schema}
"#,
        url = receiver.url()
    );
    let project = Project::on(crate::backend())
        .schema(&schema)
        .settings(JOB_SETTINGS)
        .env("INVOICE_SECRET", SECRET)
        .env("RENDER_URL", &format!("{}/render", receiver.url()))
        .env(
            "FERROBASE_SECRET",
            "jobs-test-secret-of-enough-length-0123456789",
        )
        .file("clock", "0");
    let clock = project.path().join("clock");
    project.env("FERROBASE_TEST_CLOCK", clock.to_str().expect("path"))
}

/// Moves the project's clock (every node of it) to `seconds` after real time.
fn set_clock(clock: &std::path::Path, seconds: f64) {
    std::fs::write(clock, seconds.to_string()).expect("write clock");
}

pub(crate) fn admin_token(s: &Server) -> String {
    let out = s.project().run_with_stdin(
        BIN,
        &[
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--role",
            "admin",
        ],
        "ops-password-1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    login(s, "ops@example.com", "ops-password-1")
}

fn login(s: &Server, email: &str, password: &str) -> String {
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": email, "password": password}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned()
}

pub(crate) fn call(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
    s.send(|c| {
        let mut rb = c
            .request(method.parse().expect("method"), s.url(path))
            .header("authorization", format!("Bearer {token}"));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb
    })
}

pub(crate) fn enqueue(s: &Server, token: &str, body: Value) -> Value {
    let r = call(s, token, "POST", "/api/v1/jobs", Some(body));
    assert!(r.status == 201 || r.status == 200, "{}", r.text);
    r.json()["data"].clone()
}

fn job(s: &Server, token: &str, id: &str) -> Value {
    let r = call(s, token, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].clone()
}

/// Waits until the job satisfies `pred` (the worker runs on its own schedule).
fn wait_job(s: &Server, token: &str, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let j = job(s, token, id);
        if pred(&j) {
            return j;
        }
        assert!(
            std::time::Instant::now() < end,
            "the job never got there: {j}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn seconds(text: &Value) -> f64 {
    let t = time::OffsetDateTime::parse(
        text.as_str().expect("time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    t.unix_timestamp_nanos() as f64 / 1e9
}

/// Checks a delivery's Standard Webhooks signature with Python's own HMAC and base64
/// (an implementation independent of ours).
fn assert_signed(r: &Received) {
    let script = r#"
import base64, hmac, hashlib, sys
secret, msg_id, ts, sig = sys.argv[1:5]
body = sys.stdin.buffer.read()
key = base64.b64decode(secret.split('_', 1)[1])
mac = hmac.new(key, msg_id.encode() + b'.' + ts.encode() + b'.' + body, hashlib.sha256).digest()
expected = 'v1,' + base64.b64encode(mac).decode()
sys.exit(0 if hmac.compare_digest(expected, sig) else 1)
"#;
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            SECRET,
            r.header("webhook-id").expect("webhook-id"),
            r.header("webhook-timestamp").expect("webhook-timestamp"),
            r.header("webhook-signature").expect("webhook-signature"),
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&r.body)
        .expect("write body");
    assert!(
        child.wait().expect("python3").success(),
        "bad signature on {r:?}"
    );
}

#[test]
fn failures_retry_by_the_backoff_formula_and_end_dead() {
    let receiver = Receiver::start(|_| (500, r#"{"error":"ledger offline"}"#.into()));
    let s = project(&receiver, "").serve(BIN);
    let clock = s.path("clock");
    let admin = admin_token(&s);
    let created = enqueue(
        &s,
        &admin,
        json!({"type": "send_invoice", "payload": {"invoice_id": "inv-1"}}),
    );
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["state"], "available");
    assert_eq!(created["maxAttempts"], 3);

    // Attempt 1 fails: retried after base = 10 s, ±10 %.
    let first = wait_job(&s, &admin, &id, |j| {
        j["state"] == "retryable" && j["attempt"] == 1
    });
    let delay = seconds(&first["runAt"]) - seconds(&first["updatedAt"]);
    assert!((9.0..=11.0).contains(&delay), "first delay {delay}");
    assert!(
        first["lastError"].as_str().expect("error").contains("500"),
        "{first}"
    );
    let deliveries = receiver.wait_for(1, WAIT);
    assert_signed(&deliveries[0]);
    assert_eq!(deliveries[0].header("ferrobase-job-id"), Some(id.as_str()));
    assert_eq!(deliveries[0].json(), json!({"invoice_id": "inv-1"}));
    // Nothing runs before its time.
    assert_eq!(receiver.received().len(), 1);

    // Attempt 2 after the clock passes the delay: min(cap 15 s, 10 s * 2) = 15 s, ±10 %.
    set_clock(&clock, 12.0);
    let second = wait_job(&s, &admin, &id, |j| {
        j["attempt"] == 2 && j["state"] == "retryable"
    });
    let delay = seconds(&second["runAt"]) - seconds(&second["updatedAt"]);
    assert!((13.5..=16.5).contains(&delay), "second delay {delay}");

    // Attempt 3 is the last: dead, with the last error kept.
    set_clock(&clock, 30.0);
    let dead = wait_job(&s, &admin, &id, |j| j["state"] == "dead");
    assert_eq!(dead["attempt"], 3);
    assert!(
        dead["lastError"]
            .as_str()
            .expect("error")
            .contains("ledger offline")
    );
    assert!(dead["finishedAt"].is_string());
    let deliveries = receiver.wait_for(3, WAIT);
    assert_eq!(deliveries.len(), 3, "dead jobs are not delivered again");
    let attempts: Vec<&str> = deliveries
        .iter()
        .map(|d| d.header("ferrobase-job-attempt").expect("attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    // The same webhook-id on every attempt, so a service can de-duplicate.
    assert!(
        deliveries
            .iter()
            .all(|d| d.header("webhook-id") == Some(id.as_str()))
    );

    // The admin retries it: one more attempt, which succeeds... or here fails again.
    let r = call(
        &s,
        &admin,
        "POST",
        &format!("/api/v1/admin/jobs/{id}/retry"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let again = wait_job(&s, &admin, &id, |j| {
        j["attempt"] == 4 && j["state"] == "dead"
    });
    assert_eq!(again["maxAttempts"], 4);
}

#[test]
fn a_202_job_reports_progress_and_completes_by_callback() {
    let receiver = Receiver::start(|_| (202, "{}".into()));
    let s = project(&receiver, "").serve(BIN);
    let admin = admin_token(&s);
    let created = enqueue(&s, &admin, json!({"type": "render", "payload": {"doc": 7}}));
    let id = created["id"].as_str().expect("id").to_owned();
    let delivery = receiver.wait_for(1, WAIT).remove(0);
    assert_eq!(delivery.path, "/render");
    assert_eq!(
        delivery.header("webhook-signature"),
        None,
        "no secret, no signature"
    );
    let token = delivery
        .header("ferrobase-job-token")
        .expect("job token")
        .to_owned();
    let running = wait_job(&s, &admin, &id, |j| j["state"] == "running");
    assert_eq!(running["attempt"], 1);

    // Follow the job's changes while the service reports.
    let events_url = s.url(&format!("/api/v1/jobs/{id}/events"));
    let admin_for_stream = admin.clone();
    let stream = std::thread::spawn(move || {
        let response = ferrobase_testkit::reqwest::blocking::Client::builder()
            .timeout(WAIT)
            .build()
            .expect("client")
            .get(events_url)
            .header("authorization", format!("Bearer {admin_for_stream}"))
            .send()
            .expect("events");
        assert_eq!(response.status(), 200);
        let mut states = Vec::new();
        for line in BufReader::new(response).lines() {
            let line = line.expect("line");
            if let Some(data) = line.strip_prefix("data:") {
                let event: Value = serde_json::from_str(data.trim()).expect("json");
                states.push((
                    event["state"].as_str().unwrap_or("").to_owned(),
                    event["progress"].clone(),
                ));
            }
        }
        states
    });

    let callback = |path: &str, token: &str, body: Value| {
        s.send(|c| {
            c.post(s.url(&format!("/api/v1/jobs/{id}/{path}")))
                .header("ferrobase-job-token", token)
                .json(&body)
        })
    };
    let bad = callback("progress", "1.forged", json!({"progress": 10}));
    assert_eq!(bad.status, 401, "{}", bad.text);
    let bad = callback("progress", &token, json!({"progress": 101}));
    assert_eq!(bad.status, 400, "{}", bad.text);
    let r = callback(
        "progress",
        &token,
        json!({"progress": 40, "message": "page 4 of 10"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let j = job(&s, &admin, &id);
    assert_eq!(
        (j["progress"].clone(), j["message"].clone()),
        (json!(40), json!("page 4 of 10"))
    );
    let r = callback("complete", &token, json!({"result": {"pages": 10}}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"]["state"], "completed");
    assert_eq!(r.json()["data"]["result"], json!({"pages": 10}));
    // Done is done: the token's attempt no longer holds the job.
    let late = callback("fail", &token, json!({"error": "too late"}));
    assert_eq!(late.status, 409, "{}", late.text);

    let states = stream.join().expect("stream");
    let names: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        names,
        ["available", "running", "running", "completed"],
        "{states:?}"
    );
    assert_eq!(states[2].1, json!(40));
    assert_eq!(receiver.received().len(), 1, "delivered once");
}

#[test]
fn unique_jobs_deduplicate_and_bad_input_is_refused() {
    let receiver = Receiver::start(|_| (200, "{}".into()));
    let s = project(&receiver, "").serve(BIN);
    let admin = admin_token(&s);
    // Far in the future: the first stays scheduled while the second arrives.
    let at = "2100-01-01T00:00:00Z";
    let first = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "send_invoice", "payload": {"invoice_id": 9}, "runAt": at})),
    );
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.json()["data"]["state"], "scheduled");
    let second = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "send_invoice", "payload": {"invoice_id": 9, "note": "again"}})),
    );
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json()["data"]["id"], first.json()["data"]["id"]);
    let other = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "send_invoice", "payload": {"invoice_id": 10}, "runAt": at})),
    );
    assert_eq!(other.status, 201);

    // Cancelling frees the key; the cancelled job can be retried by an admin.
    let id = first.json()["data"]["id"].as_str().expect("id").to_owned();
    let r = call(
        &s,
        &admin,
        "POST",
        &format!("/api/v1/admin/jobs/{id}/cancel"),
        None,
    );
    assert_eq!(r.json()["data"]["state"], "cancelled");
    let r = call(
        &s,
        &admin,
        "POST",
        &format!("/api/v1/admin/jobs/{id}/cancel"),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.text);
    let third = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "send_invoice", "payload": {"invoice_id": 9}})),
    );
    assert_eq!(third.status, 201, "{}", third.text);
    let r = call(
        &s,
        &admin,
        "POST",
        &format!("/api/v1/admin/jobs/{id}/retry"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    wait_job(&s, &admin, &id, |j| j["state"] == "completed");

    // The admin list: filters and cursor pages.
    let r = call(
        &s,
        &admin,
        "GET",
        "/api/v1/admin/jobs?type=send_invoice&limit=2",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"].as_array().expect("data").len(), 2);
    let cursor = r.json()["meta"]["nextCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let r = call(
        &s,
        &admin,
        "GET",
        &format!("/api/v1/admin/jobs?type=send_invoice&limit=2&cursor={cursor}"),
        None,
    );
    assert_eq!(r.json()["data"].as_array().expect("data").len(), 1);
    assert_eq!(r.json()["meta"]["nextCursor"], Value::Null);
    let r = call(
        &s,
        &admin,
        "GET",
        "/api/v1/admin/jobs?state=scheduled",
        None,
    );
    assert_eq!(r.json()["data"].as_array().expect("data").len(), 1);
    let r = call(&s, &admin, "GET", "/api/v1/admin/jobs?state=sleeping", None);
    assert_eq!(r.status, 400);
    let r = call(&s, &admin, "GET", "/api/v1/admin/queues", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"][0]["queue"], "default");

    // Delete: not while running; gone after.
    let r = call(
        &s,
        &admin,
        "DELETE",
        &format!("/api/v1/admin/jobs/{id}"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let r = call(&s, &admin, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(r.status, 404);

    // Bad input: an unknown type, a payload too large, a field that does not exist.
    let r = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "nope"})),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.json()["error"]["details"]["fields"]["type"][0]
            .as_str()
            .expect("msg")
            .contains("send_invoice")
    );
    let big = "x".repeat(70 * 1024);
    let r = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "render", "payload": {"blob": big}})),
    );
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    let r = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "render", "when": 1})),
    );
    assert_eq!(r.status, 400);
    let r = call(
        &s,
        &admin,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "send_invoice", "payload": {}})),
    );
    assert_eq!(r.status, 400, "a unique type needs its key: {}", r.text);

    // Who may: users neither enqueue nor manage; they do not see others' jobs.
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "eve@example.com", "password": "eve-password-1"}),
    );
    assert_eq!(r.status, 201);
    let eve = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = call(
        &s,
        &eve,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "render"})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    // Not through an API key either: jobs:write is for admins, and `*` does not grant it.
    let r = call(
        &s,
        &eve,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "jobs", "scopes": ["jobs:write"]})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = call(
        &s,
        &eve,
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "all", "scopes": ["*"]})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json()["data"]["key"].as_str().expect("key").to_owned();
    let r = call(
        &s,
        &key,
        "POST",
        "/api/v1/jobs",
        Some(json!({"type": "render"})),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let other_id = other.json()["data"]["id"].as_str().expect("id").to_owned();
    let r = call(&s, &eve, "GET", &format!("/api/v1/jobs/{other_id}"), None);
    assert_eq!(r.status, 404);
    let r = call(&s, &eve, "GET", "/api/v1/admin/jobs", None);
    assert_eq!(r.status, 403);
    let r = s.get("/api/v1/admin/queues");
    assert_eq!(r.status, 401);
}

#[test]
fn a_killed_nodes_job_is_taken_over_after_its_lease_and_its_late_completion_is_refused() {
    // The service holds every job (202) and reports later.
    let receiver = Receiver::start(|_| (202, "{}".into()));
    let s = project(&receiver, "").serve(BIN);
    let clock = s.path("clock");
    let admin = admin_token(&s);
    let id = enqueue(&s, &admin, json!({"type": "render", "payload": {"doc": 1}}))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let first = receiver.wait_for(1, WAIT).remove(0);
    let old_token = first
        .header("ferrobase-job-token")
        .expect("token")
        .to_owned();
    // On PostgreSQL a second node runs beside the first and takes the job over; on
    // SQLite (one process per file) the node comes back after the kill.
    let on_postgres = crate::backend() == Backend::Postgres && s.project().database_url().is_some();
    let second_node = on_postgres.then(|| s.another(BIN));
    s.signal("KILL");
    let mut dead = s;
    dead.wait_exit();
    // With a second node, the first one's project (and its database) outlives it.
    let _keep;
    let s = match second_node {
        Some(node) => {
            _keep = Some(dead.into_project());
            node
        }
        None => {
            _keep = None;
            dead.into_project().serve(BIN)
        }
    };
    let admin = login(&s, "ops@example.com", "ops-password-1");
    // Before the lease ends the job stays with the dead attempt; after it, it is taken
    // again.
    let held = job(&s, &admin, &id);
    assert_eq!(
        (held["state"].clone(), held["attempt"].clone()),
        (json!("running"), json!(1))
    );
    set_clock(&clock, 31.0);
    let second = receiver.wait_for(2, WAIT).remove(1);
    assert_eq!(second.header("ferrobase-job-attempt"), Some("2"));
    let new_token = second
        .header("ferrobase-job-token")
        .expect("token")
        .to_owned();
    assert_ne!(new_token, old_token);

    let complete = |token: &str| {
        s.send(|c| {
            c.post(s.url(&format!("/api/v1/jobs/{id}/complete")))
                .header("ferrobase-job-token", token)
                .json(&json!({"result": token}))
        })
    };
    let late = complete(&old_token);
    assert_eq!(
        late.status, 409,
        "the first attempt was fenced out: {}",
        late.text
    );
    let r = complete(&new_token);
    assert_eq!(r.status, 200, "{}", r.text);
    let done = job(&s, &admin, &id);
    assert_eq!(done["state"], "completed");
    assert_eq!(done["attempt"], 2);
    assert_eq!(done["result"], json!(new_token));
    // The history names every attempt's end, the rescued one too.
    let bearer = format!("Bearer {admin}");
    let history = ferrobase_testkit::realtime::Sse::open(
        &s.url(&format!("/api/v1/jobs/{id}/events")),
        &[("Authorization", &bearer)],
    )
    .expect("history");
    let mut states = Vec::new();
    while let Some(e) = history.next() {
        let d = e.json();
        states.push((
            d["state"].as_str().unwrap_or_default().to_owned(),
            d["attempt"].clone(),
        ));
        if d["state"] == "retryable" {
            assert!(
                d["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("stopped renewing its lease"),
                "{d}"
            );
        }
    }
    assert_eq!(
        states,
        vec![
            ("available".to_owned(), json!(0)),
            ("running".to_owned(), json!(1)),
            ("retryable".to_owned(), json!(1)),
            ("running".to_owned(), json!(2)),
            ("completed".to_owned(), json!(2)),
        ]
    );
}

#[test]
fn a_tick_missed_while_no_node_ran_runs_once_at_start() {
    let receiver = Receiver::start(|_| (200, "{}".into()));
    let s = project(
        &receiver,
        r#"
[schedules.hourly_render]
cron = "0 * * * *"
timezone = "Europe/Berlin"
job = "render"
payload = { kind = "hourly" }
"#,
    )
    .serve(BIN);
    let admin = admin_token(&s);
    // The schedule is recorded at start; nothing is due yet.
    let listed = |s: &Server, admin: &str| {
        call(s, admin, "GET", "/api/v1/admin/jobs?type=render", None).json()["data"]
            .as_array()
            .expect("data")
            .clone()
    };
    assert!(listed(&s, &admin).is_empty());
    s.signal("TERM");
    let mut stopped = s;
    assert!(stopped.wait_exit().success());
    let project = stopped.into_project();
    // Three hours pass with no node running: one run of the last tick at start.
    std::fs::write(project.path().join("clock"), (3.0 * 3600.0).to_string()).expect("clock");
    let s = project.serve(BIN);
    let admin = login(&s, "ops@example.com", "ops-password-1");
    let delivered = receiver.wait_for(1, WAIT);
    assert_eq!(delivered[0].json(), json!({"kind": "hourly"}));
    let jobs = listed(&s, &admin);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let tick = seconds(&jobs[0]["runAt"]);
    assert_eq!(tick % 3600.0, 0.0, "a whole hour: {}", jobs[0]["runAt"]);
}

#[test]
fn check_refuses_bad_job_declarations_with_their_location() {
    let project = Project::new().schema(
        r#"
[jobs.report]
url = "ftp://example.com"
max_attempts = 0

[schedules.never]
cron = "0 0 30 2 *"
job = "report"

[schedules.typo]
cron = "@daily"
job = "reprt"

[schedules.zone]
cron = "@daily"
timezone = "Mars/Olympus"
job = "report"
"#,
    );
    let out = project.run(BIN, &["check"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for expected in [
        "url must be an http(s) URL",
        "max_attempts must be an integer from 1 to 1000",
        "never fires",
        "unknown job type 'reprt'",
        "did you mean 'report'",
        "not a known time zone",
        "schema.toml:",
    ] {
        assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
    }
}

#[test]
fn shutdown_lets_a_running_job_finish_and_a_worker_only_node_runs_jobs() {
    // The service answers only when the test lets it: SIGTERM arrives mid-job.
    let gate = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let open = gate.clone();
    let receiver = Receiver::start(move |_| {
        let (lock, cvar) = &*open;
        let mut released = lock.lock().expect("lock");
        while !*released {
            released = cvar.wait(released).expect("lock");
        }
        (200, r#"{"done":true}"#.into())
    });
    let mut s = project(&receiver, "").serve(BIN);
    let admin = admin_token(&s);
    let id = enqueue(&s, &admin, json!({"type": "render", "payload": {"doc": 1}}))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    receiver.wait_for(1, WAIT);
    s.signal("TERM");
    assert!(
        s.logs
            .wait_for(WAIT, |l| l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutdown signal received")))
            .is_some(),
        "no shutdown began"
    );
    {
        let (lock, cvar) = &*gate;
        *lock.lock().expect("lock") = true;
        cvar.notify_all();
    }
    assert!(s.wait_exit().success());

    // Back up without a worker: the job finished before the node stopped.
    let project = s.into_project().env("FERROBASE_JOBS__WORKER", "false");
    let s = project.serve(BIN);
    let admin = login(&s, "ops@example.com", "ops-password-1");
    let done = job(&s, &admin, &id);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["result"], json!({"done": true}));

    // This node runs no jobs; `ferrobase worker` does.
    let second = enqueue(&s, &admin, json!({"type": "render", "payload": {"doc": 2}}))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut worker = s.project().start(BIN, &["worker"]);
    let delivered = receiver.wait_for(2, WAIT);
    assert_eq!(delivered[1].json(), json!({"doc": 2}));
    wait_job(&s, &admin, &second, |j| j["state"] == "completed");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    assert!(worker.wait().expect("worker").success());
}

#[test]
fn the_hourly_clean_up_removes_what_expired() {
    let receiver = Receiver::start(|_| (200, "{}".into()));
    let s = project(&receiver, "").serve(BIN);
    let clock = s.path("clock");
    let admin = admin_token(&s);
    // The admin's login and a registration each leave a refresh token; the
    // registration's user is an event.
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "zoe@example.com", "password": "zoe-password-1"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // Forty days later every refresh token (30 days) has expired and every event is past
    // the day of retention; the next hourly tick runs the clean-up.
    set_clock(&clock, 40.0 * 24.0 * 3600.0);
    let end = std::time::Instant::now() + WAIT;
    let cleanup = loop {
        let fresh_admin = call(&s, &admin, "GET", "/api/v1/admin/jobs?type=cleanup", None);
        // The admin's access token expired with the clock: sign in again when refused.
        let listed = if fresh_admin.status == 401 {
            let token = login(&s, "ops@example.com", "ops-password-1");
            call(&s, &token, "GET", "/api/v1/admin/jobs?type=cleanup", None)
        } else {
            fresh_admin
        };
        let done = listed.json()["data"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["state"] == "completed").cloned());
        if let Some(job) = done {
            break job;
        }
        assert!(
            std::time::Instant::now() < end,
            "no clean-up ran: {}",
            listed.text
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let result = &cleanup["result"];
    assert!(
        result["expired"].as_u64().expect("expired") >= 2,
        "{cleanup}"
    );
    assert!(result["events"].as_u64().expect("events") >= 2, "{cleanup}");
}

#[test]
fn jobs_never_reach_private_addresses_unless_allowed() {
    let receiver = Receiver::start(|_| (200, "{}".into()));
    // The same project without allow_private_addresses: the receiver is on 127.0.0.1.
    let s = project(&receiver, "")
        .settings("[jobs]\npoll = \"50ms\"\n")
        .serve(BIN);
    let admin = admin_token(&s);
    let id = enqueue(&s, &admin, json!({"type": "render", "payload": {}}))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let dead = wait_job(&s, &admin, &id, |j| j["state"] == "dead");
    assert!(
        dead["lastError"]
            .as_str()
            .expect("error")
            .contains("not a public address"),
        "{dead}"
    );
    assert_eq!(dead["attempt"], 1, "a refused destination is not retried");
    assert!(receiver.received().is_empty());
}
