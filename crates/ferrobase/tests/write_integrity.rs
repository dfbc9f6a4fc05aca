//! What a write may store and point at: relations only to records the writer may see,
//! dates only in the range every store holds.

use ferrobase_testkit::{Backend, Project, Reply, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_write_integrity.rs` includes this file with
/// PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const SCHEMA: &str = r#"
[auth]
roles = ["admin", "member"]
default_role = "member"

[resources.notes.fields]
body  = { type = "string" }
owner = { type = "relation", resource = "users", required = true, default = "@auth.id" }
[resources.notes.rules]
list   = "owner = @auth.id"
view   = "owner = @auth.id"
create = "@auth.id != null && @body.owner = @auth.id"
update = "owner = @auth.id"
delete = "owner = @auth.id"

[resources.links.fields]
note  = { type = "relation", resource = "notes" }
notes = { type = "relation", resource = "notes", many = true }
who   = { type = "relation", resource = "users" }
[resources.links.rules]
list   = "true"
view   = "true"
create = "@auth.id != null"
update = "@auth.id != null"

[resources.events]
timestamps = true
[resources.events.fields]
day  = { type = "date" }
at   = { type = "datetime" }
code = { type = "string", unique = true }
[resources.events.rules]
list   = "true"
view   = "true"
create = "true"
"#;

fn server() -> Server {
    Project::on(crate::backend()).schema(SCHEMA).serve(BIN)
}

/// Registers a user and returns `(id, access token)`.
fn register(s: &Server, email: &str) -> (String, String) {
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": email, "password": "correct horse battery"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let d = r.json()["data"].clone();
    (
        d["user"]["id"].as_str().expect("id").to_owned(),
        d["accessToken"].as_str().expect("token").to_owned(),
    )
}

fn call(s: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    s.send(|c| {
        let mut rb = c
            .request(method.parse().expect("method"), s.url(path))
            .header("authorization", format!("Bearer {token}"));
        if let Some(body) = body {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            rb = rb.header("content-type", ct).body(body.to_string());
        }
        rb
    })
}

/// The error of a refused relation, with the id it named replaced, so that two answers
/// can be compared for any difference but the id.
fn relation_error(r: &Reply, id: &str) -> Value {
    assert_eq!(r.status, 400, "{}", r.text);
    let mut error = r.json()["error"].clone();
    error
        .as_object_mut()
        .expect("error object")
        .remove("requestId");
    serde_json::from_str(&error.to_string().replace(id, "ID")).expect("json")
}

#[test]
fn a_relation_to_a_record_the_writer_cannot_see_is_refused_like_a_missing_one() {
    let s = server();
    let (alice, alice_token) = register(&s, "alice@example.com");
    let (bob, bob_token) = register(&s, "bob@example.com");
    let note = |token: &str, owner: &str| {
        let r = call(
            &s,
            token,
            "POST",
            "/api/v1/notes",
            Some(json!({"body": "private", "owner": owner})),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["data"]["id"].as_str().expect("id").to_owned()
    };
    let alices = note(&alice_token, &alice);
    let bobs = note(&bob_token, &bob);
    let missing = "01900000-0000-7000-8000-000000000000";

    // Bob cannot see Alice's note: pointing at it answers exactly as a missing id does.
    let hidden = call(
        &s,
        &bob_token,
        "POST",
        "/api/v1/links",
        Some(json!({"note": alices})),
    );
    let absent = call(
        &s,
        &bob_token,
        "POST",
        "/api/v1/links",
        Some(json!({"note": missing})),
    );
    assert_eq!(
        relation_error(&hidden, &alices),
        relation_error(&absent, missing)
    );
    assert_eq!(hidden.code(), "VALIDATION_FAILED", "{}", hidden.text);
    // The same through a many relation and through an update, and inside a batch.
    let many = call(
        &s,
        &bob_token,
        "POST",
        "/api/v1/links",
        Some(json!({"notes": [bobs, alices]})),
    );
    assert_eq!(many.status, 400, "{}", many.text);
    assert!(many.text.contains("notes"), "{}", many.text);
    let link = call(
        &s,
        &bob_token,
        "POST",
        "/api/v1/links",
        Some(json!({"note": bobs, "notes": [bobs]})),
    );
    assert_eq!(link.status, 201, "{}", link.text);
    let link_id = link.json()["data"]["id"].as_str().expect("id").to_owned();
    let patched = call(
        &s,
        &bob_token,
        "PATCH",
        &format!("/api/v1/links/{link_id}"),
        Some(json!({"note": alices})),
    );
    assert_eq!(
        relation_error(&patched, &alices)["details"],
        relation_error(&absent, missing)["details"]
    );
    let batch = call(
        &s,
        &bob_token,
        "POST",
        "/api/v1/batch",
        Some(json!({"operations": [
            {"method": "POST", "path": "links", "body": {"note": alices}}
        ]})),
    );
    assert_eq!(batch.status, 400, "{}", batch.text);
    // Nothing pins Alice's note: she can still delete it.
    let deleted = call(
        &s,
        &alice_token,
        "DELETE",
        &format!("/api/v1/notes/{alices}"),
        None,
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text);

    // Users have no view rule (admins only), yet a caller may always name themselves.
    let me = call(
        &s,
        &bob_token,
        "POST",
        "/api/v1/links",
        Some(json!({"who": bob})),
    );
    assert_eq!(me.status, 201, "{}", me.text);
    let other = call(
        &s,
        &bob_token,
        "POST",
        "/api/v1/links",
        Some(json!({"who": alice})),
    );
    assert_eq!(
        relation_error(&other, &alice)["details"],
        relation_error(
            &call(
                &s,
                &bob_token,
                "POST",
                "/api/v1/links",
                Some(json!({"who": missing}))
            ),
            missing
        )["details"]
    );
}

#[test]
fn dates_hold_years_0001_to_9999_on_every_store() {
    let s = server();
    let post = |body: Value| s.post("/api/v1/events", &body);
    for body in [
        json!({"day": "0000-01-01"}),
        json!({"at": "0000-06-01T00:00:00Z"}),
        json!({"at": "0001-01-01T00:30:00+01:00"}),
        json!({"day": "10000-01-01"}),
    ] {
        let r = post(body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.code(), "VALIDATION_FAILED", "{}", r.text);
    }
    let first = post(json!({"day": "0001-01-01", "at": "0001-01-01T00:00:00Z"}));
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.json()["data"]["day"], "0001-01-01");
    let last = post(json!({"day": "9999-12-31", "at": "9999-12-31T23:59:59.999999Z"}));
    assert_eq!(last.status, 201, "{}", last.text);

    let list =
        |filter: &str| s.send(|c| c.get(s.url("/api/v1/events")).query(&[("filter", filter)]));
    for filter in [
        "day = '0000-01-01'",
        "at < '0000-12-31T00:00:00Z'",
        "created_at > @now - 740137d",
        "at < @now + 3000000d",
        "day >= @now - 1000000w",
    ] {
        let r = list(filter);
        assert_eq!(r.status, 400, "{filter}: {}", r.text);
        assert_eq!(r.code(), "INVALID_FILTER", "{filter}: {}", r.text);
    }
    // Far, but inside the range: an ordinary answer.
    let r = list("at > @now - 700000d");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"].as_array().expect("data").len(), 1);
    let r = list("day = '0001-01-01'");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"].as_array().expect("data").len(), 1);
}

#[test]
fn creates_sent_together_are_each_answered_for_themselves() {
    // On PostgreSQL creates that arrive together are written together (`[database]
    // create_batch`); each must still get its own answer: the second of two with the same
    // unique value a conflict, every other one its record.
    let s = server();
    let codes: Vec<String> = (0..16)
        .map(|n| {
            if n == 3 || n == 11 {
                "same".to_owned()
            } else {
                format!("code-{n}")
            }
        })
        .collect();
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let sent: Vec<_> = codes
            .iter()
            .map(|code| {
                let s = &s;
                scope.spawn(move || s.post("/api/v1/events", &json!({"code": code})))
            })
            .collect();
        sent.into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    });
    for (code, r) in codes.iter().zip(&replies) {
        if code != "same" {
            assert_eq!(r.status, 201, "{code}: {}", r.text);
            assert_eq!(r.json()["data"]["code"], code.as_str());
        }
    }
    let mut same: Vec<u16> = [3, 11].iter().map(|&n| replies[n].status).collect();
    same.sort_unstable();
    assert_eq!(same, vec![201, 409], "one of two equal codes is stored");
    let conflict = if replies[3].status == 409 {
        &replies[3]
    } else {
        &replies[11]
    };
    assert_eq!(conflict.code(), "CONFLICT", "{}", conflict.text);
    let r = s.send(|c| c.get(s.url("/api/v1/events")).query(&[("limit", "50")]));
    assert_eq!(r.status, 200, "{}", r.text);
    let mut stored: Vec<String> = r.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["code"].as_str().expect("code").to_owned())
        .collect();
    stored.sort();
    let mut expected: Vec<String> = codes.clone();
    expected.sort();
    expected.dedup();
    assert_eq!(stored, expected);
}
