//! Operations: one redacted log line per request, graceful shutdown with a request in
//! flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use ferrobase_testkit::{Backend, DEADLINE, Project};
use serde_json::{Value, json};

/// The store these tests run on; `pg_*.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
const SCHEMA: &str = include_str!("fixtures/everything.schema.toml");

fn request_line(logs: &ferrobase_testkit::Logs, id: &str) -> Value {
    logs.wait_for(DEADLINE, |l| {
        l["target"] == "ferrobase::request" && l["request_id"] == id
    })
    .unwrap_or_else(|| panic!("no log line for {id}:\n{}", logs.text()))
}

#[test]
fn one_log_line_per_request_with_secrets_redacted() {
    let s = Project::on(crate::backend())
        .schema(SCHEMA)
        .settings("[log]\nlevel = \"debug\"\n")
        .serve(BIN);
    let r = s.send(|c| {
        c.get(s.url("/health?limit=5&access_token=TOKEN123&password=PASS456"))
            .header("authorization", "Bearer JWT789")
            .header("cookie", "sid=COOKIE000")
            .header("x-api-key", "KEY111")
            .header("x-request-id", "log-test-1")
    });
    assert_eq!(r.status, 200);
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("x-request-id", "log-test-2")
            .json(&json!({"label": "x", "password": "BODYPW"}))
    });
    assert_eq!(r.status, 400, "password is not a field of tags");

    let line = request_line(&s.logs, "log-test-1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/health");
    assert_eq!(line["path"], "/health");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().is_some());
    assert_eq!(line["level"], "INFO");
    assert_eq!(
        line["query"],
        "limit=5&access_token=[redacted]&password=[redacted]"
    );
    let headers = line["headers"].as_str().expect("headers at debug level");
    assert!(headers.contains("authorization: [redacted]"), "{headers}");
    assert!(headers.contains("cookie: [redacted]"), "{headers}");
    let second = request_line(&s.logs, "log-test-2");
    assert_eq!(second["status"], 400);

    let text = s.logs.text();
    for secret in [
        "TOKEN123",
        "PASS456",
        "JWT789",
        "COOKIE000",
        "KEY111",
        "BODYPW",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the logs:\n{text}"
        );
    }
    for id in ["log-test-1", "log-test-2"] {
        let lines = s
            .logs
            .json()
            .into_iter()
            .filter(|l| l["target"] == "ferrobase::request" && l["request_id"] == id)
            .count();
        assert_eq!(lines, 1, "exactly one line for {id}");
    }
}

/// Reads one HTTP/1.1 response head (and `Content-Length` body) from a stream.
fn read_response(reader: &mut BufReader<TcpStream>) -> (String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "connection closed"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    let mut s = Project::on(crate::backend()).schema(SCHEMA).serve(BIN);
    let stream = TcpStream::connect(&s.addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);

    // The connection is established and served.
    writer
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let (head, _) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Start a create whose body the server is waiting for: `100 Continue` proves the
    // handler is running.
    let body = json!({"label": "in-flight"}).to_string();
    write!(
        writer,
        "POST /api/v1/tags HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .expect("write head");
    let (head, _) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");

    s.signal("TERM");
    assert!(
        s.logs
            .wait_for(DEADLINE, |l| l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutdown signal received")))
            .is_some(),
        "{}",
        s.logs.text()
    );
    // Shutting down: readiness would now be 503; the request in flight still finishes.
    writer.write_all(body.as_bytes()).expect("write body");
    let (head, reply) = read_response(&mut reader);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}{reply}");
    let created: Value = serde_json::from_str(&reply).expect("json");
    let id = created["data"]["id"].as_str().expect("id").to_owned();

    let status = s.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", s.logs.text());
    // The output pipes may still be draining when the process has exited.
    assert!(
        s.logs
            .wait_for(DEADLINE, |l| l["message"] == "stopped")
            .is_some(),
        "{}",
        s.logs.text()
    );

    // The acknowledged write is there after a restart.
    let s = s.into_project().serve(BIN);
    let r = s.get(&format!("/api/v1/tags/{id}"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"]["label"], "in-flight");
}

#[test]
fn sigint_on_an_idle_server_exits_0() {
    let mut s = Project::on(crate::backend()).serve(BIN);
    assert_eq!(s.get("/ready").status, 200);
    s.signal("INT");
    assert_eq!(s.wait_exit().code(), Some(0));
}
