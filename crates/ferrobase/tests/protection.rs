//! Protection and HTTP semantics over HTTP (SPEC §7, §11): rate limits, caching headers
//! and the server-side read cache, `Idempotency-Key`, batches, CORS, compression,
//! security headers and metrics.

use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_protection.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

/// Public notes anyone may read and write, and owned tasks only their owner may change.
const SCHEMA: &str = r#"
[resources.notes]
timestamps = true
[resources.notes.fields]
text = { type = "text", required = true }
slug = { type = "string", unique = true }
[resources.notes.rules]
list = "true"
view = "true"
create = "true"
update = "true"
delete = "true"

[resources.tasks.fields]
title = { type = "string", required = true, min_length = 2 }
owner = { type = "relation", resource = "users", required = true, default = "@auth.id" }
[resources.tasks.rules]
list = "owner = @auth.id"
view = "owner = @auth.id"
create = "@auth.id != null && @body.owner = @auth.id"
update = "owner = @auth.id"
delete = "owner = @auth.id"
"#;

fn project(settings: &str) -> Project {
    Project::on(crate::backend())
        .schema(SCHEMA)
        .settings(settings)
}

fn register(s: &Server, email: &str) -> String {
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": email, "password": "protection-password"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn with_token(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    s.send(|c| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = c.request(method, s.url(path)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(body);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    })
}

fn post_with(s: &Server, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    s.send(|c| {
        let mut req = c.post(s.url(path)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    })
}

fn get_with(s: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    s.send(|c| {
        let mut req = c.get(s.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req
    })
}

fn count(s: &Server, resource: &str) -> u64 {
    let r = s.get(&format!("/api/v1/{resource}?count=true&limit=1"));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["meta"]["total"].as_u64().expect("total")
}

use ferrobase_testkit::reqwest;

#[test]
fn rate_limits_count_per_client_and_class_with_headers_and_retry_after() {
    let s = project(
        "[rate_limit]\nalgorithm = \"token_bucket\"\ndefault = \"1000/1h\"\nauth = \"4/1h\"\nroutes = [\"notes:POST=3/1h\"]\n",
    )
    .serve(BIN);
    for left in [2, 1, 0] {
        let r = s.post("/api/v1/notes", &json!({"text": "hi"}));
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
        assert_eq!(r.header("ratelimit-policy"), Some("3;w=3600"));
    }
    let r = s.post("/api/v1/notes", &json!({"text": "one too many"}));
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "RATE_LIMITED");
    assert!(
        r.json()["error"]["requestId"].is_string(),
        "the one error shape"
    );
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert_eq!(count(&s, "notes"), 3, "the refused request wrote nothing");

    // Reads are another class: still served.
    let r = s.get("/api/v1/notes");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-limit"), Some("1000"));

    // A batch cannot sidestep the limit: each operation counts against its own class.
    let r = s.post(
        "/api/v1/batch",
        &json!({"operations": [{"method": "POST", "path": "notes", "body": {"text": "x"}}]}),
    );
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(count(&s, "notes"), 3);

    // Auth endpoints are stricter, per address.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = s.post(
            "/api/v1/auth/login",
            &json!({"email": format!("nobody{i}@example.com"), "password": "wrong-password"}),
        );
        statuses.push(r.status);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429]);
}

#[test]
fn refused_credentials_count_against_the_address() {
    let s = project("[rate_limit]\nalgorithm = \"token_bucket\"\nauth = \"3/1h\"\n").serve(BIN);
    let statuses: Vec<u16> = (0..4)
        .map(|i| {
            with_token(
                &s,
                &format!("not-a-token-{i}"),
                "GET",
                "/api/v1/notes",
                None,
                &[],
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429], "guessing tokens is limited");
    assert_eq!(
        s.get("/api/v1/notes").status,
        200,
        "anonymous reads are another quota"
    );
}

#[test]
fn refusals_come_before_preconditions_and_after_visibility() {
    let s = project("").serve(BIN);
    let token = register(&s, "henry@example.com");
    let r = with_token(
        &s,
        &token,
        "POST",
        "/api/v1/auth/api-keys",
        Some(&json!({"name": "reader", "scopes": ["notes:read"]})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json()["data"]["key"].as_str().expect("key").to_owned();
    let note = s.post("/api/v1/notes", &json!({"text": "read only for the key"}));
    let id = note.json()["data"]["id"].as_str().expect("id").to_owned();

    // A record that does not exist is 404 whatever the key may do.
    let missing = format!("/api/v1/notes/{}", "01890000-0000-7000-8000-000000000000");
    let r = with_token(
        &s,
        &key,
        "PATCH",
        &missing,
        Some(&json!({"text": "x"})),
        &[],
    );
    assert_eq!(r.status, 404, "{}", r.text);
    // One that exists: the scope refuses it, even with a stale If-Match.
    let path = format!("/api/v1/notes/{id}");
    let r = with_token(
        &s,
        &key,
        "PATCH",
        &path,
        Some(&json!({"text": "x"})),
        &[("if-match", "\"7\"")],
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .expect("message")
            .contains("notes:write")
    );
    assert_eq!(s.get(&path).json()["data"]["version"], 1, "nothing written");
}

#[test]
fn signed_in_users_have_quotas_of_their_own() {
    let s = project("[rate_limit]\nalgorithm = \"token_bucket\"\nauth = \"100/1h\"\nroutes = [\"tasks=2/1h\"]\n").serve(BIN);
    let alice = register(&s, "alice@example.com");
    let bob = register(&s, "bob@example.com");
    for _ in 0..2 {
        let r = with_token(&s, &alice, "GET", "/api/v1/tasks", None, &[]);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = with_token(&s, &alice, "GET", "/api/v1/tasks", None, &[]);
    assert_eq!(r.status, 429);
    let r = with_token(&s, &bob, "GET", "/api/v1/tasks", None, &[]);
    assert_eq!(r.status, 200, "bob's quota is untouched by alice's");
}

#[test]
fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let untrusted =
        project("[rate_limit]\nalgorithm = \"token_bucket\"\nroutes = [\"notes:GET=2/1h\"]\n")
            .serve(BIN);
    let statuses: Vec<u16> = (0..3)
        .map(|i| {
            let ip = format!("203.0.113.{i}");
            get_with(&untrusted, "/api/v1/notes", &[("x-forwarded-for", &ip)]).status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 429], "a spoofed header buys nothing");

    let behind = project(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n[rate_limit]\nalgorithm = \"token_bucket\"\nroutes = [\"notes:GET=2/1h\"]\n",
    )
    .serve(BIN);
    for i in 0..3 {
        let ip = format!("203.0.113.{i}");
        let r = get_with(&behind, "/api/v1/notes", &[("x-forwarded-for", &ip)]);
        assert_eq!(
            r.status, 200,
            "each client behind the proxy has its own quota"
        );
    }
    let same = "203.0.113.0";
    let r = get_with(&behind, "/api/v1/notes", &[("x-forwarded-for", same)]);
    assert_eq!(r.status, 200);
    let r = get_with(&behind, "/api/v1/notes", &[("x-forwarded-for", same)]);
    assert_eq!(r.status, 429);
}

#[test]
fn parallel_requests_never_get_past_the_limit() {
    let s = project("[rate_limit]\nalgorithm = \"token_bucket\"\nroutes = [\"notes:GET=25/1h\"]\n")
        .serve(BIN);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    (0..10)
                        .map(|_| s.get("/api/v1/notes").status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(admitted + refused, 80, "{statuses:?}");
    assert_eq!(admitted, 25, "exactly the quota, never more: {statuses:?}");
}

#[test]
fn turning_rate_limits_off_is_explicit() {
    let s = project("[rate_limit]\nenabled = false\n").serve(BIN);
    let r = s.get("/api/v1/notes");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-limit"), None);
}

#[test]
fn etags_and_cache_control_on_records_and_lists() {
    let s = project("[cache]\npublic_max_age = \"45s\"\nresource_max_age = [\"notes=10m\"]\n")
        .serve(BIN);
    let created = s.post("/api/v1/notes", &json!({"text": "v1"}));
    let id = created.json()["data"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/v1/notes/{id}");

    // One record: its version is its ETag; public data is publicly cacheable.
    let r = s.get(&path);
    assert_eq!(r.header("etag"), Some("\"1\""));
    assert_eq!(r.header("cache-control"), Some("public, max-age=600"));
    let r = get_with(&s, &path, &[("if-none-match", "\"1\"")]);
    assert_eq!(r.status, 304);
    assert_eq!(r.text, "");
    assert_eq!(r.header("etag"), Some("\"1\""));

    // A list's ETag hashes the page: stable while nothing changes, new after a write.
    let first = s.get("/api/v1/notes");
    let list_tag = first.header("etag").expect("list etag").to_owned();
    assert!(list_tag.starts_with("W/\""), "{list_tag}");
    assert_eq!(
        s.get("/api/v1/notes").header("etag"),
        Some(list_tag.as_str())
    );
    let r = get_with(&s, "/api/v1/notes", &[("if-none-match", &list_tag)]);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("cache-control"), Some("public, max-age=600"));

    // If-Match: a stale version is refused, the current one accepted.
    let r = s.send(|c| {
        c.patch(s.url(&path))
            .header("if-match", "\"1\"")
            .json(&json!({"text": "v2"}))
    });
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("etag"), Some("\"2\""));
    let r = s.send(|c| {
        c.patch(s.url(&path))
            .header("if-match", "\"1\"")
            .json(&json!({"text": "lost update"}))
    });
    assert_eq!(r.status, 412);
    assert_eq!(r.code(), "PRECONDITION_FAILED");
    let r = s.send(|c| c.delete(s.url(&path)).header("if-match", "\"1\""));
    assert_eq!(r.status, 412);
    let r = get_with(&s, "/api/v1/notes", &[("if-none-match", &list_tag)]);
    assert_eq!(r.status, 200, "the list changed");
    assert_ne!(r.header("etag"), Some(list_tag.as_str()));

    // Signed-in reads are private.
    let token = register(&s, "carol@example.com");
    let r = with_token(&s, &token, "GET", &path, None, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("private, no-cache"));
    let r = with_token(&s, &token, "GET", "/api/v1/tasks", None, &[]);
    assert_eq!(r.header("cache-control"), Some("private, no-cache"));
}

#[test]
fn the_server_side_cache_serves_public_reads_until_a_write() {
    let s = project("[cache]\nserver = \"memory\"\n").serve(BIN);
    s.post("/api/v1/notes", &json!({"text": "first"}));
    let miss = s.get("/api/v1/notes");
    assert_eq!(miss.header("x-cache"), None);
    let hit = s.get("/api/v1/notes");
    assert_eq!(hit.header("x-cache"), Some("hit"));
    assert_eq!(hit.text, miss.text);
    assert_eq!(hit.header("etag"), miss.header("etag"));
    let etag = hit.header("etag").expect("etag").to_owned();
    assert_eq!(
        get_with(&s, "/api/v1/notes", &[("if-none-match", &etag)]).status,
        304
    );

    // A write forgets it: the next read is fresh.
    s.post("/api/v1/notes", &json!({"text": "second"}));
    let after = s.get("/api/v1/notes");
    assert_eq!(after.header("x-cache"), None);
    assert_eq!(after.json()["data"].as_array().expect("data").len(), 2);

    // Signed-in reads never come from (or go into) the shared cache.
    let token = register(&s, "dave@example.com");
    for _ in 0..2 {
        let r = with_token(&s, &token, "GET", "/api/v1/notes", None, &[]);
        assert_eq!(r.header("x-cache"), None);
    }
}

#[test]
fn idempotency_keys_replay_the_first_answer_and_refuse_reuse() {
    let s = project("").serve(BIN);
    let key = [("idempotency-key", "order-7f3a")];
    let first = post_with(&s, "/api/v1/notes", &json!({"text": "once"}), &key);
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post_with(&s, "/api/v1/notes", &json!({"text": "once"}), &key);
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text, "the same record");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(count(&s, "notes"), 1, "written once");

    let other = post_with(&s, "/api/v1/notes", &json!({"text": "different"}), &key);
    assert_eq!(other.status, 422);
    assert_eq!(other.code(), "IDEMPOTENCY_KEY_REUSED");

    // A failed request wrote nothing and keeps nothing: fixing it, same key, works.
    let key2 = [("idempotency-key", "order-8b1c")];
    let bad = post_with(&s, "/api/v1/notes", &json!({"text": ""}), &key2);
    assert_eq!(bad.status, 400, "{}", bad.text);
    let bad_again = post_with(&s, "/api/v1/notes", &json!({"text": ""}), &key2);
    assert_eq!(bad_again.status, 400);
    assert_eq!(bad_again.header("idempotent-replayed"), None);

    // Keys belong to their caller.
    let erin = register(&s, "erin@example.com");
    let r = with_token(
        &s,
        &erin,
        "POST",
        "/api/v1/notes",
        Some(&json!({"text": "once"})),
        &key,
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("idempotent-replayed"), None);
    assert_eq!(count(&s, "notes"), 2);

    let garbage = post_with(
        &s,
        "/api/v1/notes",
        &json!({"text": "x"}),
        &[("idempotency-key", "")],
    );
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.code(), "BAD_REQUEST");
}

#[test]
fn a_batch_is_all_or_nothing_with_each_operation_under_its_own_rules() {
    let s = project("").serve(BIN);
    let frank = register(&s, "frank@example.com");
    let grace = register(&s, "grace@example.com");
    let existing = s.post(
        "/api/v1/notes",
        &json!({"text": "to change", "slug": "taken"}),
    );
    let note = existing.json()["data"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let gone = s.post("/api/v1/notes", &json!({"text": "to delete"}));
    let gone = gone.json()["data"]["id"].as_str().expect("id").to_owned();

    let ok = with_token(
        &s,
        &frank,
        "POST",
        "/api/v1/batch",
        Some(&json!({"operations": [
            {"method": "POST", "path": "tasks", "body": {"title": "write tests"}},
            {"method": "PATCH", "path": format!("notes/{note}"), "body": {"text": "changed"}, "ifMatch": "\"1\""},
            {"method": "DELETE", "path": format!("/api/v1/notes/{gone}")},
            {"method": "POST", "path": "/api/v1/notes", "body": {"text": "new"}},
        ]})),
        &[],
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
    let results = ok.json()["data"].as_array().expect("results").clone();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [201, 200, 204, 201], "results in order");
    assert_eq!(results[0]["data"]["title"], "write tests");
    assert_eq!(results[1]["data"]["version"], 2);
    assert!(results[2].get("data").is_none());
    let task = results[0]["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(s.get(&format!("/api/v1/notes/{gone}")).status, 404);

    // The last operation fails (unique slug): nothing of the batch remains.
    let before = count(&s, "notes");
    let failed = with_token(
        &s,
        &frank,
        "POST",
        "/api/v1/batch",
        Some(&json!({"operations": [
            {"method": "POST", "path": "notes", "body": {"text": "kept?"}},
            {"method": "PATCH", "path": format!("notes/{note}"), "body": {"text": "changed again"}},
            {"method": "POST", "path": "notes", "body": {"text": "dup", "slug": "taken"}},
        ]})),
        &[],
    );
    assert_eq!(failed.status, 409, "{}", failed.text);
    assert_eq!(failed.code(), "CONFLICT");
    assert_eq!(failed.json()["error"]["details"]["operation"], 2);
    assert_eq!(
        count(&s, "notes"),
        before,
        "the first insert was rolled back"
    );
    let r = s.get(&format!("/api/v1/notes/{note}"));
    assert_eq!(
        r.json()["data"]["text"],
        "changed",
        "the update was rolled back"
    );
    assert_eq!(r.json()["data"]["version"], 2);

    // Each operation under its own rules: grace may not touch frank's task.
    let refused = with_token(
        &s,
        &grace,
        "POST",
        "/api/v1/batch",
        Some(&json!({"operations": [
            {"method": "POST", "path": "tasks", "body": {"title": "mine"}},
            {"method": "DELETE", "path": format!("tasks/{task}")},
        ]})),
        &[],
    );
    assert_eq!(refused.status, 404, "{}", refused.text);
    assert_eq!(refused.json()["error"]["details"]["operation"], 1);
    let r = with_token(&s, &grace, "GET", "/api/v1/tasks?count=true", None, &[]);
    assert_eq!(
        r.json()["meta"]["total"],
        0,
        "grace's own insert was rolled back"
    );
    let r = with_token(
        &s,
        &frank,
        "GET",
        &format!("/api/v1/tasks/{task}"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "frank's task survives");

    // Anonymous callers cannot create tasks, even inside a batch.
    let r = s.post(
        "/api/v1/batch",
        &json!({"operations": [{"method": "POST", "path": "tasks", "body": {"title": "anon"}}]}),
    );
    assert_eq!(r.status, 401, "{}", r.text);

    // Malformed batches are 400 in the one error shape.
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"method": "POST", "path": "notes", "body": {"text": format!("n{i}")}}))
        .collect();
    for bad in [
        json!({"operations": too_many}),
        json!({"operations": []}),
        json!({"ops": []}),
        json!({"operations": [{"method": "GET", "path": "notes"}]}),
        json!({"operations": [{"method": "PATCH", "path": "notes", "body": {}}]}),
        json!({"operations": [{"method": "DELETE", "path": format!("notes/{note}"), "body": {}}]}),
        json!({"operations": [{"method": "POST", "path": "notes", "body": {"text": "x"}, "extra": 1}]}),
    ] {
        let r = s.post("/api/v1/batch", &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert!(r.json()["error"]["requestId"].is_string());
    }
    let r = s.post(
        "/api/v1/batch",
        &json!({"operations": [{"method": "POST", "path": "nope", "body": {}}]}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["details"]["operation"], 0);
}

#[test]
fn cors_allows_only_listed_origins() {
    let s = project("[cors]\nallowed_origins = [\"https://app.example.com\"]\n").serve(BIN);
    let allowed = [("origin", "https://app.example.com")];
    let r = get_with(&s, "/api/v1/notes", &allowed);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = get_with(&s, "/api/v1/nope", &allowed);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "browsers can read error bodies"
    );
    let r = get_with(&s, "/api/v1/notes", &[("origin", "https://evil.example")]);
    assert_eq!(r.header("access-control-allow-origin"), None);
    let preflight = s.send(|c| {
        c.request(reqwest::Method::OPTIONS, s.url("/api/v1/notes"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "PATCH")
            .header(
                "access-control-request-headers",
                "if-match, idempotency-key",
            )
    });
    assert_eq!(preflight.status, 200);
    let methods = preflight
        .header("access-control-allow-methods")
        .expect("methods");
    assert!(methods.contains("PATCH"), "{methods}");
    assert_eq!(preflight.header("access-control-allow-credentials"), None);
}

#[test]
fn responses_are_compressed_and_carry_security_headers() {
    let s = project("[server]\nhsts = true\n").serve(BIN);
    for i in 0..20 {
        s.post(
            "/api/v1/notes",
            &json!({"text": format!("a note long enough to be worth compressing {i}")}),
        );
    }
    for encoding in ["gzip", "br"] {
        let r = get_with(&s, "/api/v1/notes", &[("accept-encoding", encoding)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(encoding));
    }
    let plain = s.get("/api/v1/notes");
    assert_eq!(plain.header("content-encoding"), None);
    for r in [plain, s.get("/api/v1/nope")] {
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert!(r.header("content-security-policy").is_some());
        assert!(
            r.header("strict-transport-security")
                .is_some_and(|v| v.starts_with("max-age="))
        );
    }
    let without = project("").serve(BIN);
    assert_eq!(
        without.get("/health").header("strict-transport-security"),
        None,
        "HSTS only when configured"
    );
}

#[test]
fn metrics_count_requests_by_route_and_can_be_protected() {
    let s = project("[rate_limit]\nalgorithm = \"token_bucket\"\nroutes = [\"notes:POST=1/1h\"]\n")
        .serve(BIN);
    s.post("/api/v1/notes", &json!({"text": "one"}));
    assert_eq!(s.post("/api/v1/notes", &json!({"text": "two"})).status, 429);
    let id = uuid_like();
    s.get(&format!("/api/v1/notes/{id}"));
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.contains("text")));
    let text = r.text;
    for expected in [
        "ferrobase_http_requests_total{method=\"POST\",route=\"/api/v1/{resource}\",status=\"201\"} 1",
        "ferrobase_http_requests_total{method=\"POST\",route=\"/api/v1/{resource}\",status=\"429\"} 1",
        "ferrobase_http_requests_total{method=\"GET\",route=\"/api/v1/{resource}/{id}\",status=\"404\"} 1",
        "ferrobase_http_request_duration_seconds_bucket{le=",
        "ferrobase_rate_limited_requests_total{class=\"notes:POST\"} 1",
        "ferrobase_db_pool_connections ",
        "ferrobase_build_info{version=\"",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains(&id), "raw paths never become labels");

    let token = "metrics-token-0123456789";
    let guarded = project(&format!("[metrics]\ntoken = \"{token}\"\n")).serve(BIN);
    assert_eq!(guarded.get("/metrics").status, 401);
    let r = guarded.send(|c| {
        c.get(guarded.url("/metrics"))
            .bearer_auth("wrong-token-0123456789")
    });
    assert_eq!(r.status, 401);
    let r = guarded.send(|c| c.get(guarded.url("/metrics")).bearer_auth(token));
    assert_eq!(r.status, 200);

    let apart = project("[metrics]\naddr = \"127.0.0.1:0\"\n").serve(BIN);
    assert_eq!(apart.get("/metrics").status, 404, "not on the public port");
    let line = apart
        .logs
        .wait_for(ferrobase_testkit::DEADLINE, |l| {
            l["message"] == "metrics listening"
        })
        .expect("metrics listener");
    let addr = line["addr"].as_str().expect("addr");
    let r = reqwest::blocking::get(format!("http://{addr}/metrics")).expect("metrics");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().expect("body").contains("ferrobase_build_info"));
}

fn uuid_like() -> String {
    "01890000-0000-7000-8000-000000000000".to_owned()
}

#[test]
fn a_write_made_outside_the_server_reaches_its_memory_cache() {
    // The users list is public here, so its reads are cached; `ferrobase users create`
    // writes from another process, which the cache learns of through the event log.
    let project = Project::on(crate::backend())
        .schema("[resources.users.rules]\nlist = \"true\"\n")
        .settings("[cache]\nserver = \"memory\"\nserver_ttl = \"1h\"\n");
    let s = project.serve(BIN);
    let count_users = || {
        let r = s.get("/api/v1/users");
        assert_eq!(r.status, 200, "{}", r.text);
        (
            r.json()["data"].as_array().expect("data").len(),
            r.header("x-cache").map(str::to_owned),
        )
    };
    assert_eq!(count_users(), (0, None));
    assert_eq!(count_users(), (0, Some("hit".to_owned())));
    let out = s.project().run_with_stdin(
        BIN,
        &[
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--role",
            "user",
        ],
        "operator-password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The node looks at the log once a second; wait for the condition, not for time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (n, _) = count_users();
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cached list never learned of the new user"
        );
        // Poll the condition gently (anonymous reads are rate limited).
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(count_users(), (1, Some("hit".to_owned())), "cached again");
}
