//! Many nodes on one PostgreSQL and one Redis: they agree on data, cursors, tokens,
//! refresh-token rotation and the login throttle; a killed node loses no acknowledged
//! write; database outages answer 503 and heal by themselves.

use std::sync::{Arc, Mutex};

use ferrobase_testkit::{Backend, DEADLINE, Project, Server};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const SCHEMA: &str = r#"
[resources.notes]
timestamps = true
[resources.notes.fields]
text = { type = "text", required = true }
n = { type = "integer" }
[resources.notes.rules]
list = "true"
view = "true"
create = "true"
"#;

/// A PostgreSQL + Redis project, or `None` (said loudly) when either is unreachable.
fn cluster() -> Option<Project> {
    let project = Project::on(Backend::Postgres).schema(SCHEMA);
    if project.database_url().is_none() {
        eprintln!("SKIPPED: needs PostgreSQL");
        return None;
    }
    let clustered = project.clustered();
    if clustered.is_none() {
        eprintln!("SKIPPED: needs Redis");
    }
    clustered
}

fn token(s: &Server, email: &str) -> (String, String) {
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": email, "password": "cluster-password"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let d = r.json()["data"].clone();
    (
        d["accessToken"].as_str().expect("access").to_owned(),
        d["refreshToken"].as_str().expect("refresh").to_owned(),
    )
}

#[test]
fn two_nodes_agree_on_data_cursors_tokens_refresh_and_throttle() {
    let Some(project) = cluster() else { return };
    let a = project.serve(BIN);
    let b = a.another(BIN);

    // A write through one node is read through the other.
    let r = a.post("/api/v1/notes", &json!({"text": "from a"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        b.get(&format!("/api/v1/notes/{id}")).json()["data"]["text"],
        "from a"
    );

    // A cursor made by one node works on the other.
    for i in 0..5 {
        assert_eq!(
            b.post("/api/v1/notes", &json!({"text": format!("n{i}"), "n": i}))
                .status,
            201
        );
    }
    let first = a.get("/api/v1/notes?limit=2&sort=-n").json();
    let cursor = first["meta"]["nextCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let second = b.send(|c| {
        c.get(b.url("/api/v1/notes")).query(&[
            ("limit", "2"),
            ("sort", "-n"),
            ("cursor", cursor.as_str()),
        ])
    });
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.json()["data"][0]["n"], 2);

    // A token issued by one node is accepted by the other.
    let (access, refresh) = token(&a, "ann@example.com");
    let me = b.send(|c| {
        c.get(b.url("/api/v1/auth/me"))
            .header("authorization", format!("Bearer {access}"))
    });
    assert_eq!(me.status, 200, "{}", me.text);

    // A refresh token rotated on one node is dead on the other.
    let r = a.post("/api/v1/auth/refresh", &json!({"refreshToken": refresh}));
    assert_eq!(r.status, 200);
    assert_eq!(
        b.post("/api/v1/auth/refresh", &json!({"refreshToken": refresh}))
            .status,
        401
    );

    // The login throttle counts attempts made on both nodes.
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = node.post(
            "/api/v1/auth/login",
            &json!({"email": "ann@example.com", "password": "wrong-password"}),
        );
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = a.post(
        "/api/v1/auth/login",
        &json!({"email": "ann@example.com", "password": "cluster-password"}),
    );
    assert_eq!(r.status, 429, "ten failures across two nodes: {}", r.text);
    let ready = b.get("/ready").json();
    assert_eq!(ready["checks"]["redis"], "ok");
}

/// Writes from a thread until stopped, returning every acknowledged id.
fn writer(
    s: &Server,
    stop_after: usize,
) -> (std::thread::JoinHandle<Vec<String>>, Arc<Mutex<usize>>) {
    let url = s.url("/api/v1/notes");
    let count = Arc::new(Mutex::new(0usize));
    let seen = count.clone();
    let handle = std::thread::spawn(move || {
        let client = ferrobase_testkit::reqwest::blocking::Client::new();
        let mut acked = Vec::new();
        loop {
            let sent = client.post(&url).json(&json!({"text": "w"})).send();
            match sent {
                Ok(r) if r.status().as_u16() == 201 => {
                    let body: Value = r.json().expect("json");
                    acked.push(body["data"]["id"].as_str().expect("id").to_owned());
                    *seen.lock().expect("lock") += 1;
                }
                // The node died under us: whatever was acknowledged is what counts.
                _ => return acked,
            }
            if acked.len() >= stop_after * 10 {
                return acked;
            }
        }
    });
    (handle, count)
}

fn kill_mid_stream(project: Project) {
    let mut a = project.serve(BIN);
    let (handle, count) = writer(&a, 100);
    // Kill once the stream is well under way (an event: 100 acknowledgements).
    let deadline = std::time::Instant::now() + DEADLINE;
    while *count.lock().expect("lock") < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "writes never got going"
        );
        std::thread::yield_now();
    }
    a.signal("KILL");
    let acked = handle.join().expect("writer");
    assert!(acked.len() >= 100);
    a.wait_exit();
    let b = a.into_project().serve(BIN);
    for id in &acked {
        let r = b.get(&format!("/api/v1/notes/{id}"));
        assert_eq!(r.status, 200, "acknowledged write {id} was lost");
    }
}

#[test]
fn kill_9_loses_no_acknowledged_write_on_postgres() {
    let Some(project) = cluster() else { return };
    kill_mid_stream(project);
}

#[test]
fn kill_9_loses_no_acknowledged_write_on_sqlite() {
    kill_mid_stream(Project::new().schema(SCHEMA));
}

fn psql(sql: &str) {
    let url = ferrobase_testkit::services::postgres().expect("postgres");
    let mut client = postgres_client(&url);
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn postgres_client(url: &str) -> ferrobase_testkit::postgres::Client {
    ferrobase_testkit::postgres::Client::connect(url, ferrobase_testkit::postgres::NoTls)
        .expect("connect")
}

/// Asks until `f` holds (each ask is a real request: waiting on the server, not a timer).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
    }
}

#[test]
fn a_database_outage_answers_503_and_heals_by_itself() {
    let Some(project) = cluster() else { return };
    let db = project
        .database_url()
        .expect("url")
        .rsplit('/')
        .next()
        .expect("name")
        .to_owned();
    let s = project.serve(BIN);
    assert_eq!(
        s.post("/api/v1/notes", &json!({"text": "before"})).status,
        201
    );

    // Cut every connection and refuse new ones. A connection the node was opening while
    // the database still allowed it can finish after the first cut: cut until none is left.
    psql(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false"));
    let url = ferrobase_testkit::services::postgres().expect("postgres");
    let mut admin = postgres_client(&url);
    eventually("no connection to the database is left", || {
        admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .map(|row| row.get::<_, i64>(0) == 0)
            .unwrap_or(false)
    });
    let r = s.post("/api/v1/notes", &json!({"text": "during"}));
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.code(), "UNAVAILABLE");
    assert_eq!(s.get("/api/v1/notes").status, 503);
    assert_eq!(s.get("/ready").status, 503);
    assert_eq!(s.get("/health").status, 200, "alive, just not ready");

    psql(&format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"));
    eventually("service resumes", || s.get("/ready").status == 200);
    assert_eq!(
        s.post("/api/v1/notes", &json!({"text": "after"})).status,
        201
    );
    assert!(!s.logs.text().contains("\"status\":500"), "never a 500");
}

#[test]
fn start_up_waits_for_a_database_that_is_not_there_yet() {
    let Some(url) = ferrobase_testkit::services::postgres() else {
        return;
    };
    let name = format!("fb_late_{}", std::process::id());
    let late = format!("{}/{name}", url.rsplit_once('/').expect("base").0);
    psql(&format!("DROP DATABASE IF EXISTS \"{name}\""));
    let mut s = Project::new()
        .schema(SCHEMA)
        .database_url_override(&late)
        .serve_listening(BIN);
    assert_eq!(s.get("/ready").status, 503);
    assert_eq!(s.get("/api/v1/notes").status, 503);
    psql(&format!("CREATE DATABASE \"{name}\""));
    s.wait_ready();
    assert_eq!(s.get("/ready").status, 200);
    assert_eq!(
        s.post("/api/v1/notes", &json!({"text": "late"})).status,
        201
    );
    s.signal("TERM");
    assert_eq!(s.wait_exit().code(), Some(0));
    psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
}

#[test]
fn two_nodes_share_rate_limits_read_cache_and_idempotency_keys() {
    let Some(project) = cluster() else { return };
    let a = project
        .settings(
            "[rate_limit]\nalgorithm = \"token_bucket\"\nroutes = [\"notes:POST=7/1h\"]\n[cache]\nserver = \"redis\"\n",
        )
        .serve(BIN);
    let b = a.another(BIN);

    // A read cached through one node is served from Redis by the other...
    let first = a.get("/api/v1/notes");
    assert_eq!(first.header("x-cache"), None);
    let second = b.get("/api/v1/notes");
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.text, first.text);
    // ...until a write on either node invalidates it for both.
    let r = b.post("/api/v1/notes", &json!({"text": "written on b"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let fresh = a.get("/api/v1/notes");
    assert_eq!(fresh.header("x-cache"), None, "invalidated across nodes");
    assert_eq!(fresh.json()["data"][0]["text"], "written on b");

    // An idempotency key used on one node is honoured by the other.
    let send = |node: &Server| {
        node.send(|c| {
            c.post(node.url("/api/v1/notes"))
                .header("idempotency-key", "cluster-key-1")
                .json(&json!({"text": "exactly once"}))
        })
    };
    let once = send(&a);
    assert_eq!(once.status, 201, "{}", once.text);
    let twice = send(&b);
    assert_eq!(twice.status, 201, "{}", twice.text);
    assert_eq!(twice.header("idempotent-replayed"), Some("true"));
    assert_eq!(twice.text, once.text);

    // One limit across both nodes: three writes so far, four more alternating, then
    // the next is refused on either node.
    for node in [&a, &b, &a, &b] {
        let r = node.post("/api/v1/notes", &json!({"text": "counted"}));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for node in [&a, &b] {
        let r = node.post("/api/v1/notes", &json!({"text": "over"}));
        assert_eq!(r.status, 429, "{}", r.text);
    }
}
