//! Realtime through the real binary (SPEC §10): SSE and WebSocket subscribers see
//! exactly the events their rules admit (view rules judged in memory and, for a rule
//! that follows a relation, in SQL; field read rules and hidden fields applied), resume
//! without losing or repeating anything, get a `reset` beyond retention, receive a write
//! made right after the subscription was acknowledged, are cut off when they fall a
//! buffer behind (others keep receiving), see `expired` and `shutdown`, and get errors in
//! the SPEC's shape for bad input. `pg_realtime.rs` runs the same bodies on PostgreSQL
//! and adds two nodes sharing one database.

use ferrobase_testkit::realtime::{Sse, SseEvent, Ws};
use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_realtime.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const SCHEMA: &str = r#"
[auth]
roles = ["admin", "member"]
default_role = "member"

[resources.posts.fields]
title  = { type = "string", required = true }
status = { type = "enum", values = ["draft", "published"], default = "draft" }
author = { type = "relation", resource = "users", required = true, default = "@auth.id" }
note   = { type = "string", read = "author = @auth.id" }
secret = { type = "string", hidden = true }
body   = { type = "text" }
[resources.posts.rules]
list   = "status = 'published' || author = @auth.id"
view   = "status = 'published' || author = @auth.id"
create = "@auth.id != null && @body.author = @auth.id"
update = "author = @auth.id"
delete = "author = @auth.id"

[resources.comments.fields]
post = { type = "relation", resource = "posts", required = true, on_delete = "cascade" }
text = { type = "string", required = true }
[resources.comments.rules]
list   = "post.status = 'published' || post.author = @auth.id"
view   = "post.status = 'published' || post.author = @auth.id"
create = "@auth.id != null"

[resources.notes.fields]
text   = { type = "string" }
gone   = { type = "boolean", hidden = true }
secret = { type = "string", read = "!(gone = true)" }
[resources.notes.rules]
list   = "!(gone = true)"
view   = "!(gone = true)"
create = "true"
update = "true"

[resources.members_only.fields]
name = { type = "string" }
[resources.members_only.rules]
view = "@auth.id != null"
list = "@auth.id != null"
"#;

/// A project of these tests: `extra` settings are appended.
pub(crate) fn project(extra: &str) -> Project {
    let project = Project::on(crate::backend())
        .schema(SCHEMA)
        .settings(&format!(
            // Tests register several users and write quickly; rate limits are another
            // test's subject.
            "[rate_limit]\ndefault = \"100000/1m\"\nauth = \"100000/1m\"\n[realtime]\nmax_connections_per_user = 10\nmax_subscriptions = 25\n{extra}"
        ))
        .env(
            "FERROBASE_SECRET",
            "realtime-test-secret-of-enough-length-0123456789",
        )
        .file("clock", "0");
    let clock = project.path().join("clock");
    project.env("FERROBASE_TEST_CLOCK", clock.to_str().expect("path"))
}

/// Moves the project's clock (every node of it) to `seconds` after real time.
fn set_clock(s: &Server, seconds: f64) {
    std::fs::write(s.dir().join("clock"), seconds.to_string()).expect("write clock");
}

/// A user with a token: `(token, id)`.
pub(crate) fn register(s: &Server, email: &str) -> (String, String) {
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": email, "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let j = r.json();
    (
        j["data"]["accessToken"].as_str().expect("token").to_owned(),
        j["data"]["user"]["id"].as_str().expect("id").to_owned(),
    )
}

fn login(s: &Server, email: &str) -> String {
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": email, "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// Signs in with a cookie session (as a browser does); returns the `Cookie` header's
/// value.
fn cookie_session(s: &Server, email: &str) -> String {
    let r = s.post(
        "/api/v1/auth/login",
        &json!({"email": email, "password": "correct horse battery", "session": "cookie"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.header("set-cookie")
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned()
}

pub(crate) fn call(
    s: &Server,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Reply {
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

/// Creates a post as `token`'s user; returns it as the author reads it.
pub(crate) fn create(s: &Server, token: &str, author: &str, fields: Value) -> Value {
    let mut body = fields;
    body["author"] = author.into();
    let r = call(s, Some(token), "POST", "/api/v1/posts", Some(body));
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"].clone()
}

fn update(s: &Server, token: &str, id: &str, fields: Value) -> Value {
    let r = call(
        s,
        Some(token),
        "PATCH",
        &format!("/api/v1/posts/{id}"),
        Some(fields),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["data"].clone()
}

fn comment(s: &Server, token: &str, post: &str, text: &str) -> Value {
    let r = call(
        s,
        Some(token),
        "POST",
        "/api/v1/comments",
        Some(json!({"post": post, "text": text})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"].clone()
}

/// An SSE stream of `path` for `token`'s user (anonymous without one).
pub(crate) fn sse(s: &Server, path: &str, token: Option<&str>, last: Option<i64>) -> Sse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let last = last.map(|l| l.to_string());
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if let Some(l) = &last {
        headers.push(("Last-Event-ID", l.as_str()));
    }
    Sse::open(&s.url(path), &headers).expect("stream opens")
}

/// A WebSocket to `/api/v1/realtime`, authenticated with an `auth` message when a token
/// is given.
pub(crate) fn ws(s: &Server, token: Option<&str>) -> Ws {
    let url = s.url("/api/v1/realtime").replacen("http://", "ws://", 1);
    let mut ws = Ws::connect(&url, &[]).expect("WebSocket opens");
    if let Some(t) = token {
        ws.send(&json!({"type": "auth", "token": t}));
        assert_eq!(
            ws.recv().expect("ack"),
            json!({"type": "ack", "of": "auth"})
        );
    }
    ws
}

/// Subscribes and waits for the acknowledgement.
pub(crate) fn subscribe(ws: &mut Ws, id: &str, resource: &str, extra: Value) {
    let mut m = json!({"type": "subscribe", "id": id, "resource": resource});
    for (k, v) in extra.as_object().expect("object") {
        m[k] = v.clone();
    }
    ws.send(&m);
    let ack = ws.recv().expect("ack");
    assert_eq!(
        ack,
        json!({"type": "ack", "of": "subscribe", "id": id}),
        "subscribing {id}"
    );
}

/// `(op, record id)` of an SSE record event.
fn op_id(e: &SseEvent) -> (String, String) {
    let j = e.json();
    (
        j["op"].as_str().unwrap_or_default().to_owned(),
        j["record"]["id"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Record events of a stream up to and including the one for record `marker`.
fn until(stream: &Sse, marker: &str) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    loop {
        let e = stream.next_record();
        let done = op_id(&e).1 == marker;
        seen.push(e);
        if done {
            return seen;
        }
    }
}

fn id(record: &Value) -> String {
    record["id"].as_str().expect("id").to_owned()
}

#[test]
fn each_subscriber_sees_exactly_what_its_rules_admit() {
    let s = project("").serve(BIN);
    let (ta, a) = register(&s, "a@example.com");
    let (tb, b) = register(&s, "b@example.com");
    let for_a = sse(&s, "/api/v1/posts/events", Some(&ta), None);
    let for_b = sse(&s, "/api/v1/posts/events", Some(&tb), None);
    let anon = sse(&s, "/api/v1/posts/events", None, None);
    let mut comments_b = ws(&s, Some(&tb));
    subscribe(&mut comments_b, "c", "comments", json!({}));

    let draft = create(
        &s,
        &ta,
        &a,
        json!({"title": "draft", "note": "a's", "secret": "x"}),
    );
    let public = create(
        &s,
        &ta,
        &a,
        json!({"title": "public", "status": "published", "note": "a's"}),
    );
    // Out of view for everyone but the author, then a draft comes into view.
    update(&s, &ta, &id(&public), json!({"status": "draft"}));
    update(&s, &ta, &id(&draft), json!({"status": "published"}));
    // Comments are judged through their post (a rule that follows a relation).
    let seen_comment = comment(&s, &tb, &id(&draft), "on a published post");
    let hidden_comment = comment(&s, &ta, &id(&public), "on a draft");
    // Deleting the now-draft post: only its author saw it as it was.
    let r = call(
        &s,
        Some(&ta),
        "DELETE",
        &format!("/api/v1/posts/{}", id(&public)),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    // Everyone sees the marker; every event before it has been judged by then.
    let marker = create(
        &s,
        &tb,
        &b,
        json!({"title": "end", "status": "published", "note": "b's"}),
    );
    let last_comment = comment(&s, &tb, &id(&marker), "marker");

    let ops = |events: &[SseEvent]| events.iter().map(op_id).collect::<Vec<_>>();
    let pair = |op: &str, r: &Value| (op.to_owned(), id(r));
    let seen_by_a = until(&for_a, &id(&marker));
    assert_eq!(
        ops(&seen_by_a),
        vec![
            pair("create", &draft),
            pair("create", &public),
            pair("update", &public),
            pair("update", &draft),
            // The cascade removed the hidden comment first: a comment is not a post.
            pair("delete", &public),
            pair("create", &marker),
        ]
    );
    let seen_by_b = until(&for_b, &id(&marker));
    assert_eq!(
        ops(&seen_by_b),
        vec![
            pair("create", &public),
            pair("update", &draft),
            pair("create", &marker)
        ]
    );
    let seen_by_anon = until(&anon, &id(&marker));
    assert_eq!(ops(&seen_by_b), ops(&seen_by_anon));

    // Shaped like a REST read for each caller: read rules and hidden fields applied.
    for e in seen_by_a.iter().chain(&seen_by_b).chain(&seen_by_anon) {
        assert!(e.json()["record"].get("secret").is_none(), "{}", e.data);
    }
    assert_eq!(seen_by_a[0].json()["record"]["note"], "a's");
    assert!(
        seen_by_b[0].json()["record"].get("note").is_none(),
        "{}",
        seen_by_b[0].data
    );
    for (stream_events, token) in [
        (&seen_by_a, Some(&ta)),
        (&seen_by_b, Some(&tb)),
        (&seen_by_anon, None),
    ] {
        let last = stream_events.last().expect("marker").json();
        let rest = call(
            &s,
            token.map(String::as_str),
            "GET",
            &format!("/api/v1/posts/{}", id(&marker)),
            None,
        );
        assert_eq!(
            last["record"],
            rest.json()["data"],
            "the event is the REST read"
        );
        assert!(
            stream_events.iter().all(|e| e.event.is_none()),
            "record events are unnamed"
        );
    }
    // Strictly increasing ids.
    let seqs: Vec<i64> = seen_by_a.iter().map(SseEvent::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The WebSocket subscriber to comments: the comment on the published post and the
    // marker, never the comment on a draft of another user.
    let mut got = Vec::new();
    loop {
        let m = comments_b.recv().expect("event");
        assert_eq!(m["type"], "event", "{m}");
        assert_eq!(m["subscription"], "c");
        let rid = m["record"]["id"].as_str().expect("id").to_owned();
        got.push((m["op"].as_str().expect("op").to_owned(), rid.clone()));
        if rid == id(&last_comment) {
            break;
        }
    }
    assert_eq!(
        got,
        vec![pair("create", &seen_comment), pair("create", &last_comment)]
    );
    assert_ne!(id(&hidden_comment), id(&seen_comment));
}

#[test]
fn rules_that_read_hidden_fields_are_judged_on_the_stored_values() {
    let s = project("").serve(BIN);
    let stream = sse(&s, "/api/v1/notes/events", None, None);
    let note = |text: &str, gone: bool| {
        let r = s.post(
            "/api/v1/notes",
            &json!({"text": text, "gone": gone, "secret": "s3cret"}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["data"].clone()
    };
    let hidden = note("gone", true);
    let shown = note("kept", false);
    // REST hides the first and shows the second; so does the stream.
    assert_eq!(s.get(&format!("/api/v1/notes/{}", id(&hidden))).status, 404);
    let e = stream.next_record();
    assert_eq!(op_id(&e), ("create".to_owned(), id(&shown)), "{e:?}");
    assert!(e.json()["record"].get("gone").is_none());
    // A read rule on a hidden field is not judged on a missing value: the field is left
    // out of events (REST, which has the value, shows it).
    assert!(e.json()["record"].get("secret").is_none(), "{}", e.data);
    let rest = s.get(&format!("/api/v1/notes/{}", id(&shown))).json();
    assert_eq!(rest["data"]["secret"], "s3cret");
}

#[test]
fn resuming_loses_and_repeats_nothing_and_old_positions_reset() {
    let s = project("").serve(BIN);
    let (ta, a) = register(&s, "a@example.com");
    let published =
        |title: &str| create(&s, &ta, &a, json!({"title": title, "status": "published"}));
    let first = sse(&s, "/api/v1/posts/events", None, None);
    let p1 = published("p1");
    let p2 = published("p2");
    let e1 = first.next_record();
    let e2 = first.next_record();
    assert_eq!(op_id(&e1).1, id(&p1));
    assert_eq!(op_id(&e2).1, id(&p2));
    first.close();

    // Missed while away: two the anonymous reader may see, one it may not.
    let p3 = published("p3");
    create(&s, &ta, &a, json!({"title": "draft"}));
    let p4 = published("p4");
    let again = sse(&s, "/api/v1/posts/events", None, Some(e2.seq()));
    let p5 = published("p5");
    let resumed = until(&again, &id(&p5));
    assert_eq!(
        resumed.iter().map(|e| op_id(e).1).collect::<Vec<_>>(),
        vec![id(&p3), id(&p4), id(&p5)]
    );
    assert!(resumed.iter().all(|e| e.seq() > e2.seq()));

    // The same over WebSocket with `after`: the ack, the missed events, then live.
    let mut w = ws(&s, None);
    subscribe(&mut w, "posts", "posts", json!({"after": e2.seq()}));
    let p6 = published("p6");
    let mut got = Vec::new();
    while got.last() != Some(&id(&p6)) {
        let m = w.recv().expect("event");
        assert_eq!(m["type"], "event", "{m}");
        got.push(m["record"]["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(got, vec![id(&p3), id(&p4), id(&p5), id(&p6)]);

    // A position older than the retention (24 h by default), trimmed or not: `reset`,
    // then the live events.
    set_clock(&s, 25.0 * 3600.0);
    let ta = login(&s, "a@example.com");
    let old = sse(&s, "/api/v1/posts/events", None, Some(e1.seq()));
    let reset = old.next().expect("reset");
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    assert!(
        reset.seq() >= e2.seq(),
        "a reconnect resumes after the reset: {reset:?}"
    );
    let p7 = create(&s, &ta, &a, json!({"title": "p7", "status": "published"}));
    assert_eq!(op_id(&old.next_record()).1, id(&p7));
    let mut w = ws(&s, None);
    subscribe(&mut w, "old", "posts", json!({"after": e1.seq()}));
    let reset = w.recv().expect("reset");
    assert_eq!(
        (reset["type"].as_str(), reset["subscription"].as_str()),
        (Some("reset"), Some("old")),
        "{reset}"
    );
    // It says where to resume from next time, as the SSE reset's id does.
    assert!(reset["seq"].as_i64().expect("seq") >= e2.seq(), "{reset}");
}

#[test]
fn a_write_made_right_after_the_acknowledgement_arrives() {
    let s = project("").serve(BIN);
    let (ta, a) = register(&s, "a@example.com");
    let mut w = ws(&s, Some(&ta));
    for i in 0..20 {
        let title = format!("w{i}");
        subscribe(
            &mut w,
            &title,
            "posts",
            json!({"filter": format!("title = '{title}'")}),
        );
        let post = create(&s, &ta, &a, json!({"title": title}));
        let m = w.recv().expect("event");
        assert_eq!(m["type"], "event", "{m}");
        assert_eq!(m["subscription"], title);
        assert_eq!(m["record"]["id"], post["id"]);
    }
    // SSE: the response head means the subscription is live.
    for i in 0..5 {
        let title = format!("s{i}");
        let stream = sse(
            &s,
            &format!("/api/v1/posts/events?filter=title%20%3D%20'{title}'"),
            Some(&ta),
            None,
        );
        let post = create(&s, &ta, &a, json!({"title": title}));
        assert_eq!(op_id(&stream.next_record()).1, id(&post));
    }
}

#[test]
fn a_slow_consumer_is_cut_off_while_others_keep_receiving() {
    // Room for bursts (a node under load hands events over in batches), far less than
    // what the slow client will owe.
    let s = project("buffer = 200\nbuffer_bytes = \"8MiB\"\n").serve(BIN);
    let (ta, a) = register(&s, "a@example.com");
    let fast = sse(&s, "/api/v1/posts/events", None, None);
    let mut slow = ws(&s, None);
    subscribe(&mut slow, "all", "posts", json!({}));
    // The slow client reads nothing from here on; once the socket's buffers are full
    // its queue overflows.
    let body = "x".repeat(30_000);
    let mut written = Vec::new();
    let overflowed = |s: &Server| {
        s.get("/metrics").text.lines().any(|l| {
            l.starts_with("ferrobase_realtime_buffer_overflows_total") && !l.ends_with(" 0")
        })
    };
    while !overflowed(&s) {
        for _ in 0..20 {
            let p = create(
                &s,
                &ta,
                &a,
                json!({"title": "big", "status": "published", "body": body}),
            );
            written.push(id(&p));
        }
        assert!(written.len() < 3000, "the slow consumer was never cut off");
    }
    // The fast reader got every event, in order.
    let fast_seen = until(&fast, written.last().expect("written"));
    assert_eq!(
        fast_seen.iter().map(|e| op_id(e).1).collect::<Vec<_>>(),
        written
    );
    // The slow one got a prefix of them, then the reason, then the close.
    let mut slow_seen: Vec<i64> = Vec::new();
    let reason = loop {
        let m = slow.recv().expect("a message before the close");
        if m["type"] == "event" {
            slow_seen.push(m["seq"].as_i64().expect("seq"));
        } else {
            break m;
        }
    };
    assert_eq!(reason["type"], "error", "{reason}");
    assert_eq!(reason["code"], "UNAVAILABLE", "{reason}");
    assert_eq!(slow.close_code(), Some(1013));
    let fast_seqs: Vec<i64> = fast_seen.iter().map(SseEvent::seq).collect();
    assert!(slow_seen.len() < fast_seqs.len());
    assert_eq!(
        slow_seen[..],
        fast_seqs[..slow_seen.len()],
        "a prefix, no gap"
    );
    // Resuming from its last seq gets exactly the rest.
    let mut again = ws(&s, None);
    let after = slow_seen.last().copied().unwrap_or(0);
    subscribe(&mut again, "rest", "posts", json!({"after": after}));
    let mut rest = Vec::new();
    while rest.len() < fast_seqs.len() - slow_seen.len() {
        let m = again.recv().expect("event");
        rest.push(m["seq"].as_i64().expect("seq"));
    }
    assert_eq!(rest[..], fast_seqs[slow_seen.len()..]);
}

#[test]
fn an_expired_token_ends_the_stream_and_a_fresh_auth_goes_on() {
    let s = project("").serve(BIN);
    let (ta, a) = register(&s, "a@example.com");
    let stream = sse(&s, "/api/v1/posts/events", Some(&ta), None);
    let mut w = ws(&s, Some(&ta));
    subscribe(&mut w, "mine", "posts", json!({}));
    let before = create(&s, &ta, &a, json!({"title": "before"}));
    assert_eq!(op_id(&stream.next_record()).1, id(&before));
    assert_eq!(w.recv().expect("event")["record"]["id"], before["id"]);

    // Past the access token's 15 minutes.
    set_clock(&s, 16.0 * 60.0);
    let fresh = login(&s, "a@example.com");
    let during = create(&s, &fresh, &a, json!({"title": "during"}));
    let end = stream.next_named().expect("expired");
    assert_eq!(end.event.as_deref(), Some("expired"), "{end:?}");
    assert!(stream.next().is_none(), "the stream ends");
    let m = w.recv().expect("error");
    assert_eq!(m["type"], "error");
    assert_eq!(m["code"], "TOKEN_EXPIRED");

    // A fresh token goes on from where the connection was: the draft written meanwhile
    // (visible only to its author) arrives after the ack.
    w.send(&json!({"type": "auth", "token": fresh}));
    assert_eq!(w.recv().expect("ack"), json!({"type": "ack", "of": "auth"}));
    let m = w.recv().expect("event");
    assert_eq!(m["record"]["id"], during["id"], "{m}");
    let after = create(&s, &fresh, &a, json!({"title": "after"}));
    assert_eq!(w.recv().expect("event")["record"]["id"], after["id"]);
    // Another user's token cannot take the connection over.
    let (tb, _) = register(&s, "b@example.com");
    w.send(&json!({"type": "auth", "token": tb}));
    assert_eq!(w.recv().expect("error")["code"], "FORBIDDEN");
}

#[test]
fn bad_input_gets_errors_in_the_spec_shape() {
    let s = project("").serve(BIN);
    let (ta, _) = register(&s, "a@example.com");
    let url = |p: &str| s.url(p);
    let refused = |path: &str, headers: &[(&str, &str)]| {
        Sse::open(&url(path), headers).err().expect("refused")
    };
    let r = refused("/api/v1/nothing/events", &[]);
    assert_eq!((r.status, r.code()), (404, "NOT_FOUND".into()));
    let r = refused("/api/v1/posts/events?filter=title%20%3D%3D%201", &[]);
    assert_eq!((r.status, r.code()), (400, "INVALID_FILTER".into()));
    let r = refused("/api/v1/posts/events?after=-3", &[]);
    assert_eq!((r.status, r.code()), (400, "BAD_REQUEST".into()));
    let r = refused("/api/v1/posts/events?limit=3", &[]);
    assert_eq!((r.status, r.code()), (400, "BAD_REQUEST".into()));
    let r = refused("/api/v1/members_only/events", &[]);
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));
    let bearer = format!("Bearer {ta}");
    let r = refused(
        "/api/v1/posts/events",
        &[("Authorization", "Bearer nonsense")],
    );
    assert_eq!((r.status, r.code()), (401, "UNAUTHORIZED".into()));

    // Connections per user (10 here): the eleventh is refused.
    let open: Vec<Sse> = (0..10)
        .map(|_| {
            Sse::open(&url("/api/v1/posts/events"), &[("Authorization", &bearer)]).expect("open")
        })
        .collect();
    let r = refused("/api/v1/posts/events", &[("Authorization", &bearer)]);
    assert_eq!((r.status, r.code()), (429, "RATE_LIMITED".into()));
    // Nor may a connection opened anonymously become the user's eleventh.
    let mut anonymous = ws(&s, None);
    anonymous.send(&json!({"type": "auth", "token": ta}));
    assert_eq!(anonymous.recv().expect("error")["code"], "RATE_LIMITED");
    drop(open);

    // WebSocket: each bad message gets an error and the connection stays usable.
    let mut w = ws(&s, None);
    w.send_text("not json");
    assert_eq!(w.recv().expect("error")["code"], "BAD_REQUEST");
    w.send(&json!({"type": "dance"}));
    assert_eq!(w.recv().expect("error")["code"], "BAD_REQUEST");
    w.send(&json!({"type": "subscribe", "id": "x", "resource": "nothing"}));
    let m = w.recv().expect("error");
    assert_eq!(
        (m["code"].as_str(), m["id"].as_str()),
        (Some("NOT_FOUND"), Some("x"))
    );
    w.send(&json!({"type": "subscribe", "id": "x", "resource": "posts", "filter": "title =="}));
    assert_eq!(w.recv().expect("error")["code"], "INVALID_FILTER");
    w.send(&json!({"type": "subscribe", "id": "x", "resource": "posts", "color": "red"}));
    assert_eq!(w.recv().expect("error")["code"], "BAD_REQUEST");
    w.send(&json!({"type": "subscribe", "id": "x", "resource": "members_only"}));
    assert_eq!(w.recv().expect("error")["code"], "UNAUTHORIZED");
    w.send(&json!({"type": "unsubscribe", "id": "never"}));
    assert_eq!(w.recv().expect("error")["code"], "NOT_FOUND");
    subscribe(&mut w, "x", "posts", json!({}));
    w.send(&json!({"type": "subscribe", "id": "x", "resource": "posts"}));
    assert_eq!(w.recv().expect("error")["code"], "BAD_REQUEST");
    for i in 1..25 {
        subscribe(&mut w, &format!("n{i}"), "posts", json!({}));
    }
    w.send(&json!({"type": "subscribe", "id": "one-too-many", "resource": "posts"}));
    assert_eq!(w.recv().expect("error")["code"], "UNPROCESSABLE");
    w.send(&json!({"type": "unsubscribe", "id": "x"}));
    assert_eq!(
        w.recv().expect("ack"),
        json!({"type": "ack", "of": "unsubscribe", "id": "x"})
    );
    w.send(&json!({"type": "auth", "token": "nonsense"}));
    assert_eq!(w.recv().expect("error")["code"], "UNAUTHORIZED");
    w.send(&json!({"type": "ping"}));
    assert_eq!(w.recv().expect("pong"), json!({"type": "pong"}));
    // A flood of messages: past the burst of 100, some are refused (not the connection).
    for _ in 0..300 {
        w.send(&json!({"type": "ping"}));
    }
    let refused = (0..300)
        .filter(|_| w.recv().expect("reply")["code"] == "RATE_LIMITED")
        .count();
    assert!(refused > 0, "300 messages at once were all taken");
    w.send(&json!({"type": "unsubscribe", "id": "n1"}));

    // Filters that follow a relation cost the database a condition per event each: at
    // most 5 per connection.
    let mut r = ws(&s, None);
    for i in 0..5 {
        subscribe(
            &mut r,
            &format!("rel{i}"),
            "comments",
            json!({"filter": format!("post.title = 't{i}'")}),
        );
    }
    r.send(&json!({"type": "subscribe", "id": "rel5", "resource": "comments", "filter": "post.title = 't5'"}));
    assert_eq!(r.recv().expect("error")["code"], "UNPROCESSABLE");
    subscribe(&mut r, "plain", "comments", json!({"filter": "text = 'x'"}));

    // A plain GET of the WebSocket endpoint.
    let r = s.get("/api/v1/realtime");
    assert_eq!((r.status, r.code()), (400, "BAD_REQUEST".into()));
}

#[test]
fn a_full_node_refuses_new_streams_until_one_ends() {
    let s = project("max_connections = 2\n").serve(BIN);
    let first = sse(&s, "/api/v1/posts/events", None, None);
    let mut second = ws(&s, None);
    let r = Sse::open(&s.url("/api/v1/posts/events"), &[])
        .err()
        .expect("refused");
    assert_eq!((r.status, r.code()), (503, "UNAVAILABLE".into()));
    // A closed WebSocket frees its place.
    second.send(&json!({"type": "ping"}));
    assert_eq!(second.recv().expect("pong"), json!({"type": "pong"}));
    drop(second);
    // The server notices the close when it reads it: ask until then (each ask is a
    // request answered at once, not a timer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut reopened = None;
    while reopened.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the place was never freed"
        );
        reopened = Sse::open(&s.url("/api/v1/posts/events"), &[]).ok();
    }
    drop(first);
}

#[test]
fn cookie_sessions_stream_and_foreign_pages_cannot_use_them() {
    let s = project("").serve(BIN);
    let (ta, a) = register(&s, "a@example.com");
    let cookie = cookie_session(&s, "a@example.com");
    // What a browser's EventSource sends: the cookie, no Authorization.
    let stream = Sse::open(&s.url("/api/v1/posts/events"), &[("Cookie", &cookie)]).expect("open");
    let draft = create(&s, &ta, &a, json!({"title": "only mine"}));
    assert_eq!(op_id(&stream.next_record()).1, id(&draft));

    let ws_url = s.url("/api/v1/realtime").replacen("http://", "ws://", 1);
    let refused = Ws::connect(
        &ws_url,
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    )
    .err()
    .expect("refused");
    assert_eq!(refused.status, 403);
    let host = s.url("").trim_start_matches("http://").to_owned();
    let own = format!("http://{host}");
    let mut w = Ws::connect(&ws_url, &[("Cookie", &cookie), ("Origin", &own)]).expect("same site");
    subscribe(&mut w, "mine", "posts", json!({}));
    let other = create(&s, &ta, &a, json!({"title": "also mine"}));
    assert_eq!(w.recv().expect("event")["record"]["id"], other["id"]);
}

#[test]
fn signing_out_or_losing_a_role_ends_what_a_stream_may_see() {
    // The credential is checked again every heartbeat (1 s here, the shortest allowed).
    let s = project("heartbeat = \"1s\"\n").serve(BIN);
    let (_, a) = register(&s, "a@example.com");
    let cookie = cookie_session(&s, "a@example.com");
    let stream = Sse::open(&s.url("/api/v1/posts/events"), &[("Cookie", &cookie)]).expect("open");
    let ta = login(&s, "a@example.com");
    let draft = create(&s, &ta, &a, json!({"title": "mine"}));
    assert_eq!(op_id(&stream.next_record()).1, id(&draft));
    // Signing out in the browser: the stream ends instead of going on with the session.
    let out = s.send(|c| {
        c.post(s.url("/api/v1/auth/logout"))
            .header("Cookie", &cookie)
            .json(&json!({}))
    });
    assert_eq!(out.status, 204, "{}", out.text);
    let end = loop {
        let e = stream.next().expect("an event before the end");
        if e.event.is_some() {
            break e;
        }
    };
    assert_eq!(end.event.as_deref(), Some("expired"), "{end:?}");
    assert!(stream.next().is_none());
}

#[test]
fn a_quiet_filtered_stream_still_moves_its_position() {
    let s = project("heartbeat = \"1s\"\n").serve(BIN);
    let (ta, a) = register(&s, "a@example.com");
    let stream = sse(
        &s,
        "/api/v1/posts/events?filter=title%20%3D%20'never'",
        None,
        None,
    );
    let skipped = create(
        &s,
        &ta,
        &a,
        json!({"title": "filtered out", "status": "published"}),
    );
    // At the next heartbeat: an id without data (EventSource moves its lastEventId and
    // fires nothing), so a reconnect does not replay what the filter passed over.
    let moved = stream.next().expect("an id-only event");
    assert!(moved.data.is_empty() && moved.event.is_none(), "{moved:?}");
    let again = sse(&s, "/api/v1/posts/events", None, Some(moved.seq()));
    let later = create(
        &s,
        &ta,
        &a,
        json!({"title": "later", "status": "published"}),
    );
    let first = again.next_record();
    assert_eq!(op_id(&first).1, id(&later), "{skipped} was not replayed");
}

#[test]
fn shutdown_ends_streams_with_a_final_event() {
    let mut s = project("").serve(BIN);
    let stream = sse(&s, "/api/v1/posts/events", None, None);
    let mut w = ws(&s, None);
    subscribe(&mut w, "p", "posts", json!({}));
    s.signal("TERM");
    let last = stream.next_named().expect("shutdown event");
    assert_eq!(last.event.as_deref(), Some("shutdown"), "{last:?}");
    assert!(stream.next().is_none());
    assert_eq!(w.recv().expect("shutdown")["type"], "shutdown");
    assert_eq!(w.close_code(), Some(1001));
    assert!(s.wait_exit().success());
}
