//! Structured logs: JSON lines in production (or `[log] format = "json"`), readable
//! lines in development; written off the request path by a background thread.
//!
//! Lines are appended to one shared buffer that a writer thread takes and writes every
//! [`LINGER`] (sooner when it fills): a request pays for a short lock and a copy; only the
//! first line of a batch wakes the writer. Measured with `bench/`: a channel with a
//! wake-up and a write per burst of lines (tracing-appender) cost a fifth of the
//! throughput of a health check.

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
    /// No more lines are taken (shutdown, or the writer thread is gone).
    closed: bool,
    /// The writer thread has ended.
    done: bool,
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

/// How long exiting waits for pending lines to be written (stdout may be a stalled pipe).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes what is pending when dropped; keep it alive until exit.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    drain_timeout: Duration,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut pending = self.shared.lock();
        pending.closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        let (pending, waited) = self
            .shared
            .room
            .wait_timeout_while(pending, self.drain_timeout, |p| !p.done)
            .unwrap_or_else(PoisonError::into_inner);
        let done = pending.done;
        drop(pending);
        if done {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        } else if waited.timed_out() {
            // Leave the thread blocked in its write; exiting matters more.
            eprintln!(
                "warning: log output did not drain within {:?}; the last lines may be lost",
                self.drain_timeout
            );
        }
    }
}

/// Marks the writer thread ended however it ends (a panic included), so that loggers
/// waiting for room and the exiting [`Guard`] are not left waiting for it.
struct Ended<'a>(&'a Shared);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut pending = self.0.lock();
        pending.closed = true;
        pending.done = true;
        pending.bytes = Vec::new();
        drop(pending);
        self.0.room.notify_all();
    }
}

fn write_batches(shared: &Shared, out: &mut dyn Write) {
    let _ended = Ended(shared);
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

/// Starts the writer thread.
fn batch_writer(out: Box<dyn Write + Send>, drain_timeout: Duration) -> (BatchWriter, Guard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            bytes: Vec::with_capacity(16 * 1024),
            closed: false,
            done: false,
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
        let mut pending = shared.lock();
        pending.closed = true;
        pending.done = true;
    }
    let guard = Guard {
        shared: shared.clone(),
        thread,
        drain_timeout,
    };
    (BatchWriter(shared), guard)
}

/// Installs the global subscriber; keep the guard alive until exit so lines are written.
pub fn init(settings: &LogSettings) -> Guard {
    let (writer, guard) = batch_writer(Box::new(std::io::stdout()), DRAIN_TIMEOUT);
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
        let (writer, guard) = batch_writer(Box::new(sink.clone()), DRAIN_TIMEOUT);
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
        let (writer, guard) = batch_writer(Box::new(sink.clone()), DRAIN_TIMEOUT);
        writer.make_writer().write_all(b"before\n").expect("append");
        drop(guard);
        writer.make_writer().write_all(b"after\n").expect("append");
        assert_eq!(sink.0.lock().expect("sink").as_slice(), b"before\n");
        assert!(writer.0.lock().bytes.is_empty());
    }

    /// Output that blocks until told to go on, and says when a write has begun.
    struct Stalled {
        began: std::sync::mpsc::Sender<()>,
        go_on: std::sync::mpsc::Receiver<()>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.began.send(());
            let _ = self.go_on.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A stalled stdout (a stuck pipe) does not keep the process from exiting.
    #[test]
    fn exiting_does_not_wait_forever_for_a_stalled_output() {
        let (began_tx, began) = std::sync::mpsc::channel();
        let (go_on, go_on_rx) = std::sync::mpsc::channel();
        let out = Stalled {
            began: began_tx,
            go_on: go_on_rx,
        };
        let (writer, guard) = batch_writer(Box::new(out), Duration::from_millis(50));
        writer.make_writer().write_all(b"line\n").expect("append");
        began.recv().expect("the writer thread began writing");
        drop(guard); // returns after the drain timeout although the write never ends
        assert!(
            !writer.0.lock().done,
            "the writer thread is still in its write"
        );
        go_on.send(()).expect("release the write");
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            panic!("the output broke");
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// When the writer thread dies, loggers go on (their lines are dropped) instead of
    /// waiting forever for room.
    #[test]
    fn a_dead_writer_thread_blocks_no_logger() {
        let (writer, guard) = batch_writer(Box::new(Broken), DRAIN_TIMEOUT);
        writer.make_writer().write_all(b"first\n").expect("append");
        let shared = &writer.0;
        let pending = shared.lock();
        let pending = shared
            .room
            .wait_while(pending, |p| !p.done)
            .unwrap_or_else(PoisonError::into_inner);
        drop(pending);
        let line = vec![b'x'; 64 * 1024];
        for _ in 0..(2 * MAX_PENDING / line.len()) {
            writer.make_writer().write_all(&line).expect("append");
        }
        assert!(shared.lock().bytes.is_empty());
        drop(guard);
    }
}
