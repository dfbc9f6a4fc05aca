//! Webhooks through the real binary (SPEC §8, "Webhooks"): a matching write is
//! delivered once, signed (checked by the `standardwebhooks` package, an independent
//! implementation); retries keep the `webhook-id`; `410` disables the endpoint until an
//! admin redelivers; a failed batch sends nothing; kill -9 after an acknowledged write
//! still delivers it; loopback URLs are refused unless allowed. `pg_webhooks.rs` runs
//! the same bodies on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrobase_testkit::receiver::{Received, Receiver};
use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_webhooks.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
const WAIT: Duration = Duration::from_secs(30);
/// 32 random-looking bytes, base64 with padding, as Standard Webhooks secrets are.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw8cKp3Lr4wpM=";

fn project(published: &Receiver, gone: &Receiver, allow_private: bool) -> Project {
    let project = Project::on(crate::backend())
        .schema(
            r#"
[resources.posts.fields]
title  = { type = "string", required = true }
status = { type = "enum", values = ["draft", "published"], default = "draft" }
[resources.posts.rules]
list = "true"
view = "true"
create = "true"
update = "true"
delete = "true"

[webhooks.published]
resource = "posts"
events = ["create", "update"]
filter = "status = 'published'"
url = "env:PUBLISHED_URL"
secret = "env:PUBLISHED_SECRET"

[webhooks.deleted]
resource = "posts"
events = ["delete"]
url = "env:DELETED_URL"
retry_schedule = ["1s"]
"#,
        )
        .settings(&format!(
            // The tests poll the admin API; rate limits are another test's subject.
            "[jobs]\npoll = \"50ms\"\n[webhooks]\nallow_private_addresses = {allow_private}\n[rate_limit]\ndefault = \"100000/1m\"\n"
        ))
        .env(
            "PUBLISHED_URL",
            &format!("{}/hooks/published", published.url()),
        )
        .env("PUBLISHED_SECRET", SECRET)
        .env("DELETED_URL", &format!("{}/hooks/deleted", gone.url()))
        .env(
            "FERROBASE_SECRET",
            "webhooks-test-secret-of-enough-length-0123456789",
        )
        .file("clock", "0");
    let clock = project.path().join("clock");
    project.env("FERROBASE_TEST_CLOCK", clock.to_str().expect("path"))
}

fn create(s: &Server, title: &str, status: &str) -> Value {
    let r = s.post("/api/v1/posts", &json!({"title": title, "status": status}));
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"].clone()
}

fn admin_token(s: &Server) -> String {
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
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": "ops@example.com", "password": "ops-password-1"}),
    );
    r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn deliveries(s: &Server, admin: &str, query: &str) -> Vec<Value> {
    let r: Reply = s.send(|c| {
        c.get(s.url(&format!("/api/v1/admin/webhooks/deliveries{query}")))
            .header("authorization", format!("Bearer {admin}"))
    });
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].as_array().expect("data").clone()
}

/// Waits until the deliveries listed by `query` satisfy `pred`.
fn wait_deliveries(
    s: &Server,
    admin: &str,
    query: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let list = deliveries(s, admin, query);
        if pred(&list) {
            return list;
        }
        assert!(
            std::time::Instant::now() < end,
            "deliveries never got there: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Verifies a delivery with the `standardwebhooks` Python package.
fn verify(r: &Received) {
    let Some(python) =
        ferrobase_testkit::tools::python(BIN, "standardwebhooks", &["standardwebhooks==1.3.0"])
    else {
        return;
    };
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, headers = sys.argv[1], json.loads(sys.argv[2])
Webhook(secret).verify(sys.stdin.buffer.read(), headers)
"#;
    let headers = json!({
        "webhook-id": r.header("webhook-id"),
        "webhook-timestamp": r.header("webhook-timestamp"),
        "webhook-signature": r.header("webhook-signature"),
    });
    use std::io::Write;
    let mut child = std::process::Command::new(python)
        .args(["-c", script, SECRET, &headers.to_string()])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&r.body)
        .expect("body");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "standardwebhooks refused {r:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_matching_write_is_delivered_once_signed() {
    let published = Receiver::start(|_| (200, "{}".into()));
    let gone = Receiver::start(|_| (200, "{}".into()));
    let s = project(&published, &gone, true).serve(BIN);
    // A draft does not match the filter; the published post does, once.
    create(&s, "a draft", "draft");
    let post = create(&s, "hello", "published");
    let first = published.wait_for(1, WAIT).remove(0);
    verify(&first);
    assert_eq!(first.path, "/hooks/published");
    let body = first.json();
    assert_eq!(body["type"], "posts.create");
    assert_eq!(body["data"]["title"], "hello");
    assert_eq!(body["data"]["id"], post["id"]);
    assert!(body.get("previous").is_none(), "{body}");
    assert!(first.header("webhook-id").expect("id").starts_with("evt_"));

    // An update that keeps it published: delivered with the previous record.
    let id = post["id"].as_str().expect("id");
    let r = s.patch(
        &format!("/api/v1/posts/{id}"),
        &json!({"title": "hello again"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let second = published.wait_for(2, WAIT).remove(1);
    verify(&second);
    assert_eq!(second.json()["type"], "posts.update");
    assert_eq!(second.json()["previous"]["title"], "hello");
    assert_ne!(second.header("webhook-id"), first.header("webhook-id"));
    // The delete goes to the other webhook only (events = ["delete"], no secret).
    assert_eq!(s.delete(&format!("/api/v1/posts/{id}")).status, 204);
    let deleted = gone.wait_for(1, WAIT).remove(0);
    assert_eq!(deleted.json()["type"], "posts.delete");
    assert_eq!(deleted.json()["previous"]["title"], "hello again");
    assert_eq!(deleted.header("webhook-signature"), None);
    assert_eq!(
        published.received().len(),
        2,
        "nothing else went to the first hook"
    );
}

#[test]
fn retries_keep_the_webhook_id_and_410_disables_the_endpoint() {
    // Fails twice, then succeeds.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let published = Receiver::start(move |_| {
        if counted.fetch_add(1, Ordering::SeqCst) < 2 {
            (500, r#"{"error":"busy"}"#.into())
        } else {
            (200, "{}".into())
        }
    });
    // Gone until the test says otherwise.
    let back = Arc::new(AtomicUsize::new(0));
    let is_back = back.clone();
    let gone = Receiver::start(move |_| {
        if is_back.load(Ordering::SeqCst) == 0 {
            (410, "{}".into())
        } else {
            (200, "{}".into())
        }
    });
    let s = project(&published, &gone, true).serve(BIN);
    let clock = s.path("clock");
    let admin = admin_token(&s);
    let post = create(&s, "retried", "published");
    let pending = wait_deliveries(&s, &admin, "?webhook=published", |d| {
        d.first()
            .is_some_and(|d| d["status"] == "retryable" && d["attempts"] == 1)
    });
    assert_eq!(pending[0]["lastResponseCode"], 500);
    // The schedule: 5 s, then 5 min.
    std::fs::write(&clock, "6").expect("clock");
    wait_deliveries(&s, &admin, "?webhook=published", |d| {
        d[0]["attempts"] == 2 && d[0]["status"] == "retryable"
    });
    std::fs::write(&clock, "320").expect("clock");
    let done = wait_deliveries(&s, &admin, "?webhook=published", |d| {
        d[0]["status"] == "completed"
    });
    assert_eq!(done[0]["attempts"], 3);
    assert_eq!(done[0]["lastResponseCode"], 200);
    // The delivery log: every attempt with its code and timing.
    let one = s.send(|c| {
        c.get(s.url(&format!(
            "/api/v1/admin/webhooks/deliveries/{}",
            done[0]["id"].as_str().expect("id")
        )))
        .header("authorization", format!("Bearer {admin}"))
    });
    assert_eq!(one.status, 200, "{}", one.text);
    let history = one.json()["data"]["history"]
        .as_array()
        .expect("history")
        .clone();
    let codes: Vec<Value> = history.iter().map(|a| a["responseCode"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(500), json!(200)], "{history:?}");
    let outcomes: Vec<Value> = history.iter().map(|a| a["outcome"].clone()).collect();
    assert_eq!(
        outcomes,
        [json!("retryable"), json!("retryable"), json!("completed")]
    );
    assert!(
        history.iter().all(|a| a["durationMs"].is_u64()),
        "{history:?}"
    );
    let attempts = published.received();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a.header("webhook-id") == attempts[0].header("webhook-id")),
        "one webhook-id for every attempt"
    );

    // 410 disables the endpoint: the next delivery is not even attempted.
    let id = post["id"].as_str().expect("id");
    assert_eq!(s.delete(&format!("/api/v1/posts/{id}")).status, 204);
    let first_gone = wait_deliveries(&s, &admin, "?webhook=deleted", |d| {
        d.first().is_some_and(|d| d["status"] == "dead")
    });
    assert_eq!(first_gone[0]["lastResponseCode"], 410);
    let other = create(&s, "second", "draft");
    let other_id = other["id"].as_str().expect("id");
    assert_eq!(s.delete(&format!("/api/v1/posts/{other_id}")).status, 204);
    let both = wait_deliveries(&s, &admin, "?webhook=deleted&status=dead", |d| d.len() == 2);
    assert!(
        both[0]["lastError"]
            .as_str()
            .expect("error")
            .contains("disabled")
    );
    assert_eq!(
        gone.received().len(),
        1,
        "a disabled endpoint is not called"
    );

    // The receiver is back; redelivering enables the endpoint again.
    back.store(1, Ordering::SeqCst);
    let delivery = both[0]["id"].as_str().expect("id");
    let r = s.send(|c| {
        c.post(s.url(&format!(
            "/api/v1/admin/webhooks/deliveries/{delivery}/redeliver"
        )))
        .header("authorization", format!("Bearer {admin}"))
    });
    assert_eq!(r.status, 200, "{}", r.text);
    gone.wait_for(2, WAIT);
    wait_deliveries(&s, &admin, "?webhook=deleted&status=completed", |d| {
        d.len() == 1
    });
    let r = s.send(|c| {
        c.get(s.url("/api/v1/admin/webhooks/deliveries?webhook=nope"))
            .header("authorization", format!("Bearer {admin}"))
    });
    assert_eq!(r.status, 400);
}

#[test]
fn a_failed_batch_sends_nothing_and_kill_9_loses_nothing() {
    let published = Receiver::start(|_| (200, "{}".into()));
    let gone = Receiver::start(|_| (200, "{}".into()));
    let s = project(&published, &gone, true).serve(BIN);
    // The second write fails: nothing is written, nothing is sent.
    let r = s.post(
        "/api/v1/batch",
        &json!({"operations": [
            {"method": "POST", "path": "posts", "body": {"title": "in a failed batch", "status": "published"}},
            {"method": "POST", "path": "posts", "body": {"status": "published"}},
        ]}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    create(&s, "after the batch", "published");
    let first = published.wait_for(1, WAIT).remove(0);
    assert_eq!(first.json()["data"]["title"], "after the batch");

    // Acknowledged, then killed at once: delivered after the restart.
    create(&s, "acknowledged", "published");
    s.signal("KILL");
    let mut dead = s;
    dead.wait_exit();
    let s = dead.into_project().serve(BIN);
    // The delivery may have been claimed by the killed node: it is taken again once that
    // node's lease (30 s) has run out.
    std::fs::write(s.path("clock"), "31").expect("clock");
    let all = published.wait_for(2, WAIT);
    let titles: Vec<&str> = all
        .iter()
        .map(|r| r.json()["data"]["title"].as_str().unwrap_or("").to_owned())
        .map(|t| {
            if t == "acknowledged" {
                "acknowledged"
            } else {
                "other"
            }
        })
        .collect();
    assert!(titles.contains(&"acknowledged"), "{titles:?}");
    // Exactly once each: a third write shows nothing else was pending.
    create(&s, "third", "published");
    let all = published.wait_for(3, WAIT);
    let mut seen: Vec<String> = all
        .iter()
        .map(|r| r.json()["data"]["title"].as_str().unwrap_or("").to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["acknowledged", "after the batch", "third"]);
}

#[test]
fn webhooks_never_reach_loopback_unless_allowed() {
    let published = Receiver::start(|_| (200, "{}".into()));
    let gone = Receiver::start(|_| (200, "{}".into()));
    let s = project(&published, &gone, false).serve(BIN);
    let admin = admin_token(&s);
    create(&s, "hello", "published");
    let dead = wait_deliveries(&s, &admin, "?webhook=published", |d| {
        d.first().is_some_and(|d| d["status"] == "dead")
    });
    assert!(
        dead[0]["lastError"]
            .as_str()
            .expect("error")
            .contains("not a public address"),
        "{dead:?}"
    );
    assert!(published.received().is_empty());
}

#[test]
fn check_refuses_bad_webhooks_with_their_location() {
    let project = Project::new().schema(
        r#"
[resources.posts.fields]
title = { type = "string" }
secret = { type = "string", hidden = true }

[webhooks.typo]
resource = "psts"
url = "https://example.com/hook"

[webhooks.hidden]
resource = "posts"
filter = "secret = 'x'"
url = "https://example.com/hook"

[webhooks.events]
resource = "posts"
events = ["created"]
url = "ftp://example.com"
"#,
    );
    let out = project.run(BIN, &["check"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for expected in [
        "unknown resource 'psts'",
        "did you mean 'posts'",
        "filter of [webhooks.hidden]",
        "events must list",
        "schema.toml:",
    ] {
        assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
    }
}

#[test]
fn a_password_change_is_an_event_without_the_hash() {
    let hook = Receiver::start(|_| (200, "{}".into()));
    let s = Project::on(crate::backend())
        .schema(&format!(
            "[webhooks.accounts]\nresource = \"users\"\nevents = [\"update\"]\nurl = \"{}/accounts\"\n",
            hook.url()
        ))
        .settings("[jobs]\npoll = \"50ms\"\n[webhooks]\nallow_private_addresses = true\n")
        .serve(BIN);
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "lin@example.com", "password": "lin-password-1"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let r = s.send(|c| {
        c.post(s.url("/api/v1/auth/password"))
            .header("authorization", format!("Bearer {token}"))
            .json(&json!({"currentPassword": "lin-password-1", "newPassword": "lin-password-2"}))
    });
    assert_eq!(r.status, 204, "{}", r.text);
    let event = hook.wait_for(1, WAIT).remove(0).json();
    assert_eq!(event["type"], "users.update");
    assert_eq!(event["data"]["email"], "lin@example.com");
    assert_eq!(event["data"]["version"], 2);
    assert!(event["data"].get("password_hash").is_none(), "{event}");
    assert!(event["previous"].get("password_hash").is_none(), "{event}");
}
