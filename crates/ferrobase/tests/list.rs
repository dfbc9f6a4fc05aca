//! The list API over HTTP: filter, sort, fields, expand, count, cursors and pages.

use std::cmp::Ordering;

use ferrobase_testkit::{Backend, Project, Reply, Server};
use proptest::prelude::*;
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

/// A server for tests that send thousands of requests from one client: rate limits are
/// another test's subject.
fn unlimited_server() -> Server {
    Project::on(crate::backend())
        .schema(SCHEMA)
        .env("FERROBASE_RATE_LIMIT__ENABLED", "false")
        .serve(BIN)
}

fn create(s: &Server, resource: &str, body: Value) -> Value {
    let r = s.post(&format!("/api/v1/{resource}"), &body);
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"].clone()
}

fn list(s: &Server, resource: &str, params: &[(&str, &str)]) -> Reply {
    s.send(|c| c.get(s.url(&format!("/api/v1/{resource}"))).query(params))
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Follows `nextCursor` to the end and returns every id seen, in order.
fn walk(s: &Server, params: &[(&str, &str)]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        if let Some(c) = &cursor {
            p.push(("cursor", c));
        }
        let r = list(s, "rows", &p);
        assert_eq!(r.status, 200, "{}", r.text);
        let body = r.json();
        seen.extend(ids(&body));
        match body["meta"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return seen,
        }
    }
}

#[test]
fn cursor_walks_return_every_row_once_in_order_despite_ties() {
    let s = unlimited_server();
    let labels = [None, Some("b"), Some("a"), Some("c"), None, Some("a")];
    let mut rows: Vec<(String, i64, Option<&str>)> = Vec::new();
    for i in 0..3000i64 {
        let label = labels[(i % 6) as usize];
        let row = create(&s, "rows", json!({"n": i % 7, "label": label}));
        rows.push((row["id"].as_str().expect("id").to_owned(), i % 7, label));
    }

    // n descending, ties broken by id descending.
    let mut expected = rows.clone();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let got = walk(&s, &[("sort", "-n"), ("limit", "100")]);
    assert_eq!(got.len(), 3000);
    assert_eq!(
        got,
        expected.iter().map(|r| r.0.clone()).collect::<Vec<_>>()
    );

    // A nullable key first (nulls sort first ascending), then n descending, then id.
    let mut expected = rows.clone();
    expected.sort_by(|a, b| {
        let label = match (a.2, b.2) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(y),
        };
        label.then(b.1.cmp(&a.1)).then(b.0.cmp(&a.0))
    });
    let got = walk(&s, &[("sort", "label,-n"), ("limit", "77")]);
    assert_eq!(
        got,
        expected.iter().map(|r| r.0.clone()).collect::<Vec<_>>()
    );

    // With a filter, the walk covers exactly the matching rows.
    let got = walk(
        &s,
        &[
            ("filter", "n >= 5 && label != null"),
            ("sort", "-n"),
            ("limit", "50"),
        ],
    );
    let expected = rows.iter().filter(|r| r.1 >= 5 && r.2.is_some()).count();
    assert_eq!(got.len(), expected);
    let unique: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), expected, "no row twice");
}

#[test]
fn bad_cursors_are_400_and_good_ones_survive_restarts() {
    let s = server();
    for i in 0..5 {
        create(&s, "rows", json!({"n": i}));
    }
    let first = list(&s, "rows", &[("sort", "-n"), ("limit", "2")]).json();
    let cursor = first["meta"]["nextCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let second = list(
        &s,
        "rows",
        &[("sort", "-n"), ("limit", "2"), ("cursor", &cursor)],
    );
    assert_eq!(second.status, 200);

    let (body, tag) = cursor.split_once('.').expect("dot");
    let flipped = {
        let mut b: Vec<u8> = body.as_bytes().to_vec();
        b[5] = if b[5] == b'A' { b'B' } else { b'A' };
        format!("{}.{tag}", String::from_utf8(b).expect("ascii"))
    };
    let other = Project::on(crate::backend()).schema(SCHEMA).serve(BIN);
    for i in 0..3 {
        create(&other, "rows", json!({"n": i}));
    }
    let foreign =
        list(&other, "rows", &[("sort", "-n"), ("limit", "1")]).json()["meta"]["nextCursor"]
            .as_str()
            .expect("cursor")
            .to_owned();
    for bad in [
        flipped.as_str(),
        "garbage",
        "",
        "a.b",
        foreign.as_str(),
        &format!("{body}.{}", &tag[2..]),
    ] {
        let r = list(&s, "rows", &[("sort", "-n"), ("cursor", bad)]);
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.code(), "VALIDATION_FAILED");
        assert_eq!(
            r.json()["error"]["details"]["fields"]["cursor"],
            json!(["is not a valid cursor"])
        );
    }
    // A genuine cursor for another sort or resource is refused too.
    let r = list(&s, "rows", &[("sort", "n"), ("cursor", &cursor)]);
    assert_eq!(r.status, 400);
    assert!(r.text.contains("different resource or sort"), "{}", r.text);
    let r = list(&s, "tags", &[("sort", "-n"), ("cursor", &cursor)]);
    assert_eq!(r.status, 400);
    let r = list(
        &s,
        "rows",
        &[("sort", "-n"), ("cursor", &cursor), ("page", "2")],
    );
    assert_eq!(r.status, 400, "cursor and page together");

    // Same data directory, same secret: the cursor still works after a restart.
    let s = s.into_project().serve(BIN);
    let again = list(
        &s,
        "rows",
        &[("sort", "-n"), ("limit", "2"), ("cursor", &cursor)],
    );
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(ids(&again.json()), ids(&second.json()));
}

#[test]
fn filter_sort_fields_and_count() {
    let s = server();
    let ann = create(&s, "authors", json!({"name": "Ann"}));
    let bob = create(&s, "authors", json!({"name": "Bob"}));
    let rust = create(&s, "tags", json!({"label": "Rust"}));
    let go = create(&s, "tags", json!({"label": "go"}));
    let a = create(
        &s,
        "items",
        json!({"title": "Alpha 100", "count": 3, "author": ann["id"], "tags": [rust["id"]], "kind": "a"}),
    );
    let b = create(
        &s,
        "items",
        json!({"title": "Beta", "count": 7, "author": bob["id"], "tags": [go["id"], rust["id"]], "kind": "b"}),
    );
    let c = create(
        &s,
        "items",
        json!({"title": "Gamma", "count": 5, "kind": "b", "price": 2.5}),
    );

    let q = |filter: &str| -> Vec<String> {
        let r = list(&s, "items", &[("filter", filter), ("sort", "title")]);
        assert_eq!(r.status, 200, "{filter}: {}", r.text);
        ids(&r.json())
    };
    let id = |v: &Value| v["id"].as_str().expect("id").to_owned();
    assert_eq!(q("count > 4"), vec![id(&b), id(&c)]);
    assert_eq!(q("author.name = 'Ann'"), vec![id(&a)]);
    assert_eq!(
        q("tags.label ~ 'RUST'"),
        vec![id(&a), id(&b)],
        "any tag, case-insensitive"
    );
    assert_eq!(q("!(tags.label = 'go')"), vec![id(&a), id(&c)]);
    assert_eq!(q("title ~ 'A 1'"), vec![id(&a)]);
    assert_eq!(q("title ~ '%'"), Vec::<String>::new(), "% is literal");
    assert_eq!(q("kind in ('b') && price = null"), vec![id(&b)]);
    assert_eq!(q("price != null || author = null"), vec![id(&c)]);
    assert_eq!(
        q(&format!("author = '{}'", ann["id"].as_str().expect("id"))),
        vec![id(&a)]
    );
    assert_eq!(
        q("created_at <= @now && created_at > @now - 1h"),
        vec![id(&a), id(&b), id(&c)]
    );

    let r = list(
        &s,
        "items",
        &[
            ("sort", "-count"),
            ("fields", "title,count"),
            ("count", "true"),
            ("limit", "2"),
        ],
    );
    let body = r.json();
    assert_eq!(
        body["data"],
        json!([{"title": "Beta", "count": 7}, {"title": "Gamma", "count": 5}])
    );
    assert_eq!(body["meta"]["total"], 3);
    assert_eq!(body["meta"]["limit"], 2);

    let r = list(
        &s,
        "items",
        &[
            ("expand", "author,tags"),
            ("sort", "title"),
            ("fields", "id,title"),
        ],
    );
    let body = r.json();
    assert_eq!(body["data"][0]["expand"]["author"]["name"], "Ann");
    assert_eq!(body["data"][1]["expand"]["tags"][0]["label"], "go");
    assert_eq!(
        body["data"][1]["expand"]["tags"][1]["label"], "Rust",
        "link order kept"
    );
    assert_eq!(body["data"][2]["expand"]["author"], Value::Null);
    assert!(body["data"][0].get("count").is_none(), "projection");
}

#[test]
fn nested_expand_follows_relations_three_levels_deep() {
    let s = server();
    let root = create(&s, "comments", json!({"text": "root"}));
    let mid = create(&s, "comments", json!({"text": "mid", "parent": root["id"]}));
    let leaf = create(&s, "comments", json!({"text": "leaf", "parent": mid["id"]}));
    let deep = create(
        &s,
        "comments",
        json!({"text": "deep", "parent": leaf["id"]}),
    );
    let r = list(
        &s,
        "comments",
        &[
            (
                "filter",
                &format!("id = '{}'", deep["id"].as_str().expect("id")),
            ),
            ("expand", "parent.parent.parent"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.json()["data"][0];
    assert_eq!(d["expand"]["parent"]["text"], "leaf");
    assert_eq!(d["expand"]["parent"]["expand"]["parent"]["text"], "mid");
    assert_eq!(
        d["expand"]["parent"]["expand"]["parent"]["expand"]["parent"]["text"],
        "root"
    );
    let r = list(&s, "comments", &[("expand", "parent.parent.parent.parent")]);
    assert_eq!(r.status, 400, "four levels is too deep");
}

#[test]
fn bad_parameters_are_400_with_a_position_or_the_allowed_names() {
    let s = server();
    let r = list(&s, "items", &[("filter", "count > 'x'")]);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.code(), "INVALID_FILTER");
    let r = list(&s, "items", &[("filter", "title = 'a' && colour = 'red'")]);
    let body = r.json();
    assert_eq!(body["error"]["code"], "INVALID_FILTER");
    assert_eq!(body["error"]["details"]["position"], 15);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("position 15")
    );
    assert!(
        body["error"]["details"]["allowed"]
            .as_array()
            .expect("allowed")
            .contains(&json!("title"))
    );
    assert!(
        !body["error"]["details"]["allowed"]
            .as_array()
            .expect("allowed")
            .contains(&json!("secret")),
        "hidden fields are not offered"
    );
    for filter in [
        "secret = 'x'",
        "internal = 'x'",
        "title ==",
        "(",
        "meta ~ 'a'",
        "active > true",
        "kind = 'z'",
        "@body.title = 'x'",
        &"a".repeat(5000),
    ] {
        let r = list(&s, "items", &[("filter", filter)]);
        assert_eq!(r.status, 400, "{filter}: {}", r.text);
        assert_eq!(r.code(), "INVALID_FILTER", "{filter}");
    }
    for (key, value) in [
        ("sort", "secret"),
        ("sort", "meta"),
        ("sort", "tags"),
        ("sort", "title,title"),
        ("fields", "secret"),
        ("expand", "title"),
        ("limit", "0"),
        ("count", "yes"),
        ("frobnicate", "1"),
    ] {
        let r = list(&s, "items", &[(key, value)]);
        assert_eq!(r.status, 400, "{key}={value}: {}", r.text);
        assert_eq!(r.code(), "VALIDATION_FAILED");
        assert!(
            r.json()["error"]["details"]["fields"][key].is_array(),
            "{key}: {}",
            r.text
        );
    }
}

fn escape(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[test]
fn arbitrary_literals_never_change_the_query_or_cause_a_500() {
    let s = unlimited_server();
    let decoys = ["", "x", "%", "_", "' || '1'='1", "\\", "a%b"];
    for d in decoys {
        create(&s, "authors", json!({"name": format!("{d}..")}));
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 150,
        ..ProptestConfig::default()
    });
    runner
        .run(&("\\PC{2,12}|[%_'\"\\\\ a]{2,8}"), |text| {
            let mine = create(&s, "authors", json!({"name": text}));
            let r = list(
                &s,
                "authors",
                &[
                    ("filter", &format!("name = {}", escape(&text))),
                    ("limit", "100"),
                ],
            );
            prop_assert_eq!(r.status, 200, "{}", r.text);
            let found = ids(&r.json());
            prop_assert!(found.contains(&mine["id"].as_str().expect("id").to_owned()));
            let others = r.json()["data"]
                .as_array()
                .expect("data")
                .iter()
                .filter(|x| x["name"] != json!(text))
                .count();
            prop_assert_eq!(others, 0, "only exact matches for {:?}", text);
            // The same text spliced in raw is either a valid filter or a 400, never a 500.
            let raw = list(&s, "authors", &[("filter", &format!("name = '{text}'"))]);
            prop_assert!(
                raw.status == 200 || raw.status == 400,
                "{}: {}",
                raw.status,
                raw.text
            );
            let contains = list(
                &s,
                "authors",
                &[
                    ("filter", &format!("name ~ {}", escape(&text))),
                    ("limit", "100"),
                ],
            );
            prop_assert_eq!(contains.status, 200);
            for row in contains.json()["data"].as_array().expect("data") {
                let name = row["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                prop_assert!(
                    name.contains(&text.to_ascii_lowercase()),
                    "{:?} does not contain {:?}",
                    name,
                    text
                );
            }
            Ok(())
        })
        .expect("property holds");
}
