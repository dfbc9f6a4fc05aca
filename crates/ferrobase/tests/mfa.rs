//! TOTP second factors through the real binary (SPEC §6, MFA), with the server's clock
//! moved by a file instead of waiting: set up and confirmed by a first code (recovery
//! codes handed out), sign-in in two steps; current and previous-step codes pass, a
//! reused or wrong code does not, recovery codes work once, the step's token expires,
//! code guesses are throttled, and turning TOTP off needs the password or a code.
//! `pg_mfa.rs` runs the same bodies on PostgreSQL.

use std::time::{SystemTime, UNIX_EPOCH};

use ferrobase_auth::mfa;
use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_mfa.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

/// The server's clock, moved by the project's clock file.
struct Clock {
    server: Server,
    offset: f64,
}

impl Clock {
    /// Moves the server's clock to 5 s into a TOTP step, so that a test has 25 s before
    /// the step changes under it; returns the server's time then.
    fn start(server: Server) -> (Clock, u64) {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs_f64();
        let offset = 35.0 - real % 30.0;
        let mut clock = Clock {
            server,
            offset: 0.0,
        };
        let at = clock.set(offset);
        (clock, at)
    }

    fn set(&mut self, offset: f64) -> u64 {
        self.offset = offset;
        std::fs::write(self.server.dir().join("clock"), offset.to_string()).expect("clock");
        self.now()
    }

    /// Moves the clock on by `seconds`; the server's time then.
    fn advance(&mut self, seconds: f64) -> u64 {
        self.set(self.offset + seconds)
    }

    fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs_f64();
        (real + self.offset) as u64
    }
}

fn project() -> Project {
    let p = Project::on(crate::backend())
        .env(
            "FERROBASE_SECRET",
            "mfa-test-secret-of-enough-length-0123456789abcdef",
        )
        .file("clock", "0");
    let clock = p.path().join("clock");
    p.env("FERROBASE_TEST_CLOCK", clock.to_str().expect("path"))
}

fn send(s: &Server, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Reply {
    s.send(|c| {
        let mut rb = c.request(method.parse().expect("method"), s.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb
    })
}

const PASSWORD: &str = "correct horse battery";

fn login(s: &Server, email: &str) -> Value {
    let r = send(
        s,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": email, "password": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].clone()
}

fn verify(s: &Server, mfa_token: &str, code: &str) -> Reply {
    send(
        s,
        None,
        "POST",
        "/api/v1/auth/mfa/verify",
        Some(json!({"mfaToken": mfa_token, "code": code})),
    )
}

#[test]
fn totp_sign_in_in_two_steps_with_codes_used_once() {
    let s = project().serve(BIN);
    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/auth/register",
        Some(json!({"email": "ann@example.com", "password": PASSWORD})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let refresh = r.json()["data"]["refreshToken"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (mut clock, t0) = Clock::start(s);
    let s = &clock.server;

    // Set up: a secret and its URI; a wrong first code does not confirm it.
    let r = send(s, Some(&token), "POST", "/api/v1/auth/mfa/totp", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let setup = r.json()["data"].clone();
    let secret = mfa::decode_secret(setup["secret"].as_str().expect("secret")).expect("base32");
    let uri = setup["uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/ferrobase:ann%40example.com?"),
        "{uri}"
    );
    let code = |at: u64| mfa::code_at(&secret, at);
    let wrong = format!(
        "{:06}",
        (code(t0).parse::<u32>().expect("digits") + 1) % 1_000_000
    );
    let confirm = |c: &str| {
        send(
            s,
            Some(&token),
            "POST",
            "/api/v1/auth/mfa/totp/confirm",
            Some(json!({"code": c})),
        )
    };
    let r = confirm(&wrong);
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "INVALID_CREDENTIALS"),
        "{}",
        r.text
    );
    let r = confirm(&code(t0));
    assert_eq!(r.status, 200, "{}", r.text);
    let recovery: Vec<String> = r.json()["data"]["recoveryCodes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    let status = send(s, Some(&token), "GET", "/api/v1/auth/mfa", None).json();
    assert_eq!(
        status["data"],
        json!({"totp": "on", "recoveryCodesLeft": 10})
    );
    // What signed in with the password alone is over: the refresh token from before.
    let r = send(
        s,
        None,
        "POST",
        "/api/v1/auth/refresh",
        Some(json!({"refreshToken": refresh})),
    );
    assert_eq!(r.status, 401, "{}", r.text);
    let r = send(s, Some(&token), "POST", "/api/v1/auth/mfa/totp", None);
    assert_eq!(r.status, 409, "on already: {}", r.text);

    // Signing in now takes two steps; the confirming code's step is spent.
    let step = login(s, "ann@example.com");
    assert_eq!(step["mfaRequired"], true, "{step}");
    assert!(
        step.get("accessToken").is_none(),
        "no token before the code: {step}"
    );
    let pending = step["mfaToken"].as_str().expect("mfaToken").to_owned();
    let r = verify(s, &pending, &code(t0));
    assert_eq!(r.code(), "INVALID_CREDENTIALS", "a reused step: {}", r.text);

    // The next step's code passes, once.
    let t1 = clock.advance(30.0);
    let s = &clock.server;
    let r = verify(s, &pending, &code(t1));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["data"]["accessToken"].is_string(), "{}", r.text);
    let again = login(s, "ann@example.com")["mfaToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        verify(s, &again, &code(t1)).code(),
        "INVALID_CREDENTIALS",
        "reused"
    );

    // A previous step's code still passes (clock drift), one further back does not.
    let t3 = clock.advance(60.0);
    let s = &clock.server;
    assert_eq!(
        verify(s, &again, &code(t3 - 60)).code(),
        "INVALID_CREDENTIALS",
        "two steps back"
    );
    let r = verify(s, &again, &code(t3 - 30));
    assert_eq!(r.status, 200, "previous step: {}", r.text);

    // Recovery codes work once each, in any spelling.
    let pending = login(s, "ann@example.com")["mfaToken"]
        .as_str()
        .expect("t")
        .to_owned();
    let r = verify(s, &pending, &recovery[0].to_uppercase());
    assert_eq!(r.status, 200, "{}", r.text);
    let pending = login(s, "ann@example.com")["mfaToken"]
        .as_str()
        .expect("t")
        .to_owned();
    assert_eq!(
        verify(s, &pending, &recovery[0]).code(),
        "INVALID_CREDENTIALS",
        "used"
    );
    let status = send(s, Some(&token), "GET", "/api/v1/auth/mfa", None).json();
    assert_eq!(status["data"]["recoveryCodesLeft"], 9);

    // The step's token lasts five minutes.
    let late = login(s, "ann@example.com")["mfaToken"]
        .as_str()
        .expect("t")
        .to_owned();
    let t4 = clock.advance(301.0);
    let s = &clock.server;
    assert_eq!(verify(s, &late, &code(t4)).code(), "TOKEN_EXPIRED");
    assert_eq!(verify(s, "forged.token", &code(t4)).code(), "UNAUTHORIZED");

    // A cookie session signs in the same way and gets its cookie at the second step.
    let r = send(
        s,
        None,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"email": "ann@example.com", "password": PASSWORD, "session": "cookie"})),
    );
    assert!(
        r.header("set-cookie").is_none(),
        "no session before the code"
    );
    let pending = r.json()["data"]["mfaToken"].as_str().expect("t").to_owned();
    let r = verify(s, &pending, &code(t4));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("set-cookie").is_some(), "{}", r.text);
    assert!(r.json()["data"]["csrfToken"].is_string());

    // Turning TOTP off needs the password (or a code); then one step signs in again.
    let fresh = {
        let t5 = clock.advance(30.0);
        let s = &clock.server;
        let pending = login(s, "ann@example.com")["mfaToken"]
            .as_str()
            .expect("t")
            .to_owned();
        let r = verify(s, &pending, &code(t5));
        r.json()["data"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let s = &clock.server;
    let off = |body: Value| {
        send(
            s,
            Some(&fresh),
            "DELETE",
            "/api/v1/auth/mfa/totp",
            Some(body),
        )
    };
    assert_eq!(
        off(json!({"password": "not it at all"})).code(),
        "INVALID_CREDENTIALS"
    );
    assert_eq!(off(json!({})).code(), "VALIDATION_FAILED");
    let r = off(json!({"password": PASSWORD}));
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(login(s, "ann@example.com")["accessToken"].is_string());
}

#[test]
fn code_guesses_are_throttled() {
    let s = project().serve(BIN);
    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/auth/register",
        Some(json!({"email": "bob@example.com", "password": PASSWORD})),
    );
    let token = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let (clock, t0) = Clock::start(s);
    let s = &clock.server;
    let setup = send(s, Some(&token), "POST", "/api/v1/auth/mfa/totp", None).json();
    let secret =
        mfa::decode_secret(setup["data"]["secret"].as_str().expect("secret")).expect("base32");
    let r = send(
        s,
        Some(&token),
        "POST",
        "/api/v1/auth/mfa/totp/confirm",
        Some(json!({"code": mfa::code_at(&secret, t0)})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let pending = login(s, "bob@example.com")["mfaToken"]
        .as_str()
        .expect("t")
        .to_owned();
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(verify(s, &pending, &format!("{:06}", 100_000 + i)).status);
    }
    assert!(statuses[..10].iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(statuses[11], 429, "{statuses:?}");
    // Even the right code waits now.
    assert_eq!(verify(s, &pending, &mfa::code_at(&secret, t0)).status, 429);
}
#[test]
fn a_password_change_ends_sign_ins_waiting_for_their_code() {
    let s = project().serve(BIN);
    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/auth/register",
        Some(json!({"email": "cy@example.com", "password": PASSWORD})),
    );
    let token = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let (mut clock, t0) = Clock::start(s);
    let s = &clock.server;
    let setup = send(s, Some(&token), "POST", "/api/v1/auth/mfa/totp", None).json();
    let secret =
        mfa::decode_secret(setup["data"]["secret"].as_str().expect("secret")).expect("base32");
    let r = send(
        s,
        Some(&token),
        "POST",
        "/api/v1/auth/mfa/totp/confirm",
        Some(json!({"code": mfa::code_at(&secret, t0)})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let pending = login(s, "cy@example.com")["mfaToken"]
        .as_str()
        .expect("t")
        .to_owned();
    let r = send(
        s,
        Some(&token),
        "POST",
        "/api/v1/auth/password",
        Some(json!({"currentPassword": PASSWORD, "newPassword": "another good passphrase"})),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let t1 = clock.advance(30.0);
    let r = verify(&clock.server, &pending, &mfa::code_at(&secret, t1));
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "UNAUTHORIZED"),
        "{}",
        r.text
    );
}
