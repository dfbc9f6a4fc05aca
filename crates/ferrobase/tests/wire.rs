//! What clients see below the router: refusals sent before a body was read reach
//! clients that send their whole body first, and requests hyper itself refuses get the
//! one error shape. Raw TCP, because that is where these clients live.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use ferrobase_testkit::{DEADLINE, Project, Server};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const SCHEMA: &str = r#"
[resources.tags.fields]
label = { type = "string", required = true }
[resources.tags.rules]
list = "true"
view = "true"
create = "true"

[resources.notes.fields]
text = { type = "text" }
[resources.notes.rules]
create = "true"
"#;

/// A response as read off the wire.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the one error shape with `status` and `code`.
    fn is_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        assert_eq!(
            self.body["error"]["requestId"].as_str(),
            self.header("x-request-id"),
            "{}",
            self.body
        );
    }
}

/// Reads one response with a `Content-Length` body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("name: value");
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().expect("length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("JSON body")
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn connect(s: &Server) -> TcpStream {
    let stream = TcpStream::connect(&s.addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream.set_write_timeout(Some(DEADLINE)).expect("timeout");
    stream
}

/// Sends `head` and a body of `size` bytes completely, as urllib does, then reads.
fn send_all_then_read(stream: &mut TcpStream, head: &str, size: usize) -> Answer {
    let body = vec![b' '; size];
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .expect("the whole body is accepted before the answer is read");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    read_answer(&mut reader)
}

#[test]
fn refusals_before_the_body_is_read_reach_clients_that_send_it_all() {
    let s = Project::new()
        .schema(SCHEMA)
        .settings("[rate_limit]\nroutes = [\"notes:POST=1/1h\"]\n")
        .serve(BIN);
    // Twelve times the default body limit, and more than loopback's socket buffers hold.
    let size = 12 * 1024 * 1024;
    let post = |extra: &str, content_type: &str| {
        format!(
            "POST /api/v1/tags HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n{extra}\r\n"
        )
    };
    let cases = [
        (post("", "application/json"), 413, "PAYLOAD_TOO_LARGE"),
        (post("", "text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE"),
        (
            post("Authorization: Bearer not-a-token\r\n", "application/json"),
            401,
            "UNAUTHORIZED",
        ),
    ];
    for round in 0..3 {
        for (head, status, code) in &cases {
            let mut stream = connect(&s);
            let answer = send_all_then_read(&mut stream, head, size);
            answer.is_error(*status, code);
            // The connection is still good for the next request.
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                .expect("write");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            assert_eq!(read_answer(&mut reader).status, 200, "round {round}");
        }
    }
    // A rate-limited route: the first create spends the quota, the next ones are refused
    // by the limiter before anything reads their bodies.
    let created = s.post("/api/v1/notes", &serde_json::json!({"text": "one"}));
    assert_eq!(created.status, 201, "{}", created.text);
    let post = format!(
        "POST /api/v1/notes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    for _ in 0..3 {
        let answer = send_all_then_read(&mut connect(&s), &post, size);
        answer.is_error(429, "RATE_LIMITED");
    }
}

/// Sends raw bytes and reads the answer.
fn raw(s: &Server, request: &[u8]) -> Answer {
    let mut stream = connect(s);
    stream.write_all(request).expect("write");
    read_answer(&mut BufReader::new(stream))
}

#[test]
fn requests_hyper_refuses_get_the_error_shape() {
    let s = Project::new().schema(SCHEMA).serve(BIN);
    // Bad framing: a Content-Length that is not a number, and two that disagree.
    raw(
        &s,
        b"POST /api/v1/tags HTTP/1.1\r\nHost: t\r\nContent-Length: ten\r\n\r\n",
    )
    .is_error(400, "BAD_REQUEST");
    raw(
        &s,
        b"POST /api/v1/tags HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    )
    .is_error(400, "BAD_REQUEST");
    // A request line that is not HTTP.
    raw(&s, b"HELLO WORLD\r\n\r\n").is_error(400, "BAD_REQUEST");
    // Too many headers.
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: t\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(&s, many.as_bytes());
    answer.is_error(431, "BAD_REQUEST");
    // A URL longer than the parser takes.
    let long = format!(
        "GET /api/v1/tags?q={} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(70_000)
    );
    raw(&s, long.as_bytes()).is_error(414, "BAD_REQUEST");
}
