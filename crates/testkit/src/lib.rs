//! The black-box test harness: each [`Server`] is the real `ferrobase` binary, started
//! on port 0 in a fresh project directory, spoken to over HTTP. Its JSON log lines are
//! collected so tests can assert on them. [`services`] finds the PostgreSQL and Redis
//! servers tests may use.
#![forbid(unsafe_code)]

pub mod realtime;
pub mod receiver;
pub mod services;
pub mod tools;

pub use postgres;
pub use reqwest;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server may take to start or stop before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Which database a test project runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

/// A fresh project directory with optional files.
pub struct Project {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Dropped after the server (fields drop in order): the database outlives it.
    database: Option<services::TestDatabase>,
}

impl Project {
    /// An empty project directory on SQLite (serves the built-in blog example).
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
            env: vec![
                ("FERROBASE_ENV".into(), "test".into()),
                ("FERROBASE_LOG__FORMAT".into(), "json".into()),
            ],
            database: None,
        }
    }

    /// An empty project on `backend`. For PostgreSQL each project gets a database of
    /// its own; when PostgreSQL is unreachable (and not required) the project falls back
    /// to SQLite after saying so.
    pub fn on(backend: Backend) -> Self {
        let mut project = Self::new();
        if backend == Backend::Postgres {
            match services::TestDatabase::create() {
                Some(db) => {
                    project
                        .env
                        .push(("DATABASE_URL".into(), db.url().to_owned()));
                    project.database = Some(db);
                }
                None => {
                    eprintln!("SKIPPED: PostgreSQL unreachable; this test ran on SQLite instead")
                }
            }
        }
        project
    }

    /// The PostgreSQL URL of this project, when it has one.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(services::TestDatabase::url)
    }

    /// Writes `schema.toml`.
    pub fn schema(self, text: &str) -> Self {
        self.file("schema.toml", text)
    }

    /// Writes `ferrobase.toml`.
    pub fn settings(self, text: &str) -> Self {
        self.file("ferrobase.toml", text)
    }

    /// Writes any file relative to the project.
    pub fn file(self, name: &str, text: &str) -> Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(path, text).expect("write project file");
        self
    }

    /// Sets an environment variable for commands run in this project.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The project directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(args).arg("--dir").arg(self.dir.path());
        for (var, _) in std::env::vars() {
            if var.starts_with("FERROBASE_")
                && !var.starts_with("FERROBASE_TEST_")
                && var != "FERROBASE_REQUIRE_SERVICES"
            {
                cmd.env_remove(var);
            }
        }
        cmd.env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("PORT");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Runs `ferrobase <args> --dir <project>` to completion.
    pub fn run(&self, bin: &str, args: &[&str]) -> Output {
        self.command(bin, args).output().expect("run ferrobase")
    }

    /// [`Project::run`] for commands that should end by themselves (a server that must
    /// refuse to start): a watchdog kills it at [`DEADLINE`], so a regression fails the
    /// test instead of hanging it.
    pub fn run_bounded(&self, bin: &str, args: &[&str]) -> Output {
        let child = self
            .command(bin, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferrobase");
        let (done, watchdog) = std::sync::mpsc::channel::<()>();
        let pid = child.id().to_string();
        let guard = std::thread::spawn(move || {
            if watchdog.recv_timeout(DEADLINE).is_err() {
                let _ = Command::new("kill").arg("-KILL").arg(&pid).status();
            }
        });
        let output = child.wait_with_output().expect("run ferrobase");
        let _ = done.send(());
        let _ = guard.join();
        output
    }

    /// Starts `ferrobase <args> --dir <project>` and returns at once (a `worker`, say);
    /// its output is discarded.
    pub fn start(&self, bin: &str, args: &[&str]) -> Child {
        self.command(bin, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ferrobase")
    }

    /// Runs `ferrobase <args> --dir <project>` with `input` on standard input.
    pub fn run_with_stdin(&self, bin: &str, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command(bin, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferrobase");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("run ferrobase")
    }

    /// Starts `ferrobase serve` on an ephemeral port and waits until it listens.
    pub fn serve(self, bin: &str) -> Server {
        let mut server = self.spawn(bin);
        server.wait_ready();
        server.project = Some(self);
        server
    }

    /// Starts `ferrobase serve` and returns once it listens, ready or not (for tests of
    /// start-up before the database is up).
    pub fn serve_listening(self, bin: &str) -> Server {
        let mut server = self.spawn(bin);
        server.project = Some(self);
        server
    }

    /// Shares state across nodes like a real cluster: the test Redis (with a key prefix
    /// of this project's own) and a fixed secret. `None` when Redis is unreachable.
    pub fn clustered(mut self) -> Option<Self> {
        let url = services::redis()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.env.push(("REDIS_URL".into(), url));
        self.env
            .push(("FERROBASE_REDIS__PREFIX".into(), format!("test-{id}:")));
        self.env
            .push(("FERROBASE_SECRET".into(), format!("cluster-secret-{id}")));
        Some(self)
    }

    /// Replaces the database URL (for tests that point at a database not there yet).
    pub fn database_url_override(mut self, url: &str) -> Self {
        self.env.push(("DATABASE_URL".into(), url.to_owned()));
        self
    }

    fn spawn(&self, bin: &str) -> Server {
        let mut cmd = self.command(bin, &["serve", "--addr", "127.0.0.1:0"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ferrobase serve");
        let logs = Arc::new(Logs::default());
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.push(line);
                }
                logs.close();
            });
        }
        let listening = logs.wait_for(DEADLINE, |l| {
            l.get("message").and_then(Value::as_str) == Some("listening")
        });
        let Some(line) = listening else {
            let _ = child.kill();
            panic!("ferrobase did not start; output:\n{}", logs.text());
        };
        let addr = line["addr"]
            .as_str()
            .expect("addr in listening line")
            .to_owned();
        Server {
            project: None,
            on_postgres: self.database.is_some(),
            child,
            base: format!("http://{addr}"),
            addr,
            logs,
            client: reqwest::blocking::Client::builder()
                .timeout(DEADLINE)
                .build()
                .expect("http client"),
        }
    }
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

/// Lines a server wrote, shared with the threads reading its output.
#[derive(Default)]
pub struct Logs {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Logs {
    fn push(&self, line: String) {
        let mut guard = self.lines.lock().expect("logs lock");
        guard.0.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        let mut guard = self.lines.lock().expect("logs lock");
        guard.1 = true;
        self.changed.notify_all();
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("logs lock").0.clone()
    }

    /// All output as one text.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Lines that are JSON objects.
    pub fn json(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (on output, not on a timer) until a JSON line matches, or the deadline
    /// passes, or the output ends.
    pub fn wait_for(&self, deadline: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let end = Instant::now() + deadline;
        let mut guard = self.lines.lock().expect("logs lock");
        loop {
            if let Some(v) = guard
                .0
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v))
            {
                return Some(v);
            }
            let now = Instant::now();
            if guard.1 || now >= end {
                return None;
            }
            guard = self
                .changed
                .wait_timeout(guard, end - now)
                .expect("logs lock")
                .0;
        }
    }
}

/// A running `ferrobase serve`; killed when dropped.
pub struct Server {
    project: Option<Project>,
    on_postgres: bool,
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    base: String,
    /// Its output.
    pub logs: Arc<Logs>,
    client: reqwest::blocking::Client,
}

/// A response, read completely.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub text: String,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Server {
    /// Waits until the server says it can serve (its store is ready).
    pub fn wait_ready(&mut self) {
        let ready = self.logs.wait_for(DEADLINE, |l| {
            l.get("message").and_then(Value::as_str) == Some("ready to serve")
        });
        if ready.is_none() {
            let _ = self.child.kill();
            panic!(
                "ferrobase never became ready; output:\n{}",
                self.logs.text()
            );
        }
        if self.on_postgres {
            assert!(
                self.logs.text().contains("PostgreSQL is ready"),
                "the server was meant to run on PostgreSQL:\n{}",
                self.logs.text()
            );
        }
    }

    /// A second node of the same project (same directory, settings and database).
    pub fn another(&self, bin: &str) -> Server {
        let mut node = self.project().spawn(bin);
        node.wait_ready();
        node
    }

    /// Absolute URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The project it serves (to run other commands on it while it serves).
    pub fn project(&self) -> &Project {
        self.project
            .as_ref()
            .expect("project present until into_project")
    }

    /// The project directory.
    pub fn dir(&self) -> &Path {
        self.project().path()
    }

    /// Stops the server (if still running) and hands back its project, data intact, so
    /// it can be served again.
    pub fn into_project(mut self) -> Project {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.project.take().expect("project present")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a request built by `f` and reads the whole response.
    pub fn send(
        &self,
        f: impl FnOnce(&reqwest::blocking::Client) -> reqwest::blocking::RequestBuilder,
    ) -> Reply {
        let res = f(&self.client).send().expect("request");
        Reply {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            text: res.text().expect("body"),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.send(|c| c.get(self.url(path)))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Reply {
        self.send(|c| c.delete(self.url(path)))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(|c| c.post(self.url(path)).json(body))
    }

    /// `PATCH path` with a JSON body (`application/merge-patch+json`).
    pub fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(|c| {
            c.patch(self.url(path))
                .header("content-type", "application/merge-patch+json")
                .body(body.to_string())
        })
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the server process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its status; a watchdog kills it if it
    /// is still running at the deadline (the test then fails on the status).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let (done, watchdog) = std::sync::mpsc::channel::<()>();
        let pid = self.child.id().to_string();
        let guard = std::thread::spawn(move || {
            if watchdog.recv_timeout(DEADLINE).is_err() {
                let _ = Command::new("kill").arg("-KILL").arg(&pid).status();
            }
        });
        let status = self.child.wait().expect("wait for ferrobase");
        let _ = done.send(());
        let _ = guard.join();
        status
    }

    /// Path of a file in the project.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
