//! Realtime clients for tests: a Server-Sent Events reader over a plain TCP connection
//! (so a test can stop reading, or cut the connection, whenever it likes) and a
//! WebSocket client (tungstenite). Both wait for messages with a deadline, never a
//! sleep: a message that does not come within it fails the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::Value;

/// How long a message may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// One Server-Sent Event (or a comment line other than a heartbeat).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    /// `id:`
    pub id: Option<String>,
    /// `event:` (`None` for record events).
    pub event: Option<String>,
    /// `data:` lines joined with newlines.
    pub data: String,
    /// A comment's text, for a comment line with text.
    pub comment: Option<String>,
}

impl SseEvent {
    /// `data` as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    /// The `seq` of a record event.
    pub fn seq(&self) -> i64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or(-1)
    }
}

/// An open event stream.
pub struct Sse {
    events: Receiver<SseEvent>,
    stream: TcpStream,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

/// A refused stream: status and body.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Refused {
    /// The error code of the body.
    pub fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body).unwrap_or(Value::Null)["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn read_head(reader: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    (status, headers)
}

/// A chunked body decoded as it arrives.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                self.done = true;
                return Ok(0);
            }
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size =
                usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n;
        Ok(n)
    }
}

impl Sse {
    /// Opens `url` (`http://host:port/path?query`) with extra request headers.
    pub fn open(url: &str, headers: &[(&str, &str)]) -> Result<Sse, Refused> {
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut stream = TcpStream::connect(host).expect("connect");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("send request");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let (status, response_headers) = read_head(&mut reader);
        let chunked = response_headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body: Box<dyn Read + Send> = if chunked {
            Box::new(Chunked {
                inner: reader,
                left: 0,
                done: false,
            })
        } else {
            Box::new(reader)
        };
        if status != 200 {
            let length = response_headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse::<u64>().ok());
            let mut text = String::new();
            match length {
                Some(n) => {
                    let _ = body.take(n).read_to_string(&mut text);
                }
                None => {
                    let _ = BufReader::new(body).read_line(&mut text);
                }
            }
            return Err(Refused { status, body: text });
        }
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut event = SseEvent::default();
            for line in BufReader::new(body).lines() {
                let Ok(line) = line else { break };
                if line.is_empty() {
                    if event != SseEvent::default() && tx.send(std::mem::take(&mut event)).is_err()
                    {
                        break;
                    }
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "" if value.is_empty() => {}
                    "" => event.comment = Some(value.to_owned()),
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "data" => {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                    }
                    _ => {}
                }
            }
        });
        Ok(Sse {
            events: rx,
            stream,
            headers: response_headers,
        })
    }

    /// The next event; panics when none comes within the deadline. `None` when the
    /// server ended the stream.
    pub fn next(&self) -> Option<SseEvent> {
        match self.events.recv_timeout(DEADLINE) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("no event within {DEADLINE:?}"),
        }
    }

    /// The next event with data (skipping comments and id-only position updates);
    /// panics when none comes in time.
    pub fn next_record(&self) -> SseEvent {
        loop {
            let e = self.next().expect("the stream ended before a record event");
            if e.comment.is_none() && !e.data.is_empty() {
                return e;
            }
        }
    }

    /// The next named (control) event, skipping comments and id-only position updates;
    /// `None` when the stream ends first.
    pub fn next_named(&self) -> Option<SseEvent> {
        loop {
            let e = self.next()?;
            if e.event.is_some() {
                return Some(e);
            }
        }
    }

    /// Cuts the connection (as a client that goes away).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A WebSocket connection speaking JSON text messages.
pub struct Ws {
    socket: tungstenite::WebSocket<TcpStream>,
}

impl Ws {
    /// Connects to `url` (`ws://host:port/path`) with extra request headers.
    pub fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("request");
        for (k, v) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let host = url
            .strip_prefix("ws://")
            .expect("ws URL")
            .split('/')
            .next()
            .expect("host");
        let stream = TcpStream::connect(host).expect("connect");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        match tungstenite::client(request, stream) {
            Ok((socket, _)) => Ok(Ws { socket }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(Refused { status, body })
            }
            Err(e) => panic!("WebSocket handshake failed: {e}"),
        }
    }

    /// Sends a JSON message.
    pub fn send(&mut self, message: &Value) {
        self.socket
            .send(tungstenite::Message::Text(message.to_string().into()))
            .expect("send");
    }

    /// Sends raw text.
    pub fn send_text(&mut self, text: &str) {
        self.socket
            .send(tungstenite::Message::Text(text.to_owned().into()))
            .expect("send");
    }

    /// The next JSON message (pings skipped); `None` once the server closed. Panics
    /// when nothing comes within the deadline.
    pub fn recv(&mut self) -> Option<Value> {
        loop {
            match self.socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).expect("JSON message"));
                }
                Ok(tungstenite::Message::Close(_)) => return None,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no message within {DEADLINE:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// The close frame's code once the server closes (messages before it skipped).
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.socket.read() {
                Ok(tungstenite::Message::Close(frame)) => return frame.map(|f| f.code.into()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}
