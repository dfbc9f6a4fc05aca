//! A service that receives what ferrobase sends out (jobs, later webhooks): a plain
//! HTTP/1.1 server on an ephemeral loopback port that records every request and answers
//! with the status the test chose for it. It is the test's own service, the other end
//! of a job, not a stand-in for a protocol implementation.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body, as sent.
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

type Answer = dyn Fn(&Received) -> (u16, String) + Send + Sync;

struct Shared {
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    answer: Box<Answer>,
}

/// The receiving service; stops accepting when dropped (its thread ends with the test).
pub struct Receiver {
    shared: Arc<Shared>,
    url: String,
}

impl Receiver {
    /// Starts a receiver that answers each request with `answer(request)`: a status
    /// and a JSON body.
    pub fn start(answer: impl Fn(&Received) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("receiver address")
        );
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            answer: Box::new(answer),
        });
        let serving = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = serving.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Self { shared, url }
    }

    /// The receiver's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived (at most `deadline`); returns them.
    pub fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let end = Instant::now() + deadline;
        let mut received = self.shared.received.lock().expect("lock");
        while received.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let got = received.len();
                // Unlocked first, so the serving threads are not poisoned by the panic.
                drop(received);
                panic!("the receiver got {got} requests, expected {n}");
            }
            received = self
                .shared
                .arrived
                .wait_timeout(received, left)
                .expect("lock")
                .0;
        }
        received.clone()
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Received {
            path,
            headers,
            body,
        };
        // Recorded before it is answered: a test can act while the service "works".
        {
            let mut received = shared.received.lock().expect("lock");
            received.push(request.clone());
            shared.arrived.notify_all();
        }
        let (status, answer) = (shared.answer)(&request);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
