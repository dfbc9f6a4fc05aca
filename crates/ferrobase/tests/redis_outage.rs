//! A Redis outage never locks users out: with Redis gone, `/ready` says 503 at once,
//! sign-in works, reads and writes with the Redis read cache answer promptly, login
//! throttling goes on per node, and everything comes back without a restart when Redis
//! returns (the read cache forgetting what it held before, since writes made during the
//! outage could not invalidate it). The test runs its own Redis, never the machine's.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrobase_testkit::{Backend, Project, Server};
use serde_json::json;

/// The store these tests run on; `pg_redis_outage.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const SCHEMA: &str = r#"
[resources.items.fields]
title = { type = "string" }
[resources.items.rules]
list   = "true"
view   = "true"
create = "true"
"#;

/// Far more than any answer may take with Redis gone (the defect was ~9.5 s per call),
/// far less than a retry back-off: a bound on hanging, not a speed measurement.
const PROMPT: Duration = Duration::from_secs(2);

/// A Redis server of this test's own, on a fixed port so it can come back at the same
/// address.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut redis = Self { port, child: None };
        redis.up();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed on this machine");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::yield_now();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, the
    /// hardest outage for a client; its data is kept.
    fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .arg(if frozen { "-STOP" } else { "-CONT" })
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a request and says how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

fn titles(s: &Server) -> Vec<String> {
    let r = s.get("/api/v1/items");
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| i["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn login(s: &Server, password: &str) -> ferrobase_testkit::Reply {
    s.post(
        "/api/v1/auth/login",
        &json!({"email": "ada@example.com", "password": password}),
    )
}

#[test]
fn a_redis_outage_keeps_the_api_serving_and_recovers_without_a_restart() {
    let mut redis = OwnRedis::start();
    let s = Project::on(crate::backend())
        .schema(SCHEMA)
        .settings("[cache]\nserver = \"redis\"\nserver_ttl = \"10m\"\n")
        .env("REDIS_URL", &redis.url())
        .serve(BIN);
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "ada@example.com", "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let ready = s.get("/ready");
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json()["checks"]["redis"], "ok");
    assert_eq!(
        s.post("/api/v1/items", &json!({"title": "before"})).status,
        201
    );
    // Cached in Redis now.
    assert_eq!(titles(&s), vec!["before"]);

    redis.kill();

    let (ready, took) = timed(|| s.get("/ready"));
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.code(), "UNAVAILABLE");
    assert!(took < PROMPT, "/ready took {took:?}");
    for _ in 0..3 {
        let (r, took) = timed(|| login(&s, "correct horse battery"));
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json()["data"]["accessToken"].is_string());
        assert!(took < PROMPT, "login took {took:?}");
        let (r, took) = timed(|| s.post("/api/v1/items", &json!({"title": "during"})));
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(took < PROMPT, "a write took {took:?}");
        let (seen, took) = timed(|| titles(&s));
        assert!(took < PROMPT, "a read took {took:?}");
        assert!(seen.contains(&"during".to_owned()), "{seen:?}");
    }
    // Login throttling goes on, on this node alone.
    let mut refused = false;
    for _ in 0..12 {
        let (r, took) = timed(|| login(&s, "wrong password"));
        assert!(took < PROMPT, "a refused login took {took:?}");
        if r.status == 429 {
            refused = true;
            break;
        }
        assert_eq!(r.status, 401, "{}", r.text);
    }
    assert!(
        refused,
        "wrong passwords are still throttled while Redis is down"
    );

    redis.up();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.get("/ready");
        if r.status == 200 {
            assert_eq!(r.json()["checks"]["redis"], "ok");
            break;
        }
        assert!(Instant::now() < deadline, "/ready stayed {}", r.status);
        std::thread::yield_now();
    }
    // Redis came back empty here, but a Redis that kept its data would still hold the
    // list cached before the outage: the cache forgets what precedes the outage either
    // way, and the writes made during it are seen.
    let seen = titles(&s);
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(
        s.post("/api/v1/items", &json!({"title": "after"})).status,
        201
    );
    assert!(titles(&s).contains(&"after".to_owned()));
}

#[test]
fn a_redis_that_hangs_is_cut_short_and_the_cache_forgets_what_the_outage_hid() {
    let redis = OwnRedis::start();
    let s = Project::on(crate::backend())
        .schema(SCHEMA)
        .settings("[cache]\nserver = \"redis\"\nserver_ttl = \"10m\"\n")
        .env("REDIS_URL", &redis.url())
        .serve(BIN);
    assert_eq!(
        s.post("/api/v1/items", &json!({"title": "before"})).status,
        201
    );
    // Cached in Redis, which keeps it through the freeze.
    assert_eq!(titles(&s), vec!["before"]);

    redis.freeze(true);
    let (ready, took) = timed(|| s.get("/ready"));
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(took < PROMPT, "/ready took {took:?}");
    // This write cannot tell the shared cache to forget.
    let (r, took) = timed(|| s.post("/api/v1/items", &json!({"title": "during"})));
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(took < PROMPT, "a write took {took:?}");
    let (seen, took) = timed(|| titles(&s));
    assert!(took < PROMPT, "a read took {took:?}");
    assert_eq!(seen, vec!["before", "during"], "not served from the cache");

    redis.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get("/ready").status != 200 {
        assert!(Instant::now() < deadline, "/ready did not come back");
        std::thread::yield_now();
    }
    // Redis still holds the list cached before the outage; serving it would lose the
    // write made during it.
    assert_eq!(titles(&s), vec!["before", "during"]);
    assert_eq!(titles(&s), vec!["before", "during"]);
}
