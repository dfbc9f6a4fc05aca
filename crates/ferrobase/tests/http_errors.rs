//! The one error shape for every failure, request ids, security headers, limits.

use std::io::{Read, Write};

use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::json;

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

fn server() -> Server {
    Project::on(crate::backend())
        .schema(SCHEMA)
        .settings("[server]\nbody_limit = \"2KiB\"\n")
        .serve(BIN)
}

/// Asserts the SPEC §5 error shape and returns the body.
fn assert_error(r: &Reply, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    let error = body["error"].as_object().expect("error object");
    assert_eq!(error["code"], code, "{}", r.text);
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    let id = r.header("x-request-id").expect("x-request-id header");
    assert_eq!(error["requestId"], id, "request id in body and header");
    assert_eq!(body.as_object().expect("object").len(), 1, "only `error`");
    body
}

#[test]
fn unknown_routes_resources_and_methods() {
    let s = server();
    assert_error(&s.get("/nope"), 404, "NOT_FOUND");
    assert_error(&s.get("/api/v1/nope"), 404, "NOT_FOUND");
    assert_error(
        &s.get("/api/v1/nope/0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"),
        404,
        "NOT_FOUND",
    );
    assert_error(&s.get("/api/v1/items/a/b"), 404, "NOT_FOUND");
    let r = s.send(|c| c.put(s.url("/api/v1/items")));
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    assert!(
        r.header("allow").is_some_and(|a| a.contains("POST")),
        "Allow header kept"
    );
    let r = s.send(|c| {
        c.post(s.url("/api/v1/items/0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"))
            .json(&json!({}))
    });
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    assert_error(
        &s.send(|c| c.delete(s.url("/health"))),
        405,
        "METHOD_NOT_ALLOWED",
    );
}

#[test]
fn bodies_media_types_size_and_depth() {
    let s = server();
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("content-type", "text/plain")
            .body("{}")
    });
    assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
    let r = s.send(|c| c.post(s.url("/api/v1/tags")).body("{\"label\":\"x\"}"));
    assert_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("content-type", "application/json")
            .body("{\"label\": ")
    });
    let body = assert_error(&r, 400, "BAD_REQUEST");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .starts_with("malformed JSON")
    );
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("content-type", "application/json")
            .body("[1]")
    });
    assert_error(&r, 400, "BAD_REQUEST");
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("content-type", "application/json")
            .body("")
    });
    assert_error(&r, 400, "BAD_REQUEST");
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("content-type", "application/json")
            .body(vec![0xff, 0xfe, b'{'])
    });
    assert_error(&r, 400, "BAD_REQUEST");

    let deep = format!("{{\"meta\":{}1{}}}", "[".repeat(40), "]".repeat(40));
    let r = s.send(|c| {
        c.post(s.url("/api/v1/items"))
            .header("content-type", "application/json")
            .body(deep)
    });
    let body = assert_error(&r, 400, "BAD_REQUEST");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("deeper than 32")
    );

    // Over the 2 KiB limit, with and without a Content-Length.
    let big = json!({"label": "x".repeat(4096)}).to_string();
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("content-type", "application/json")
            .body(big.clone())
    });
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
    // Chunked, so no Content-Length warns the server: the limit holds while reading.
    // Raw TCP, because the server may answer (and close) before the upload ends.
    let mut stream = std::net::TcpStream::connect(&s.addr).expect("connect");
    stream
        .set_read_timeout(Some(ferrobase_testkit::DEADLINE))
        .expect("timeout");
    let head = "POST /api/v1/tags HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let _ = stream.write_all(head.as_bytes());
    for chunk in big.as_bytes().chunks(512) {
        let _ = write!(stream, "{:x}\r\n", chunk.len());
        let _ = stream.write_all(chunk);
        let _ = stream.write_all(b"\r\n");
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("PAYLOAD_TOO_LARGE"), "{response}");
    // Within the limit it works.
    let r = s.post("/api/v1/tags", &json!({"label": "x".repeat(1000)}));
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn request_ids_are_accepted_or_generated_and_echoed() {
    let s = server();
    let r = s.send(|c| {
        c.get(s.url("/nope"))
            .header("x-request-id", "client-abc.123")
    });
    assert_eq!(r.header("x-request-id"), Some("client-abc.123"));
    assert_eq!(r.json()["error"]["requestId"], "client-abc.123");
    let r = s.send(|c| {
        c.get(s.url("/health"))
            .header("x-request-id", "bad id with spaces <script>")
    });
    let id = r.header("x-request-id").expect("generated");
    assert_ne!(id, "bad id with spaces <script>");
    assert_eq!(id.len(), 36, "a generated UUID");
    let a = s.get("/health");
    let b = s.get("/health");
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
}

#[test]
fn security_headers_on_every_response() {
    let s = server();
    for r in [
        s.get("/health"),
        s.get("/nope"),
        s.post("/api/v1/tags", &json!({"label": "h"})),
    ] {
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert!(
            r.header("content-security-policy")
                .is_some_and(|v| v.contains("default-src 'none'"))
        );
        assert!(
            r.header("strict-transport-security").is_none(),
            "HSTS only when configured"
        );
    }
    let s = Project::on(crate::backend())
        .settings("[server]\nhsts = true\n")
        .serve(BIN);
    assert!(
        s.get("/health")
            .header("strict-transport-security")
            .is_some_and(|v| v.contains("max-age="))
    );
}

#[test]
fn health_and_ready() {
    let s = server();
    let r = s.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let r = s.get("/ready");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["checks"]["database"], "ok");
}

#[test]
fn the_empty_directory_serves_the_blog_example() {
    let s = Project::new().serve(BIN);
    assert!(s.path("data/ferrobase.db").exists(), "database created");
    assert!(s.path("data/.secret").exists(), "development secret kept");
    assert_eq!(s.get("/ready").status, 200);
    // Anyone may list published posts; users are admins-only.
    assert_eq!(s.get("/api/v1/posts").status, 200);
    assert_eq!(s.get("/api/v1/users").status, 401);
    assert_eq!(s.get("/api/v1/comments").status, 404);
    let logs = s.logs.text();
    assert!(logs.contains("built-in blog example"), "{logs}");
}

/// Input that used to pass or to blow up the answer: URLs with control characters,
/// repeated JSON member names, long lists of bad names.
#[test]
fn sneaky_urls_repeated_members_and_long_bad_lists() {
    let s = server();
    for homepage in [
        "https://example.com/a\r\nSet-Cookie: x=y",
        "https://example.com/\ta",
        "https://exa\nmple.com/",
    ] {
        let r = s.post(
            "/api/v1/items",
            &json!({"title": "Sneaky", "homepage": homepage}),
        );
        let body = assert_error(&r, 400, "VALIDATION_FAILED");
        assert!(
            body["error"]["details"]["fields"]["homepage"].is_array(),
            "{body}"
        );
    }
    let r = s.post(
        "/api/v1/items",
        &json!({"title": "Fine", "homepage": "https://example.com/a?b=c"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    // A repeated member name: refused, and nothing is stored.
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tags"))
            .header("content-type", "application/json")
            .body(r#"{"label": "first", "label": "second"}"#)
    });
    let body = assert_error(&r, 400, "BAD_REQUEST");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("'label' appears more than once"),
        "{body}"
    );
    let listed = s
        .get("/api/v1/tags?filter=label%20%3D%20%27second%27")
        .json();
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(0));

    // A long list of bad names: the answer stays small.
    let names: Vec<String> = (0..4000).map(|i| format!("bad{i}")).collect();
    let r = s.get(&format!("/api/v1/items?fields={}", names.join(",")));
    assert_error(&r, 400, "VALIDATION_FAILED");
    assert!(r.text.len() < 4096, "{} bytes", r.text.len());
    let long = "x".repeat(5000);
    let r = s.get(&format!("/api/v1/items?sort={long}"));
    assert_error(&r, 400, "VALIDATION_FAILED");
    assert!(r.text.len() < 4096, "{} bytes", r.text.len());
}
