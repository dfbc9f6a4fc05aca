//! The record API over HTTP on SQLite: every field type and constraint, merge patch,
//! relations, pagination.

use ferrobase_testkit::{Backend, Project, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_*.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
const SCHEMA: &str = include_str!("fixtures/everything.schema.toml");

fn server() -> Server {
    Project::on(crate::backend()).schema(SCHEMA).serve(BIN)
}

fn create(s: &Server, resource: &str, body: Value) -> Value {
    let r = s.post(&format!("/api/v1/{resource}"), &body);
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"].clone()
}

fn field_errors(r: &ferrobase_testkit::Reply) -> Value {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "VALIDATION_FAILED", "{}", r.text);
    r.json()["error"]["details"]["fields"].clone()
}

#[test]
fn create_returns_201_location_and_server_fields() {
    let s = server();
    let r = s.post("/api/v1/items", &json!({"title": "First"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let item = r.json()["data"].clone();
    let id = item["id"].as_str().expect("id");
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "7", "UUIDv7: {id}");
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/items/{id}").as_str())
    );
    assert_eq!(item["version"], 1);
    assert_eq!(item["created_at"], item["updated_at"]);
    assert!(
        item["created_at"]
            .as_str()
            .expect("created_at")
            .ends_with('Z')
    );
    // Defaults.
    assert_eq!(item["count"], 1);
    assert_eq!(item["active"], true);
    assert_eq!(item["kind"], "a");
    assert_eq!(item["code"], "fixed");
    assert_eq!(item["tags"], json!([]));
    assert_eq!(item["body"], Value::Null);
    // Hidden and rule-protected fields never appear.
    assert!(item.get("secret").is_none());
    assert!(item.get("internal").is_none());

    let got = s.get(&format!("/api/v1/items/{id}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["data"], item);
}

#[test]
fn every_field_type_accepts_valid_values() {
    let s = server();
    let author = create(&s, "authors", json!({"name": "Ann"}));
    let tag1 = create(&s, "tags", json!({"label": "one"}));
    let tag2 = create(&s, "tags", json!({"label": "two"}));
    let item = create(
        &s,
        "items",
        json!({
            "title": "All types",
            "body": "long text",
            "count": 100,
            "price": 12,
            "active": false,
            "due_at": "2025-06-01T12:30:00+02:00",
            "due_on": "2025-06-01",
            "kind": "b",
            "contact": "ann@example.com",
            "homepage": "https://example.com/x?y=1",
            "ref": "0190A5B4-1C2D-7E3F-8A9B-0C1D2E3F4A5B",
            "meta": {"nested": [1, {"deep": true}]},
            "author": author["id"],
            "editor": author["id"],
            "tags": [tag2["id"], tag1["id"]],
            "secret": "s3cret",
        }),
    );
    assert_eq!(item["count"], 100);
    assert_eq!(
        item["price"], 12,
        "whole numbers stay whole, on write and on read"
    );
    assert_eq!(item["active"], false);
    assert_eq!(
        item["due_at"], "2025-06-01T10:30:00.000000Z",
        "normalized to UTC"
    );
    assert_eq!(item["due_on"], "2025-06-01");
    assert_eq!(item["ref"], "0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b");
    assert_eq!(item["meta"], json!({"nested": [1, {"deep": true}]}));
    assert_eq!(item["tags"], json!([tag2["id"], tag1["id"]]), "order kept");
    let got = s.get(&format!(
        "/api/v1/items/{}",
        item["id"].as_str().expect("id")
    ));
    assert_eq!(got.json()["data"], item, "read back exactly as created");
}

#[test]
fn every_constraint_is_enforced_with_per_field_messages() {
    let s = server();
    let r = s.post(
        "/api/v1/items",
        &json!({
            "title": "!",
            "body": "b".repeat(1001),
            "count": 101,
            "price": 100,
            "active": "yes",
            "due_at": "tomorrow",
            "due_on": "2025-02-30",
            "kind": "c",
            "contact": "not an email",
            "homepage": "ftp://example.com",
            "ref": "1234",
            "author": "not-an-id",
            "tags": ["x"],
        }),
    );
    let f = field_errors(&r);
    assert_eq!(r.json()["error"]["message"], "13 fields are invalid");
    assert_eq!(
        f["title"],
        json!([
            "must be at least 2 characters",
            "must match the pattern ^[A-Za-z0-9 ]+$"
        ])
    );
    assert_eq!(f["body"], json!(["must be at most 1000 characters"]));
    assert_eq!(f["count"], json!(["must be at most 100"]));
    assert_eq!(f["price"], json!(["must be at most 99.5"]));
    assert_eq!(f["active"], json!(["must be true or false"]));
    assert!(f["due_at"][0].as_str().expect("msg").contains("RFC 3339"));
    assert!(f["due_on"][0].as_str().expect("msg").contains("date"));
    assert_eq!(f["kind"], json!(["must be one of: a, b"]));
    assert_eq!(f["contact"], json!(["must be a valid email address"]));
    assert_eq!(
        f["homepage"],
        json!(["must be an absolute http or https URL"])
    );
    assert_eq!(f["ref"], json!(["must be a UUID"]));
    assert_eq!(f["author"], json!(["must be the id of a record"]));
    assert_eq!(f["tags"], json!(["must be an array of record ids"]));

    let f = field_errors(&s.post("/api/v1/items", &json!({"count": 1.5, "price": "1"})));
    assert_eq!(f["title"], json!(["is required"]));
    assert_eq!(f["count"], json!(["must be an integer"]));
    assert_eq!(f["price"], json!(["must be a number"]));
    let f = field_errors(&s.post(
        "/api/v1/items",
        &json!({"title": null, "count": -1, "price": 0.1}),
    ));
    assert_eq!(f["title"], json!(["is required"]));
    assert_eq!(f["count"], json!(["must be at least 0"]));
    assert_eq!(f["price"], json!(["must be at least 0.5"]));
    let f = field_errors(&s.post("/api/v1/tags", &json!({"label": ""})));
    assert_eq!(
        f["label"],
        json!(["must not be empty"]),
        "required strings are non-empty"
    );
    let f = field_errors(&s.post("/api/v1/items", &json!({"title": "abcdefghijklmnopqrstu"})));
    assert_eq!(f["title"], json!(["must be at most 20 characters"]));
    let four: Vec<String> = (0..4)
        .map(|i| format!("0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5{i}"))
        .collect();
    let f = field_errors(&s.post("/api/v1/items", &json!({"title": "ok", "tags": four})));
    assert_eq!(f["tags"], json!(["must have at most 3 items"]));
}

#[test]
fn unknown_server_set_and_read_only_fields_are_rejected() {
    let s = server();
    let f = field_errors(&s.post(
        "/api/v1/items",
        &json!({"title": "ok", "id": "x", "version": 9, "created_at": "2020-01-01T00:00:00Z", "updated_at": "x", "code": "mine", "colour": "red"}),
    ));
    for key in ["id", "version", "created_at", "updated_at"] {
        assert_eq!(f[key], json!(["is set by the server"]), "{key}");
    }
    assert_eq!(f["code"], json!(["is read-only"]));
    assert_eq!(f["colour"], json!(["is not a field of items"]));
    let item = create(&s, "items", json!({"title": "ok"}));
    let path = format!("/api/v1/items/{}", item["id"].as_str().expect("id"));
    let f = field_errors(&s.patch(&path, &json!({"id": "y", "code": "z", "colour": 1})));
    assert_eq!(f.as_object().expect("fields").len(), 3);
}

#[test]
fn unique_violations_are_409() {
    let s = server();
    create(&s, "tags", json!({"label": "rust"}));
    let r = s.post("/api/v1/tags", &json!({"label": "rust"}));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "CONFLICT");
    assert_eq!(
        r.json()["error"]["details"]["fields"]["label"],
        json!(["is already taken"])
    );
    // Composite unique index (title, kind).
    create(&s, "items", json!({"title": "Same", "kind": "a"}));
    create(&s, "items", json!({"title": "Same", "kind": "b"}));
    let r = s.post("/api/v1/items", &json!({"title": "Same", "kind": "a"}));
    assert_eq!(r.status, 409, "{}", r.text);
    // A PATCH into a conflict is 409 too, and changes nothing.
    let other = create(&s, "tags", json!({"label": "go"}));
    let path = format!("/api/v1/tags/{}", other["id"].as_str().expect("id"));
    assert_eq!(s.patch(&path, &json!({"label": "rust"})).status, 409);
    assert_eq!(s.get(&path).json()["data"]["label"], "go");
}

#[test]
fn merge_patch_semantics() {
    let s = server();
    let item = create(
        &s,
        "items",
        json!({"title": "Patch me", "body": "text", "meta": {"a": 1, "b": {"c": 2}}}),
    );
    let path = format!("/api/v1/items/{}", item["id"].as_str().expect("id"));
    let r = s.patch(
        &path,
        &json!({"body": null, "count": 7, "meta": {"b": {"c": null, "d": 3}, "e": [1]}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let patched = r.json()["data"].clone();
    assert_eq!(
        patched["body"],
        Value::Null,
        "null clears an optional field"
    );
    assert_eq!(patched["count"], 7);
    assert_eq!(patched["title"], "Patch me", "absent fields are kept");
    assert_eq!(
        patched["meta"],
        json!({"a": 1, "b": {"d": 3}, "e": [1]}),
        "json fields merge"
    );
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["created_at"], item["created_at"]);
    assert!(
        patched["updated_at"].as_str().expect("updated_at")
            > item["updated_at"].as_str().expect("updated_at"),
        "updated_at moves forward"
    );

    let r = s.patch(&path, &json!({"title": null}));
    assert_eq!(
        field_errors(&r)["title"],
        json!(["is required and cannot be cleared"])
    );
    let r = s.patch(&path, &json!({"meta": [1, 2]}));
    assert_eq!(
        r.json()["data"]["meta"],
        json!([1, 2]),
        "non-objects replace"
    );
    assert_eq!(s.get(&path).json()["data"]["version"], 3);

    // An empty patch changes nothing.
    let r = s.patch(&path, &json!({}));
    assert_eq!(r.json()["data"]["version"], 3);
    // Plain application/json is accepted for PATCH as well.
    let r = s.send(|c| c.patch(s.url(&path)).json(&json!({"count": 8})));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["data"]["count"], 8);
}

#[test]
fn relations_single_and_many() {
    let s = server();
    let ann = create(&s, "authors", json!({"name": "Ann"}));
    let bob = create(&s, "authors", json!({"name": "Bob"}));
    let t1 = create(&s, "tags", json!({"label": "t1"}));
    let t2 = create(&s, "tags", json!({"label": "t2"}));
    let missing = "0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b";

    // Broken relations are a 400 naming the field, never a 500.
    let f = field_errors(&s.post("/api/v1/items", &json!({"title": "x1", "author": missing})));
    assert_eq!(
        f["author"],
        json!([format!("no authors record has id {missing}")])
    );
    let f = field_errors(&s.post(
        "/api/v1/items",
        &json!({"title": "x2", "tags": [t1["id"], missing]}),
    ));
    assert!(f["tags"][0].as_str().expect("msg").contains(missing));
    let f = field_errors(&s.post(
        "/api/v1/items",
        &json!({"title": "x3", "tags": [t1["id"], t1["id"]]}),
    ));
    assert!(
        f["tags"][0]
            .as_str()
            .expect("msg")
            .contains("more than once")
    );

    let item = create(
        &s,
        "items",
        json!({"title": "Linked", "author": ann["id"], "editor": bob["id"], "tags": [t1["id"]]}),
    );
    let path = format!("/api/v1/items/{}", item["id"].as_str().expect("id"));
    let r = s.patch(&path, &json!({"tags": [t2["id"], t1["id"]]}));
    assert_eq!(r.json()["data"]["tags"], json!([t2["id"], t1["id"]]));
    let r = s.patch(&path, &json!({"tags": null}));
    assert_eq!(r.json()["data"]["tags"], json!([]));
    let r = s.patch(&path, &json!({"author": missing}));
    assert_eq!(r.status, 400, "{}", r.text);

    // on_delete = restrict: a referenced author cannot be deleted.
    let r = s.delete(&format!(
        "/api/v1/authors/{}",
        ann["id"].as_str().expect("id")
    ));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.code(), "CONFLICT");
    // on_delete = set_null: deleting the editor clears the reference.
    let r = s.delete(&format!(
        "/api/v1/authors/{}",
        bob["id"].as_str().expect("id")
    ));
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(s.get(&path).json()["data"]["editor"], Value::Null);
    // Deleting a tag removes its links.
    let _ = s.patch(&path, &json!({"tags": [t1["id"], t2["id"]]}));
    assert_eq!(
        s.delete(&format!("/api/v1/tags/{}", t1["id"].as_str().expect("id")))
            .status,
        204
    );
    assert_eq!(s.get(&path).json()["data"]["tags"], json!([t2["id"]]));
    // on_delete = cascade: notes go with their owner.
    let carl = create(&s, "authors", json!({"name": "Carl"}));
    let note = create(&s, "notes", json!({"text": "hi", "owner": carl["id"]}));
    assert_eq!(
        s.delete(&format!(
            "/api/v1/authors/{}",
            carl["id"].as_str().expect("id")
        ))
        .status,
        204
    );
    assert_eq!(
        s.get(&format!(
            "/api/v1/notes/{}",
            note["id"].as_str().expect("id")
        ))
        .status,
        404
    );
}

#[test]
fn list_pages_with_limit_and_page() {
    let s = server();
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(create(&s, "tags", json!({"label": format!("tag{i:02}")}))["id"].clone());
    }
    let r = s.get("/api/v1/tags");
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(
        body["data"].as_array().expect("data").len(),
        20,
        "default limit"
    );
    assert_eq!(body["meta"]["limit"], 20);
    let cursor = body["meta"]["nextCursor"]
        .as_str()
        .expect("a cursor by default");
    assert!(
        body["links"]["next"]
            .as_str()
            .expect("next")
            .ends_with(&format!("cursor={cursor}"))
    );

    let mut seen = Vec::new();
    for page in 1..=3 {
        let body = s.get(&format!("/api/v1/tags?limit=10&page={page}")).json();
        seen.extend(
            body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|r| r["id"].clone()),
        );
        assert_eq!(body["links"]["next"].is_null(), page == 3, "page {page}");
    }
    assert_eq!(seen, ids, "every record once, in creation order");

    let f = field_errors(&s.get("/api/v1/tags?limit=101&page=0&bogus=1"));
    assert_eq!(f["limit"], json!(["must be an integer from 1 to 100"]));
    assert!(f.get("page").is_some() && f.get("bogus").is_some());
    assert!(s.get("/api/v1/tags?limit=abc").status == 400);
}

#[test]
fn delete_is_204_then_404_and_bad_ids_are_404() {
    let s = server();
    let tag = create(&s, "tags", json!({"label": "gone"}));
    let path = format!("/api/v1/tags/{}", tag["id"].as_str().expect("id"));
    let r = s.delete(&path);
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert_eq!(s.delete(&path).status, 404);
    assert_eq!(s.get(&path).code(), "NOT_FOUND");
    assert_eq!(s.patch(&path, &json!({"label": "x"})).status, 404);
    assert_eq!(s.get("/api/v1/tags/not-a-uuid").status, 404);
    assert_eq!(
        s.get("/api/v1/tags/%27%3B%20DROP%20TABLE%20tags").status,
        404
    );
    assert_eq!(s.get("/api/v1/tags").status, 200, "still there");
}

#[test]
fn anonymous_callers_get_401_where_a_rule_needs_a_caller() {
    // The built-in blog: creating needs a caller; users are admins-only.
    let s = Project::on(crate::backend()).serve(BIN);
    for (method, path) in [
        ("POST", "/api/v1/posts"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
    ] {
        let r = s.send(|c| {
            c.request(method.parse().expect("method"), s.url(path))
                .json(&json!({"title": "x"}))
        });
        assert_eq!(r.status, 401, "{method} {path}: {}", r.text);
        assert_eq!(r.code(), "UNAUTHORIZED");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // `notes` has no update rule: admins only.
    let s = server();
    let note = create(&s, "notes", json!({"text": "x"}));
    let r = s.patch(
        &format!("/api/v1/notes/{}", note["id"].as_str().expect("id")),
        &json!({"text": "y"}),
    );
    assert_eq!(r.status, 401);
}

#[test]
fn etags_conditional_reads_and_optimistic_concurrency() {
    let s = server();
    let tag = create(&s, "tags", json!({"label": "v1"}));
    let path = format!("/api/v1/tags/{}", tag["id"].as_str().expect("id"));
    let r = s.get(&path);
    assert_eq!(r.header("etag"), Some("\"1\""));
    let r = s.send(|c| c.get(s.url(&path)).header("if-none-match", "\"1\""));
    assert_eq!(r.status, 304);
    assert!(r.text.is_empty());
    assert_eq!(r.header("etag"), Some("\"1\""));
    let r = s.send(|c| c.get(s.url(&path)).header("if-none-match", "\"0\""));
    assert_eq!(r.status, 200);

    // A write that names the current version applies and returns the new ETag.
    let r = s.send(|c| {
        c.patch(s.url(&path))
            .header("if-match", "\"1\"")
            .json(&json!({"label": "v2"}))
    });
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("etag"), Some("\"2\""));
    // A stale one is refused and changes nothing.
    let r = s.send(|c| {
        c.patch(s.url(&path))
            .header("if-match", "\"1\"")
            .json(&json!({"label": "lost"}))
    });
    assert_eq!(r.status, 412, "{}", r.text);
    assert_eq!(r.code(), "PRECONDITION_FAILED");
    let r = s.send(|c| {
        c.patch(s.url(&path))
            .header("if-match", "W/\"2\"")
            .json(&json!({"label": "weak"}))
    });
    assert_eq!(r.status, 412, "weak tags never match If-Match");
    assert_eq!(s.get(&path).json()["data"]["label"], "v2");
    let r = s.send(|c| c.delete(s.url(&path)).header("if-match", "\"1\""));
    assert_eq!(r.status, 412);
    let r = s.send(|c| c.delete(s.url(&path)).header("if-match", "\"2\""));
    assert_eq!(r.status, 204);
    let r = s.send(|c| c.delete(s.url(&path)).header("if-match", "*"));
    assert_eq!(r.status, 404);
}

#[test]
fn extreme_values_are_refused_not_crashed_on() {
    let s = server();
    let f = field_errors(&s.post(
        "/api/v1/items",
        &json!({"title": "far", "due_at": "9999-12-31T23:59:59-01:00"}),
    ));
    assert!(f["due_at"][0].as_str().expect("msg").contains("RFC 3339"));
    let item = create(
        &s,
        "items",
        json!({"title": "near", "due_at": "9999-12-31T23:59:59+01:00", "price": 99.5}),
    );
    assert_eq!(item["due_at"], "9999-12-31T22:59:59.000000Z");
    let f = field_errors(&s.post(
        "/api/v1/items",
        &json!({"title": "big", "count": 1e300, "price": 1e300}),
    ));
    assert_eq!(f["count"], json!(["must be an integer"]));
    assert_eq!(f["price"], json!(["must be at most 99.5"]));
    // A huge many-relation array is refused by its size before anything else is done.
    let ids: Vec<String> = (0..5000)
        .map(|i| format!("0190a5b4-1c2d-7e3f-8a9b-{i:012}"))
        .collect();
    let f = field_errors(&s.post("/api/v1/items", &json!({"title": "many", "tags": ids})));
    assert_eq!(f["tags"], json!(["must have at most 3 items"]));
    let text = "\u{1F980} 'quotes' \"double\" \\ back %_ tab\t";
    let item = create(
        &s,
        "items",
        json!({"title": "odd", "body": text, "meta": {"k": text}}),
    );
    let got = s.get(&format!(
        "/api/v1/items/{}",
        item["id"].as_str().expect("id")
    ));
    assert_eq!(got.json()["data"]["body"], text);
    assert_eq!(got.json()["data"]["meta"]["k"], text);
    // NUL cannot be stored by PostgreSQL, so no store accepts it.
    let f = field_errors(&s.post(
        "/api/v1/items",
        &json!({"title": "nul", "body": "a\u{0}b", "meta": {"k\u{0}": 1}}),
    ));
    assert_eq!(f["body"], json!(["must not contain NUL characters"]));
    assert_eq!(f["meta"], json!(["must not contain NUL characters"]));
}

#[test]
fn a_cascade_deeper_than_the_store_follows_is_422_and_keeps_the_data() {
    // A thousand writes from one client: rate limits are another test's subject.
    let s = Project::on(crate::backend())
        .schema(SCHEMA)
        .env("FERROBASE_RATE_LIMIT__ENABLED", "false")
        .serve(BIN);
    let root = create(&s, "comments", json!({"text": "root"}));
    let mut parent = root["id"].clone();
    for _ in 0..1005 {
        parent = create(&s, "comments", json!({"text": "reply", "parent": parent}))["id"].clone();
    }
    let path = format!("/api/v1/comments/{}", root["id"].as_str().expect("id"));
    let leaf = format!("/api/v1/comments/{}", parent.as_str().expect("id"));
    // Both stores follow the same 1000 levels (the record service deletes each record
    // itself, so that each has its event).
    let r = s.delete(&path);
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "UNPROCESSABLE");
    assert_eq!(s.get(&path).status, 200, "nothing was deleted");
    assert_eq!(s.delete(&leaf).status, 204, "shallower deletes still work");
}

#[test]
fn existence_is_checked_before_the_body_is_read() {
    let s = server();
    let r = s.send(|c| {
        c.post(s.url("/api/v1/nope"))
            .header("content-type", "text/plain")
            .body("x")
    });
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s.send(|c| c.put(s.url("/api/v1/nope")));
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s.send(|c| c.put(s.url("/api/v1/tags")));
    assert_eq!(r.status, 405, "{}", r.text);
    // A refused caller gets 401 whatever the body.
    let s = Project::on(crate::backend()).serve(BIN);
    let r = s.send(|c| {
        c.post(s.url("/api/v1/posts"))
            .header("content-type", "text/plain")
            .body("x")
    });
    assert_eq!(r.status, 401, "{}", r.text);
}
