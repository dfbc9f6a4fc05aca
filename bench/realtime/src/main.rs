//! Load generator of `bench/realtime`: opens N Server-Sent Events subscribers on one
//! server (ferrobase or PocketBase), half for user A (filter: drafts, which only A may
//! see) and half for user B (filter: drafts or published; the view rule hides A's drafts
//! from B), then writes posts as user A at a steady rate, alternating draft and
//! published, so each subscriber is owed about half of the events. It records when each
//! write was acknowledged and when each subscriber received it, and prints one JSON
//! object: events delivered per second, delay from acknowledgement to receipt (p50,
//! p99), lost, repeated and leaked events, the server's CPU and peak RSS, its RSS per
//! idle connection, and this process's own CPU (one thread: it must stay well below one
//! core for the numbers to be the server's).
//!
//! Usage: realtime-load KIND BASE TOKEN_A TOKEN_B AUTHOR_A SUBSCRIBERS RATE SECONDS PID
//! (KIND is `ferrobase` or `pocketbase`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ferrobase,
    PocketBase,
}

struct Config {
    kind: Kind,
    host: String,
    token_a: String,
    token_b: String,
    author: String,
    subscribers: usize,
    rate: f64,
    seconds: f64,
    pid: u32,
}

/// What one subscriber received: `(write number, when)`.
#[derive(Default)]
struct Received {
    got: Vec<(u32, Instant)>,
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Ticks (user + system) of a process, from /proc.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// A `/proc/PID/status` value in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads a response head; returns the status and the headers (lower-case names).
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).await.expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
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

/// One request on a keep-alive connection; the body of the answer.
async fn request(
    conn: &mut BufReader<TcpStream>,
    host: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut()
        .write_all(req.as_bytes())
        .await
        .expect("send");
    let (status, headers) = read_head(conn).await;
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut buf = vec![0; length];
    conn.read_exact(&mut buf).await.expect("body");
    (status, String::from_utf8_lossy(&buf).into_owned())
}

/// The write number in an event's data (`"title":"rt-<n>"`).
fn write_number(data: &str) -> Option<u32> {
    let at = data.find("\"title\":\"rt-")? + 12;
    let rest = &data[at..];
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

/// Opens one subscriber and returns once it is live; events are read in a task.
async fn subscribe(
    cfg: Arc<Config>,
    is_a: bool,
    received: Arc<Mutex<Received>>,
) -> Result<(), String> {
    let token = if is_a { &cfg.token_a } else { &cfg.token_b };
    let stream = TcpStream::connect(&cfg.host)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    match cfg.kind {
        Kind::Ferrobase => {
            let filter = if is_a {
                "status = 'draft'"
            } else {
                "status = 'draft' || status = 'published'"
            };
            let req = format!(
                "GET /api/v1/posts/events?filter={} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n",
                urlencode(filter),
                cfg.host
            );
            reader
                .get_mut()
                .write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let (status, _) = read_head(&mut reader).await;
            if status != 200 {
                return Err(format!("subscribe: {status}"));
            }
        }
        Kind::PocketBase => {
            let req = format!(
                "GET /api/realtime HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                cfg.host
            );
            reader
                .get_mut()
                .write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let (status, _) = read_head(&mut reader).await;
            if status != 200 {
                return Err(format!("connect: {status}"));
            }
            // PB_CONNECT carries the client id.
            let mut line = String::new();
            let client_id = loop {
                line.clear();
                if reader.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                    return Err("closed before PB_CONNECT".into());
                }
                if let Some(at) = line.find("\"clientId\":\"") {
                    let rest = &line[at + 12..];
                    break rest[..rest.find('"').unwrap_or(0)].to_owned();
                }
            };
            let filter = if is_a {
                "status = \"draft\""
            } else {
                "status = \"draft\" || status = \"published\""
            };
            let options = serde_json::json!({"query": {"filter": filter}}).to_string();
            let body = serde_json::json!({
                "clientId": client_id,
                "subscriptions": [format!("posts/*?options={}", urlencode(&options))],
            })
            .to_string();
            let mut control = BufReader::new(
                TcpStream::connect(&cfg.host)
                    .await
                    .map_err(|e| e.to_string())?,
            );
            let (status, text) =
                request(&mut control, &cfg.host, "POST", "/api/realtime", token, &body).await;
            if status != 204 {
                return Err(format!("subscribe: {status} {text}"));
            }
        }
    }
    tokio::spawn(async move {
        // Chunked framing lines (hex sizes) and SSE lines both arrive; only `data:`
        // lines matter.
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(data) = line.strip_prefix("data:")
                && let Some(n) = write_number(data)
            {
                let now = Instant::now();
                received.lock().expect("lock").got.push((n, now));
            }
        }
    });
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 10 {
        eprintln!(
            "usage: realtime-load KIND BASE TOKEN_A TOKEN_B AUTHOR_A SUBSCRIBERS RATE SECONDS PID"
        );
        std::process::exit(2);
    }
    let cfg = Arc::new(Config {
        kind: if args[1] == "pocketbase" {
            Kind::PocketBase
        } else {
            Kind::Ferrobase
        },
        host: args[2].trim_start_matches("http://").to_owned(),
        token_a: args[3].clone(),
        token_b: args[4].clone(),
        author: args[5].clone(),
        subscribers: args[6].parse().expect("subscribers"),
        rate: args[7].parse().expect("rate"),
        seconds: args[8].parse().expect("seconds"),
        pid: args[9].parse().expect("pid"),
    });
    let pid = cfg.pid.to_string();
    let rss_before = status_kib(cfg.pid, "VmRSS:");

    // Subscribers, 50 at a time; the server's RSS is read when half are open and when
    // all are: the second half's growth is what one more idle connection costs (the
    // first half's also holds what the allocator kept from serving the handshakes).
    let mut subs: Vec<(bool, Arc<Mutex<Received>>)> = Vec::new();
    let mut rss_half = 0;
    let indexes: Vec<usize> = (0..cfg.subscribers).collect();
    for chunk in indexes.chunks(50) {
        let mut opening = Vec::new();
        for &i in chunk {
            let received = Arc::new(Mutex::new(Received::default()));
            let is_a = i % 2 == 0;
            subs.push((is_a, received.clone()));
            opening.push(tokio::spawn(subscribe(cfg.clone(), is_a, received)));
        }
        for task in opening {
            if let Err(e) = task.await.expect("task") {
                eprintln!("subscriber failed: {e}");
                std::process::exit(1);
            }
        }
        if subs.len() == cfg.subscribers / 2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss_half = status_kib(cfg.pid, "VmRSS:");
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = status_kib(cfg.pid, "VmRSS:");

    // Writes as user A at a steady rate, on a few keep-alive connections.
    let total = (cfg.rate * cfg.seconds).round() as u32;
    let acked: Arc<Mutex<HashMap<u32, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    let server_cpu_0 = cpu_ticks(&pid);
    let own_cpu_0 = cpu_ticks("self");
    let start = Instant::now();
    let writers = 8u32;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let cfg = cfg.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn =
                BufReader::new(TcpStream::connect(&cfg.host).await.expect("writer connects"));
            let mut n = w;
            while n < total {
                let due = start + Duration::from_secs_f64(f64::from(n) / cfg.rate);
                tokio::time::sleep_until(due.into()).await;
                let status = if n % 2 == 1 { "draft" } else { "published" };
                let body = serde_json::json!({
                    "title": format!("rt-{n}"),
                    "slug": format!("rt-{n}-{}", start.elapsed().as_nanos()),
                    "content": "realtime benchmark",
                    "status": status,
                    "author": cfg.author,
                })
                .to_string();
                let path = match cfg.kind {
                    Kind::Ferrobase => "/api/v1/posts",
                    Kind::PocketBase => "/api/collections/posts/records",
                };
                let (code, text) =
                    request(&mut conn, &cfg.host, "POST", path, &cfg.token_a, &body).await;
                if !(200..300).contains(&code) {
                    eprintln!("write {n}: {code} {text}");
                    std::process::exit(1);
                }
                acked.lock().expect("lock").insert(n, Instant::now());
                n += writers;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let writes_done = Instant::now();
    // Owed: A-subscribers the drafts (odd), B-subscribers the published (even).
    let owed_a = total / 2;
    let owed_b = total - owed_a;
    let expected: usize = subs
        .iter()
        .map(|(a, _)| if *a { owed_a } else { owed_b } as usize)
        .sum();
    // Until everything owed arrived, or nothing more arrives for 5 s.
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let count: usize = subs.iter().map(|(_, r)| r.lock().expect("lock").got.len()).sum();
        if count >= expected {
            break;
        }
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_cpu = cpu_ticks(&pid) - server_cpu_0;
    let own_cpu = cpu_ticks("self") - own_cpu_0;
    let acked = acked.lock().expect("lock");
    let mut delays = Vec::new();
    let (mut delivered, mut repeated, mut leaked, mut lost) = (0usize, 0usize, 0usize, 0usize);
    let mut last_receipt = writes_done;
    for (is_a, r) in &subs {
        let r = r.lock().expect("lock");
        let mut seen = vec![false; total as usize];
        for &(n, at) in &r.got {
            let owed = if *is_a { n % 2 == 1 } else { n % 2 == 0 };
            if !owed || n >= total {
                leaked += 1;
                continue;
            }
            if seen[n as usize] {
                repeated += 1;
                continue;
            }
            seen[n as usize] = true;
            delivered += 1;
            last_receipt = last_receipt.max(at);
            if let Some(ack) = acked.get(&n) {
                // An event may arrive before the writer has read its answer: 0 then.
                delays.push(at.saturating_duration_since(*ack).as_secs_f64() * 1000.0);
            }
        }
        lost += (if *is_a { owed_a } else { owed_b }) as usize
            - seen.iter().filter(|s| **s).count();
    }
    delays.sort_by(f64::total_cmp);
    let window = last_receipt.duration_since(start).as_secs_f64();
    let ticks = 100.0; // USER_HZ
    let out = serde_json::json!({
        "subscribers": cfg.subscribers,
        "writes": total,
        "write_rate": cfg.rate,
        "achieved_write_rate": (f64::from(total) / writes_done.duration_since(start).as_secs_f64() * 10.0).round() / 10.0,
        "expected": expected,
        "delivered": delivered,
        "delivered_per_s": (delivered as f64 / window).round(),
        "lost": lost,
        "repeated": repeated,
        "leaked": leaked,
        "delay_ms_p50": (percentile(&delays, 0.50) * 100.0).round() / 100.0,
        "delay_ms_p99": (percentile(&delays, 0.99) * 100.0).round() / 100.0,
        "server_cpu_pct": (server_cpu as f64 / ticks / window * 100.0).round(),
        "loadgen_cpu_pct": (own_cpu as f64 / ticks / window * 100.0).round(),
        "server_peak_rss_mib": (status_kib(cfg.pid, "VmHWM:") as f64 / 1024.0 * 10.0).round() / 10.0,
        "idle_bytes_per_connection": ((rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / cfg.subscribers as f64).round(),
        "idle_bytes_per_added_connection": ((rss_idle.saturating_sub(rss_half)) as f64 * 1024.0 / (cfg.subscribers - cfg.subscribers / 2) as f64).round(),
    });
    println!("{out}");
}
