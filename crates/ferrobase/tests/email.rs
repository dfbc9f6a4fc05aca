//! Email through the real binary (SPEC §6 and §8, "Email"), against a real SMTP server
//! the harness runs (Python's `aiosmtpd`, pinned, installed into `target/test-tools`):
//! verification and password reset end to end, each link working once and only once;
//! a server that stalls makes the send time out and the job retry; without `smtp_url`
//! mail goes to `data/outbox/`. `pg_email.rs` runs the same bodies on PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrobase_testkit::{Backend, Project, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_email.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
const WAIT: Duration = Duration::from_secs(30);

/// A running aiosmtpd writing every message into a maildir.
struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
    python: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    fn start() -> Option<Self> {
        let python = ferrobase_testkit::tools::python(BIN, "aiosmtpd", &["aiosmtpd==1.4.6"])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let maildir = tempfile::tempdir().expect("maildir");
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.path().join(sub)).expect("maildir");
        }
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd");
        // Ready when it accepts connections.
        let end = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            child,
            port,
            maildir,
            python,
        })
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn messages(&self) -> Vec<PathBuf> {
        let new = self.maildir.path().join("new");
        let mut files: Vec<PathBuf> = std::fs::read_dir(new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Waits for a message whose text links to `page` and returns its `(to, text part)`
    /// (maildir names do not sort in arrival order, so messages are told by content).
    fn wait_message(&self, page: &str) -> (String, String) {
        let end = Instant::now() + WAIT;
        loop {
            for path in self.messages() {
                let (to, text) = read_mail(&self.python, &path);
                if text.contains(&format!("/{page}?token=")) {
                    return (to, text);
                }
            }
            assert!(Instant::now() < end, "no message linking to {page} arrived");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `(To, the text/plain part decoded)` of a mail file, read by Python's `email` package.
fn read_mail(python: &Path, path: &Path) -> (String, String) {
    let script = r#"
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
print(m['To'])
print(m.get_body(preferencelist=('plain',)).get_content())
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (to, body) = text.split_once('\n').unwrap_or((&text, ""));
    (to.trim().to_owned(), body.to_owned())
}

/// The token of the first link to `page` in a mail.
fn token(text: &str, page: &str) -> String {
    let start = text
        .find(&format!("https://app.example.com/{page}?token="))
        .unwrap_or_else(|| panic!("no {page} link in:\n{text}"));
    text[start..]
        .split_once("token=")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

fn project(smtp: Option<&Smtp>, extra: &str) -> Project {
    let mut settings = format!(
        "[jobs]\npoll = \"50ms\"\n[email]\nlink_base = \"https://app.example.com\"\ntimeout = \"1s\"\nfrom = \"Example <hello@example.com>\"\n{extra}"
    );
    if let Some(smtp) = smtp {
        settings = settings.replace(
            "[email]\n",
            &format!("[email]\nsmtp_url = \"smtp://127.0.0.1:{}\"\n", smtp.port),
        );
    }
    let project = Project::on(crate::backend())
        .settings(&settings)
        .env(
            "FERROBASE_SECRET",
            "email-test-secret-of-enough-length-0123456789",
        )
        .file("clock", "0");
    let clock = project.path().join("clock");
    project.env("FERROBASE_TEST_CLOCK", clock.to_str().expect("path"))
}

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = s.post(path, &body);
    let json = serde_json::from_str(&r.text).unwrap_or(Value::Null);
    (r.status, json)
}

#[test]
fn verification_and_reset_work_end_to_end_once() {
    let Some(smtp) = Smtp::start() else {
        return;
    };
    let s = project(Some(&smtp), "[auth]\nrequire_verified_email = true\n").serve(BIN);
    let (status, registered) = post(
        &s,
        "/api/v1/auth/register",
        json!({"email": "Ada@Example.com", "password": "first-password-1"}),
    );
    assert_eq!(status, 201, "{registered}");
    let login = |password: &str| {
        post(
            &s,
            "/api/v1/auth/login",
            json!({"email": "ada@example.com", "password": password}),
        )
    };
    let (status, refused) = login("first-password-1");
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "EMAIL_NOT_VERIFIED");

    // Unknown and known addresses get the same answer.
    let (status, unknown) = post(
        &s,
        "/api/v1/auth/verify-email/request",
        json!({"email": "nobody@example.com"}),
    );
    assert_eq!(status, 202);
    let (status, known) = post(
        &s,
        "/api/v1/auth/verify-email/request",
        json!({"email": "ada@example.com"}),
    );
    assert_eq!(status, 202);
    assert_eq!(unknown, known);
    let (to, text) = smtp.wait_message("verify-email");
    assert!(to.contains("ada@example.com"), "{to}");
    let verify = token(&text, "verify-email");
    let (status, body) = post(
        &s,
        "/api/v1/auth/verify-email/confirm",
        json!({"token": verify}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, again) = post(
        &s,
        "/api/v1/auth/verify-email/confirm",
        json!({"token": verify}),
    );
    assert_eq!(status, 400, "a link works once: {again}");
    assert_eq!(again["error"]["code"], "INVALID_TOKEN");
    let (status, signed_in) = login("first-password-1");
    assert_eq!(status, 200, "{signed_in}");
    let old_refresh = signed_in["data"]["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_owned();

    // Reset: the link sets a new password once and ends every session.
    let (status, _) = post(
        &s,
        "/api/v1/auth/password-reset/request",
        json!({"email": "ada@example.com"}),
    );
    assert_eq!(status, 202);
    let (_, text) = smtp.wait_message("reset-password");
    let reset = token(&text, "reset-password");
    let (status, weak) = post(
        &s,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": reset, "password": "short"}),
    );
    assert_eq!(status, 400, "{weak}");
    let (status, body) = post(
        &s,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": reset, "password": "second-password-2"}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        &s,
        "/api/v1/auth/password-reset/confirm",
        json!({"token": reset, "password": "third-password-3"}),
    );
    assert_eq!(status, 400, "a reset link works once");
    let (status, _) = post(
        &s,
        "/api/v1/auth/refresh",
        json!({"refreshToken": old_refresh}),
    );
    assert_eq!(status, 401, "the reset ended the old sessions");
    assert_eq!(login("first-password-1").0, 401);
    assert_eq!(login("second-password-2").0, 200);
    // A forged token is refused like a used one.
    let (status, _) = post(
        &s,
        "/api/v1/auth/verify-email/confirm",
        json!({"token": "forged"}),
    );
    assert_eq!(status, 400);
}

#[test]
fn a_stalled_smtp_server_times_out_and_the_mail_is_retried() {
    let Some(smtp) = Smtp::start() else {
        return;
    };
    let s = project(Some(&smtp), "").serve(BIN);
    let clock = s.path("clock");
    let out = s.project().run_with_stdin(
        BIN,
        &[
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--role",
            "admin",
        ],
        "ops-password-1\n",
    );
    assert!(out.status.success());
    let (_, signed_in) = post(
        &s,
        "/api/v1/auth/login",
        json!({"email": "ops@example.com", "password": "ops-password-1"}),
    );
    let admin = signed_in["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    // The server stops answering: connections are accepted, the greeting never comes.
    smtp.signal("STOP");
    let (status, _) = post(
        &s,
        "/api/v1/auth/password-reset/request",
        json!({"email": "ops@example.com"}),
    );
    assert_eq!(status, 202);
    let list = || {
        s.send(|c| {
            c.get(s.url("/api/v1/admin/jobs?type=email"))
                .header("authorization", format!("Bearer {admin}"))
        })
        .json()["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let end = Instant::now() + WAIT;
    let failed = loop {
        if let Some(job) = list().into_iter().find(|j| j["state"] == "retryable") {
            break job;
        }
        assert!(
            Instant::now() < end,
            "the send never timed out: {:?}",
            list()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        failed["lastError"]
            .as_str()
            .expect("error")
            .contains("SMTP"),
        "{failed}"
    );
    // The server recovers; after the backoff the mail goes out.
    smtp.signal("CONT");
    std::fs::write(&clock, "40").expect("clock");
    let (to, text) = smtp.wait_message("reset-password");
    assert!(to.contains("ops@example.com"));
    assert!(text.contains("reset-password?token="));
    let end = Instant::now() + WAIT;
    while !list()
        .iter()
        .any(|j| j["state"] == "completed" && j["attempt"] == 2)
    {
        assert!(Instant::now() < end, "{:?}", list());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_smtp_mail_goes_to_the_outbox_with_the_projects_templates() {
    let s = project(None, "")
        .file(
            "templates/email/verify.txt",
            "Welcome aboard, {{email}}! Confirm here: {{link}}\n",
        )
        .serve(BIN);
    let (status, _) = post(
        &s,
        "/api/v1/auth/register",
        json!({"email": "grace@example.com", "password": "grace-password-1"}),
    );
    assert_eq!(status, 201);
    let (status, _) = post(
        &s,
        "/api/v1/auth/verify-email/request",
        json!({"email": "grace@example.com"}),
    );
    assert_eq!(status, 202);
    let outbox = s.path("data/outbox");
    let end = Instant::now() + WAIT;
    let file = loop {
        let found = std::fs::read_dir(&outbox)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())));
        if let Some(file) = found {
            break file;
        }
        assert!(Instant::now() < end, "nothing in the outbox");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(file.extension().and_then(|e| e.to_str()), Some("eml"));
    let raw = std::fs::read_to_string(&file).expect("eml");
    assert!(raw.contains("To: grace@example.com"), "{raw}");
    assert!(raw.contains("Subject: Confirm your email address"), "{raw}");
    // The project's text template replaced the built-in one; the HTML part is built in.
    assert!(raw.contains("Welcome aboard"), "{raw}");
    assert!(raw.contains("<!doctype html>"), "{raw}");
}
