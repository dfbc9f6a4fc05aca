//! Structured logs: JSON lines in production (or `[log] format = "json"`), readable
//! lines in development; written off the request path by a background thread.
//!
//! Lines are appended to one shared buffer that a writer thread takes and writes every
//! [`LINGER`] (sooner when it fills): a request pays for a short lock and a copy, never a
//! system call or a thread wake-up. Measured with `bench/`: a channel with a wake-up per
//! burst of lines (tracing-appender) cost a fifth of the throughput of a health check.

use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrobase_schema::settings::{LogFormat, LogSettings};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How long the writer thread gathers lines before writing them.
const LINGER: Duration = Duration::from_millis(20);
/// Pending bytes that make the writer thread write at once.
const WRITE_AT: usize = 256 * 1024;
/// Pending bytes beyond which loggers wait for the writer (no line is ever dropped).
const MAX_PENDING: usize = 8 * 1024 * 1024;

struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer: first line of a batch, a full buffer, or closing.
    wake: Condvar,
    /// Wakes loggers waiting for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A logger that panicked mid-append leaves at worst a torn line; keep logging.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The subscriber's writer: appends each formatted event to the shared buffer.
#[derive(Clone)]
struct BatchWriter(Arc<Shared>);

impl Write for &BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.0.lock();
        while pending.bytes.len() >= MAX_PENDING && !pending.closed {
            pending = self
                .0
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.closed {
            // Only after shutdown (or without a writer thread): nobody would write it.
            return Ok(line.len());
        }
        let first = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        let full = pending.bytes.len() >= WRITE_AT;
        drop(pending);
        if first || full {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = &'a BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Writes what is pending when dropped; keep it alive until exit.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_batches(shared: &Shared, out: &mut dyn Write) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closed {
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.bytes.len() < WRITE_AT && !pending.closed {
            // Let the batch gather; a full buffer or closing cuts the wait short.
            pending = shared
                .wake
                .wait_timeout(pending, LINGER)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let closed = pending.closed;
        std::mem::swap(&mut pending.bytes, &mut batch);
        drop(pending);
        shared.room.notify_all();
        if !batch.is_empty() {
            // Nowhere to report a failed log write; the next batch tries again.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            batch.shrink_to(WRITE_AT);
        }
        if closed && shared.lock().bytes.is_empty() {
            return;
        }
    }
}

/// Starts the writer thread (stdout).
fn batch_writer(out: Box<dyn Write + Send>) -> (BatchWriter, Guard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            bytes: Vec::with_capacity(16 * 1024),
            closed: false,
        }),
        wake: Condvar::new(),
        room: Condvar::new(),
    });
    let for_thread = shared.clone();
    let mut out = out;
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_batches(&for_thread, &mut out))
        .ok();
    if thread.is_none() {
        eprintln!("warning: cannot start the log writer thread; logs are lost");
        shared.lock().closed = true;
    }
    (BatchWriter(shared.clone()), Guard { shared, thread })
}

/// Installs the global subscriber; keep the guard alive until exit so lines are written.
pub fn init(settings: &LogSettings) -> Guard {
    let (writer, guard) = batch_writer(Box::new(std::io::stdout()));
    let level = LevelFilter::from_str(&settings.level).unwrap_or(LevelFilter::INFO);
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("ferrobase", level);
    let registry = tracing_subscriber::registry().with(filter);
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(colour);
    let installed = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt.compact()).try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: logging was already set up: {e}");
    }
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every line of every thread arrives whole and in its thread's order, including
    /// the ones still pending when the guard is dropped.
    #[test]
    fn every_line_arrives_in_order() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(Box::new(sink.clone()));
        let threads = 4;
        let per_thread = 20_000;
        std::thread::scope(|s| {
            for t in 0..threads {
                let writer = &writer;
                s.spawn(move || {
                    for i in 0..per_thread {
                        let line = format!(
                            "{{\"thread\":{t},\"n\":{i},\"pad\":\"{}\"}}\n",
                            "x".repeat(i % 300)
                        );
                        let mut w = writer.make_writer();
                        w.write_all(line.as_bytes()).expect("append");
                    }
                });
            }
        });
        drop(guard);
        let out = sink.0.lock().expect("sink").clone();
        let text = String::from_utf8(out).expect("utf-8");
        let mut next = vec![0usize; threads];
        let mut lines = 0;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a whole line");
            let t = v["thread"].as_u64().expect("thread") as usize;
            assert_eq!(
                v["n"].as_u64(),
                Some(next[t] as u64),
                "thread {t} out of order"
            );
            next[t] += 1;
            lines += 1;
        }
        assert_eq!(lines, threads * per_thread);
    }

    /// Lines written after shutdown are dropped instead of piling up unwritten.
    #[test]
    fn nothing_is_kept_after_shutdown() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(Box::new(sink.clone()));
        writer.make_writer().write_all(b"before\n").expect("append");
        drop(guard);
        writer.make_writer().write_all(b"after\n").expect("append");
        assert_eq!(sink.0.lock().expect("sink").as_slice(), b"before\n");
        assert!(writer.0.lock().bytes.is_empty());
    }
}
