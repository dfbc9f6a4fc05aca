//! GraphQL through the real binary (SPEC §10): the blog example and the every-type
//! schema end to end; answers equal to REST's for the same callers over random filters
//! (rules, field read rules, hidden fields); a page with two levels of relations in a
//! bounded number of store calls; a subscription over `graphql-transport-ws` receiving a
//! create; limits refusing deep, wide and large operations; persisted documents; the SDL
//! checked by graphql-js. `pg_graphql.rs` runs the same bodies on PostgreSQL.

use std::time::Duration;

use ferrobase_testkit::realtime::Ws;
use ferrobase_testkit::{Backend, Project, Reply, Server, tools};
use serde_json::{Value, json};

/// The store these tests run on; `pg_graphql.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");
const DEADLINE: Duration = Duration::from_secs(20);
const EVERY_TYPE: &str = include_str!("conformance/every_type.toml");

const SCHEMA: &str = r#"
[auth]
roles = ["admin", "member"]
default_role = "member"

[resources.users.fields]
name = { type = "string" }
[resources.users.rules]
list = "@auth.id != null"
view = "@auth.id != null"

[resources.tags.fields]
label = { type = "string", required = true }
[resources.tags.rules]
list = "true"
view = "true"
create = "@auth.id != null"

[resources.posts]
timestamps = true
[resources.posts.fields]
title  = { type = "string", required = true, min_length = 2 }
status = { type = "enum", values = ["draft", "published"], default = "draft" }
score  = { type = "integer", min = 0, max = 100, default = 0 }
author = { type = "relation", resource = "users", required = true, default = "@auth.id" }
note   = { type = "string", read = "author = @auth.id" }
secret = { type = "string", hidden = true }
tags   = { type = "relation", resource = "tags", many = true }
[resources.posts.rules]
list   = "status = 'published' || author = @auth.id || @auth.role = 'admin'"
view   = "status = 'published' || author = @auth.id || @auth.role = 'admin'"
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
"#;

/// A project of these tests on this file's store.
fn project(schema: Option<&str>, extra: &str) -> Project {
    let p = Project::on(crate::backend())
        .settings(&format!(
            "[rate_limit]\ndefault = \"100000/1m\"\nauth = \"100000/1m\"\n{extra}"
        ))
        .env(
            "FERROBASE_SECRET",
            "graphql-test-secret-of-enough-length-0123456789",
        );
    match schema {
        Some(s) => p.schema(s),
        None => p,
    }
}

/// A user with a token: `(token, id)`.
fn register(s: &Server, email: &str) -> (String, String) {
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": email, "password": "correct horse battery", "name": email}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let j = r.json();
    (
        j["data"]["accessToken"].as_str().expect("token").to_owned(),
        j["data"]["user"]["id"].as_str().expect("id").to_owned(),
    )
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

/// Runs a GraphQL operation; the whole response (`data`, `errors`).
fn gql(s: &Server, token: Option<&str>, query: &str, variables: Value) -> Value {
    let r = send(
        s,
        token,
        "POST",
        "/api/v1/graphql",
        Some(json!({"query": query, "variables": variables})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

/// The codes of a response's errors.
fn codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("-").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_blog_example_end_to_end() {
    let s = project(None, "").serve(BIN);
    let (token, user) = register(&s, "ann@example.com");
    let created = gql(
        &s,
        Some(&token),
        "mutation New($input: PostCreateInput!) { createPost(input: $input) { id title status version author { id } } }",
        json!({"input": {"title": "Hello GraphQL", "slug": "hello-graphql", "status": "published"}}),
    );
    assert!(created["errors"].is_null(), "{created}");
    let post = &created["data"]["createPost"];
    let id = post["id"].as_str().expect("id").to_owned();
    assert_eq!(post["status"], "published");
    assert_eq!(post["version"], 1);
    // The blog's users have no rules: nobody but an admin sees them, so the author is
    // null here exactly as REST's `expand=author` leaves it out.
    assert!(post["author"].is_null(), "{post}");
    let rest = send(
        &s,
        Some(&token),
        "GET",
        &format!("/api/v1/posts/{id}"),
        None,
    )
    .json();
    assert_eq!(rest["data"]["author"], user.as_str());

    // Validation: REST's field messages under extensions.fields.
    let bad = gql(
        &s,
        Some(&token),
        "mutation { createPost(input: {title: \"x\", slug: \"Not A Slug\"}) { id } }",
        json!({}),
    );
    assert_eq!(codes(&bad), ["VALIDATION_FAILED"], "{bad}");
    let fields = &bad["errors"][0]["extensions"]["fields"];
    assert!(
        fields["title"].is_array() && fields["slug"].is_array(),
        "{bad}"
    );
    assert!(bad["data"].is_null());

    // A stale ifMatch is refused, the current one applies.
    let stale = gql(
        &s,
        Some(&token),
        "mutation($id: ID!) { updatePost(id: $id, input: {title: \"Renamed\"}, ifMatch: 7) { id } }",
        json!({"id": id}),
    );
    assert_eq!(codes(&stale), ["PRECONDITION_FAILED"], "{stale}");
    let updated = gql(
        &s,
        Some(&token),
        "mutation($id: ID!) { updatePost(id: $id, input: {title: \"Renamed\", content: null}, ifMatch: 1) { title version } }",
        json!({"id": id}),
    );
    assert_eq!(
        updated["data"]["updatePost"],
        json!({"title": "Renamed", "version": 2})
    );

    // Someone else's draft: null plus NOT_FOUND, never a hint that it exists; the rest
    // of the answer stands.
    let draft = gql(
        &s,
        Some(&token),
        "mutation { createPost(input: {title: \"Mine only\", slug: \"mine-only\"}) { id } }",
        json!({}),
    )["data"]["createPost"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (other, _) = register(&s, "bob@example.com");
    let seen = gql(
        &s,
        Some(&other),
        "query Both($a: ID!, $b: ID!) { a: post(id: $a) { title } b: post(id: $b) { title } posts { nodes { id } } }",
        json!({"a": draft, "b": id}),
    );
    assert!(seen["data"]["a"].is_null(), "{seen}");
    assert_eq!(seen["data"]["b"]["title"], "Renamed");
    assert_eq!(codes(&seen), ["NOT_FOUND"]);
    assert_eq!(seen["errors"][0]["path"], json!(["a"]));
    assert_eq!(seen["data"]["posts"]["nodes"], json!([{"id": id}]));

    // Deleting: someone else's is not found, one's own returns its id.
    let refused = gql(
        &s,
        Some(&other),
        "mutation($id: ID!) { deletePost(id: $id) }",
        json!({"id": draft}),
    );
    assert_eq!(codes(&refused), ["NOT_FOUND"], "{refused}");
    let deleted = gql(
        &s,
        Some(&token),
        "mutation($id: ID!) { deletePost(id: $id) }",
        json!({"id": draft}),
    );
    assert_eq!(deleted["data"]["deletePost"], draft.as_str());

    // GET runs queries, never mutations; a browser gets the query page.
    let q = "{ posts(first: 1) { nodes { title } } }";
    let r = send(
        &s,
        Some(&token),
        "GET",
        &format!("/api/v1/graphql?query={}", urlencode(q)),
        None,
    );
    assert_eq!(r.json()["data"]["posts"]["nodes"][0]["title"], "Renamed");
    let r = send(
        &s,
        Some(&token),
        "GET",
        &format!(
            "/api/v1/graphql?query={}",
            urlencode("mutation { deletePost(id: \"x\") }")
        ),
        None,
    );
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.code(), "METHOD_NOT_ALLOWED");
    let page = s.send(|c| {
        c.get(s.url("/api/v1/graphql"))
            .header("accept", "text/html")
    });
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("/api/v1/graphql/page.js"),
        "{}",
        page.text
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'")),
        "the page runs no inline script"
    );
    let script = s.get("/api/v1/graphql/page.js");
    assert_eq!(script.status, 200);
    assert!(
        !script.text.contains("http://") && !script.text.contains("https://"),
        "offline"
    );

    // A malformed request is a REST error; a document that does not parse is a GraphQL
    // error with a code.
    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/graphql",
        Some(json!({"query": 5})),
    );
    assert_eq!((r.status, r.code().as_str()), (400, "BAD_REQUEST"));
    let r = gql(&s, None, "{ posts { ", json!({}));
    assert_eq!(codes(&r), ["BAD_REQUEST"], "{r}");
    let r = gql(&s, None, "{ posts { nodes { nope } } }", json!({}));
    assert_eq!(codes(&r), ["BAD_REQUEST"], "{r}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn every_field_type_reads_back_as_rest_reads_it() {
    let s = project(Some(EVERY_TYPE), "").serve(BIN);
    let author = gql(
        &s,
        None,
        "mutation { createAuthor(input: {name: \"Ada\"}) { id name created_at } }",
        json!({}),
    );
    let author_id = author["data"]["createAuthor"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let tag = |label: &str| {
        gql(
            &s,
            None,
            "mutation($l: String!) { createTag(input: {label: $l}) { id } }",
            json!({"l": label}),
        )["data"]["createTag"]["id"]
            .as_str()
            .expect("tag")
            .to_owned()
    };
    let (t1, t2) = (tag("red"), tag("blue"));
    let input = json!({
        "title": "All types", "slug": "all-types", "body": "long text", "rank": -5,
        "count": 3, "price": 9.5, "ratio": 0.75, "active": false,
        "due_at": "2030-01-02T03:04:05Z", "due_on": "2030-01-02", "kind": "b",
        "contact": "ada@example.com", "homepage": "https://example.com/x",
        "ref": "0192d5c4-1111-7000-8000-000000000001",
        "meta": {"nested": [1, "two", {"three": null}]},
        "author": author_id, "tags": [t1, t2],
    });
    let created = gql(
        &s,
        None,
        "mutation($input: ItemCreateInput!) { createItem(input: $input) { id title slug body rank count price ratio active due_at due_on kind contact homepage ref meta stamp version created_at updated_at author { id name } tags { id label } } }",
        json!({"input": input}),
    );
    assert!(created["errors"].is_null(), "{created}");
    let item = &created["data"]["createItem"];
    let id = item["id"].as_str().expect("id");
    let rest = s.get(&format!("/api/v1/items/{id}")).json()["data"].clone();
    for key in [
        "id",
        "title",
        "slug",
        "body",
        "rank",
        "count",
        "price",
        "ratio",
        "active",
        "due_at",
        "due_on",
        "kind",
        "contact",
        "homepage",
        "ref",
        "meta",
        "stamp",
        "version",
        "created_at",
        "updated_at",
    ] {
        assert_eq!(item[key], rest[key], "{key}: {item} vs {rest}");
    }
    assert_eq!(item["author"], json!({"id": author_id, "name": "Ada"}));
    assert_eq!(rest["tags"], json!([t1, t2]));
    assert_eq!(
        item["tags"],
        json!([{"id": t1, "label": "red"}, {"id": t2, "label": "blue"}])
    );
    // The hidden field is not in the schema at all; the read-only one cannot be written.
    let r = gql(&s, None, "{ items { nodes { secret } } }", json!({}));
    assert_eq!(codes(&r), ["BAD_REQUEST"], "{r}");
    let r = gql(
        &s,
        None,
        "mutation { createItem(input: {title: \"ab\", rank: 1, stamp: \"x\"}) { id } }",
        json!({}),
    );
    assert_eq!(codes(&r), ["BAD_REQUEST"], "{r}");
    // Validation carries REST's messages, per field.
    let r = gql(
        &s,
        None,
        "mutation { createItem(input: {title: \"ab\", rank: 5000, contact: \"nope\"}) { id } }",
        json!({}),
    );
    assert_eq!(codes(&r), ["VALIDATION_FAILED"], "{r}");
    let fields = &r["errors"][0]["extensions"]["fields"];
    assert!(
        fields["rank"].is_array() && fields["contact"].is_array(),
        "{r}"
    );
    // The reverse of a relation, as a connection on the target.
    let r = gql(
        &s,
        None,
        "query($id: ID!) { author(id: $id) { items(first: 5) { edges { node { title } } pageInfo { hasNextPage } } } }",
        json!({"id": author_id}),
    );
    assert_eq!(
        r["data"]["author"]["items"],
        json!({"edges": [{"node": {"title": "All types"}}], "pageInfo": {"hasNextPage": false}})
    );
}

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// A post as GraphQL's answer should look, from REST's read of it: fields the caller
/// may not read are null, relations are objects with their id (`null` where the caller
/// may not see the target).
fn expected_node(rest: &Value, sees_users: bool) -> Value {
    let field = |k: &str| rest.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "id": field("id"),
        "title": field("title"),
        "status": field("status"),
        "score": field("score"),
        "note": field("note"),
        "version": field("version"),
        "created_at": field("created_at"),
        "updated_at": field("updated_at"),
        "author": if sees_users { json!({"id": field("author")}) } else { Value::Null },
        "tags": field("tags").as_array().map(|t| t.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

#[test]
fn answers_equal_rests_for_the_same_callers_over_random_filters() {
    let s = project(Some(SCHEMA), "").serve(BIN);
    let (ann, ann_id) = register(&s, "ann@example.com");
    let (bob, bob_id) = register(&s, "bob@example.com");
    let tag = gql(
        &s,
        Some(&ann),
        "mutation { createTag(input: {label: \"t\"}) { id } }",
        json!({}),
    )["data"]["createTag"]["id"]
        .clone();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut ids = Vec::new();
    for i in 0..24 {
        let (token, author) = if i % 3 == 0 {
            (&bob, &bob_id)
        } else {
            (&ann, &ann_id)
        };
        let status = if rng.next().is_multiple_of(2) {
            "draft"
        } else {
            "published"
        };
        let mut body = json!({
            "title": format!("post {} {}", i, ["alpha", "beta", "gamma"][i % 3]),
            "status": status, "score": rng.next() % 50, "author": author,
            "note": format!("note {i}"), "secret": "s3cret",
        });
        if i % 4 == 0 {
            body["tags"] = json!([tag]);
        }
        let r = send(&s, Some(token), "POST", "/api/v1/posts", Some(body));
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json()["data"]["id"].as_str().expect("id").to_owned());
    }
    let atoms = [
        "status = 'published'".to_owned(),
        "status = 'draft'".to_owned(),
        "score > 20".to_owned(),
        "score <= 10".to_owned(),
        "title ~ 'alpha'".to_owned(),
        format!("author = '{ann_id}'"),
        "author.email = 'bob@example.com'".to_owned(),
        "note = 'note 3'".to_owned(),
        "secret = 's3cret'".to_owned(),
        "nope = 1".to_owned(),
    ];
    let callers: [(Option<&str>, &str); 3] = [
        (None, "anonymous"),
        (Some(&ann), "ann"),
        (Some(&bob), "bob"),
    ];
    let sorts = ["-score,title", "title", "-created_at"];
    let query = "query($f: String, $s: String) { posts(filter: $f, sort: $s, first: 100) { nodes { id title status score note version created_at updated_at author { id } tags { id } } } }";
    for round in 0..40 {
        let (token, who) = *rng.pick(&callers);
        let filter = match rng.next() % 3 {
            0 => rng.pick(&atoms).clone(),
            1 => format!("{} && {}", rng.pick(&atoms), rng.pick(&atoms)),
            _ => format!("({}) || {}", rng.pick(&atoms), rng.pick(&atoms)),
        };
        let sort = *rng.pick(&sorts);
        let rest = send(
            &s,
            token,
            "GET",
            &format!(
                "/api/v1/posts?limit=100&sort={}&filter={}",
                urlencode(sort),
                urlencode(&filter)
            ),
            None,
        );
        let graphql = gql(&s, token, query, json!({"f": filter, "s": sort}));
        let context = format!("round {round}: {who} filter {filter} sort {sort}");
        if rest.status != 200 {
            assert_eq!(
                codes(&graphql),
                [rest.code()],
                "{context}: {graphql} vs {}",
                rest.text
            );
            continue;
        }
        assert!(graphql["errors"].is_null(), "{context}: {graphql}");
        let expected: Vec<Value> = rest.json()["data"]
            .as_array()
            .expect("list")
            .iter()
            .map(|r| expected_node(r, token.is_some()))
            .collect();
        assert_eq!(
            graphql["data"]["posts"]["nodes"],
            json!(expected),
            "{context}"
        );
    }
    // Single reads: the same records found and not found.
    for id in &ids {
        for (token, who) in callers {
            let rest = send(&s, token, "GET", &format!("/api/v1/posts/{id}"), None);
            let graphql = gql(
                &s,
                token,
                "query($id: ID!) { post(id: $id) { id title status score note version created_at updated_at author { id } tags { id } } }",
                json!({"id": id}),
            );
            if rest.status == 200 {
                assert_eq!(
                    graphql["data"]["post"],
                    expected_node(&rest.json()["data"], token.is_some()),
                    "{who} {id}"
                );
            } else {
                assert_eq!(rest.status, 404);
                assert!(graphql["data"]["post"].is_null(), "{who} {id}");
                assert_eq!(codes(&graphql), ["NOT_FOUND"], "{who} {id}");
            }
        }
    }
}

/// The request log's line for the operation named `name`.
fn operation_line(s: &Server, name: &str) -> Value {
    let wanted = format!("query {name}");
    s.logs
        .wait_for(DEADLINE, |l| {
            l["target"] == "ferrobase::request" && l["operation"] == wanted.as_str()
        })
        .unwrap_or_else(|| panic!("no log line for {name}:\n{}", s.logs.text()))
}

#[test]
fn relations_load_one_statement_per_level_whatever_the_page_size() {
    let s = project(Some(SCHEMA), "").serve(BIN);
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(register(&s, &format!("u{i}@example.com")));
    }
    for i in 0..60 {
        let (token, id) = &tokens[i % tokens.len()];
        let body = json!({"title": format!("post {i:02}"), "status": "published", "author": id});
        let r = send(&s, Some(token), "POST", "/api/v1/posts", Some(body));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let token = &tokens[0].0;
    let query = |name: &str, first: u32| {
        format!(
            "query {name} {{ posts(first: {first}, sort: \"title\") {{ edges {{ cursor node {{ title author {{ id email posts(first: 3, sort: \"-title\", count: true) {{ totalCount nodes {{ title author {{ email }} }} pageInfo {{ hasNextPage }} }} }} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        )
    };
    let small = gql(&s, Some(token), &query("Two", 2), json!({}));
    let large = gql(&s, Some(token), &query("Twenty", 20), json!({}));
    assert!(large["errors"].is_null(), "{large}");
    let edges = large["data"]["posts"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 20);
    for edge in edges {
        let author = &edge["node"]["author"];
        let theirs = author["posts"]["nodes"].as_array().expect("their posts");
        assert_eq!(theirs.len(), 3, "{author}");
        assert_eq!(author["posts"]["pageInfo"]["hasNextPage"], true);
        assert_eq!(author["posts"]["totalCount"], 12, "60 posts by 5 authors");
        for p in theirs {
            assert_eq!(
                p["author"]["email"], author["email"],
                "each author's own posts"
            );
        }
        // Each author's newest three by title, as REST lists them.
        let rest = send(
            &s,
            Some(token),
            "GET",
            &format!(
                "/api/v1/posts?sort=-title&limit=3&filter={}",
                urlencode(&format!(
                    "author = '{}'",
                    author["id"].as_str().expect("id")
                ))
            ),
            None,
        )
        .json();
        let rest_titles: Vec<&Value> = rest["data"]
            .as_array()
            .expect("list")
            .iter()
            .map(|p| &p["title"])
            .collect();
        let titles: Vec<&Value> = theirs.iter().map(|p| &p["title"]).collect();
        assert_eq!(titles, rest_titles);
    }
    assert_eq!(
        small["data"]["posts"]["edges"].as_array().map(Vec::len),
        Some(2)
    );
    // Counted, not timed: the page, its authors, their posts and how many, those posts'
    // authors.
    let calls = |name: &str| {
        operation_line(&s, name)["db_calls"]
            .as_u64()
            .expect("db_calls")
    };
    let (two, twenty) = (calls("Two"), calls("Twenty"));
    assert_eq!(
        two, twenty,
        "the number of statements does not grow with the page"
    );
    assert!(
        twenty <= 6,
        "{twenty} store calls for four levels and a count"
    );
    // Cursors walk on exactly as REST's do.
    let end = large["data"]["posts"]["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor");
    let next = gql(
        &s,
        Some(token),
        "query($after: String) { posts(first: 20, sort: \"title\", after: $after) { nodes { title } } }",
        json!({"after": end}),
    );
    assert_eq!(next["data"]["posts"]["nodes"][0]["title"], "post 20");
    let last_edge = edges[19]["cursor"].as_str().expect("edge cursor");
    assert_eq!(last_edge, end, "an edge's cursor is the page's end cursor");
    let wrong = gql(
        &s,
        Some(token),
        "query($after: String) { posts(sort: \"-title\", after: $after) { nodes { title } } }",
        json!({"after": end}),
    );
    assert_eq!(codes(&wrong), ["VALIDATION_FAILED"], "{wrong}");
    assert!(
        wrong["errors"][0]["extensions"]["fields"]["after"].is_array(),
        "{wrong}"
    );
}

#[test]
fn limits_refuse_deep_wide_and_large_operations() {
    let s = project(Some(SCHEMA), "[graphql]\nmax_records = 150\n").serve(BIN);
    let (token, _) = register(&s, "ann@example.com");
    let mut inner = String::from("title");
    for _ in 0..4 {
        inner = format!("author {{ posts(first: 1) {{ nodes {{ {inner} }} }} }}");
    }
    let deep = format!("{{ posts(first: 1) {{ nodes {{ {inner} }} }} }}");
    let r = gql(&s, Some(&token), &deep, json!({}));
    assert_eq!(codes(&r), ["QUERY_TOO_COMPLEX"], "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("deep")
    );
    let wide: String = (0..1100).map(|i| format!("a{i}: __typename ")).collect();
    let r = gql(&s, Some(&token), &format!("{{ {wide} }}"), json!({}));
    assert_eq!(codes(&r), ["QUERY_TOO_COMPLEX"], "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("fields")
    );
    let r = gql(
        &s,
        Some(&token),
        "{ posts(first: 101) { nodes { title } } }",
        json!({}),
    );
    assert_eq!(codes(&r), ["VALIDATION_FAILED"], "{r}");
    // Pages within the limit, but nested: 100 posts × 100 of each author's posts is
    // refused before anything runs, whatever the data; one level fits.
    let nested =
        "{ posts(first: 100) { nodes { author { posts(first: 100) { nodes { title } } } } } }";
    let r = gql(&s, Some(&token), nested, json!({}));
    assert_eq!(codes(&r), ["QUERY_TOO_COMPLEX"], "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("records")
    );
    let r = gql(
        &s,
        Some(&token),
        "{ posts(first: 70) { nodes { author { id } } } }",
        json!({}),
    );
    assert!(r["errors"].is_null(), "{r}");
    // Fragments that spread each other twice: 2^40 fields in a few hundred bytes, sized
    // once each and refused at once.
    let mut bomb = String::from("query Bomb { ...F0 }\n");
    for i in 0..40 {
        bomb.push_str(&format!(
            "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
            n = i + 1
        ));
    }
    bomb.push_str("fragment F40 on Query { __typename }\n");
    let r = gql(&s, None, &bomb, json!({}));
    assert_eq!(codes(&r), ["QUERY_TOO_COMPLEX"], "{r}");
    // Many cheap lists with counts: each is a query of its own.
    let storm: String = (0..30)
        .map(|i| format!("a{i}: posts(first: 1, count: true) {{ totalCount }} "))
        .collect();
    let r = gql(&s, Some(&token), &format!("{{ {storm} }}"), json!({}));
    assert_eq!(codes(&r), ["QUERY_TOO_COMPLEX"], "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("queries")
    );
    // The body limit is the server's, as for REST.
    let huge = "x".repeat(3 << 20);
    let r = send(
        &s,
        Some(&token),
        "POST",
        "/api/v1/graphql",
        Some(json!({"query": huge})),
    );
    assert_eq!(r.status, 413, "{}", r.text);
}

#[test]
fn a_subscription_receives_creates_it_may_see() {
    let s = project(Some(SCHEMA), "").serve(BIN);
    let (ann, ann_id) = register(&s, "ann@example.com");
    let (bob, bob_id) = register(&s, "bob@example.com");
    let url = s.url("/api/v1/graphql").replacen("http://", "ws://", 1);
    let mut ws =
        Ws::connect(&url, &[("sec-websocket-protocol", "graphql-transport-ws")]).expect("upgrade");
    ws.send(&json!({"type": "connection_init", "payload": {"token": bob}}));
    assert_eq!(ws.recv().expect("ack")["type"], "connection_ack");
    let create = |token: &str, author: &str, body: Value| {
        let mut body = body;
        body["author"] = author.into();
        let r = send(&s, Some(token), "POST", "/api/v1/posts", Some(body));
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["data"]["id"].as_str().expect("id").to_owned()
    };
    // Written before the subscription, replayed from the log by `after: 0`: a draft bob
    // may not see, a post the filter skips, one he sees.
    create(&ann, &ann_id, json!({"title": "ann's draft", "score": 90}));
    create(
        &bob,
        &bob_id,
        json!({"title": "low", "score": 1, "status": "published"}),
    );
    let visible = create(
        &ann,
        &ann_id,
        json!({"title": "ann's public", "score": 90, "status": "published", "note": "private"}),
    );
    let subscription = "subscription Mine($f: String, $after: Int) { postEvents(filter: $f, after: $after) { seq op record { id title note author { id } } } }";
    ws.send(&json!({
        "id": "1", "type": "subscribe",
        "payload": {"query": subscription, "variables": {"f": "score >= 10", "after": 0}},
    }));
    let m = ws.recv().expect("event");
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("next"), Some("1")),
        "{m}"
    );
    let event = &m["payload"]["data"]["postEvents"];
    assert_eq!(event["op"], "create");
    assert_eq!(event["record"]["id"], visible.as_str(), "{event}");
    assert_eq!(event["record"]["title"], "ann's public");
    assert!(
        event["record"]["note"].is_null(),
        "ann's note is hers to read: {event}"
    );
    assert_eq!(
        event["record"]["author"]["id"],
        ann_id.as_str(),
        "relations load on events too"
    );
    let seq = event["seq"].as_i64().expect("seq");
    // The replay is done and the subscription live: a new create arrives as it happens.
    let live = create(
        &bob,
        &bob_id,
        json!({"title": "live", "score": 20, "note": "bob's"}),
    );
    let m = ws.recv().expect("live event");
    let event = &m["payload"]["data"]["postEvents"];
    assert_eq!(event["record"]["id"], live.as_str(), "{m}");
    assert_eq!(event["record"]["note"], "bob's", "his own note");
    s.logs
        .wait_for(DEADLINE, |l| l["operation"] == "subscription Mine")
        .expect("the subscription is in the request log");
    // Resuming after a seq replays exactly what came after it.
    ws.send(&json!({"id": "1", "type": "complete"}));
    ws.send(&json!({
        "id": "2", "type": "subscribe",
        "payload": {"query": subscription, "variables": {"f": "score >= 10", "after": seq}},
    }));
    let m = loop {
        let m = ws.recv().expect("replayed");
        if m["type"] == "next" {
            break m;
        }
        assert_eq!(
            (m["type"].as_str(), m["id"].as_str()),
            (Some("complete"), Some("1")),
            "{m}"
        );
    };
    assert_eq!(m["id"], "2", "{m}");
    assert_eq!(
        m["payload"]["data"]["postEvents"]["record"]["id"],
        live.as_str()
    );
    // A bad filter is an error message with the REST code.
    ws.send(&json!({
        "id": "3", "type": "subscribe",
        "payload": {"query": "subscription { postEvents(filter: \"nope = 1\") { seq } }"},
    }));
    let m = ws.recv().expect("error");
    assert_eq!(m["id"], "3", "{m}");
    let text = m.to_string();
    assert!(
        text.contains("INVALID_FILTER") || text.contains("unknown field"),
        "{m}"
    );
}

#[test]
fn the_sdl_passes_graphql_js_and_queries_validate_against_it() {
    let p = project(Some(SCHEMA), "");
    let out = p.run(BIN, &["graphql"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sdl = String::from_utf8(out.stdout).expect("utf-8");
    for wanted in [
        "type Post {",
        "post(id: ID!): Post",
        "PostConnection!",
        "createPost(input: PostCreateInput!): Post!",
        "postEvents(",
        "author: User",
        "tags: [Tag!]!",
    ] {
        assert!(
            sdl.replace(['\t', '\n'], " ").contains(wanted) || sdl.contains(wanted),
            "{wanted} in:\n{sdl}"
        );
    }
    let post_type = sdl
        .split("type Post {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("type Post");
    assert!(
        !post_type.contains("secret"),
        "hidden fields are never read: {post_type}"
    );
    let documents = [
        "query Page($after: String) { posts(first: 20, after: $after, filter: \"status = 'published'\", sort: \"-created_at\", count: true) { totalCount edges { cursor node { id title status score note version created_at author { id name posts(first: 2) { nodes { id } } } tags { label } } } pageInfo { hasNextPage endCursor startCursor hasPreviousPage } } }",
        "query One($id: ID!) { post(id: $id) { id title } comment(id: $id) { post { title } } }",
        "mutation New($input: PostCreateInput!) { createPost(input: $input) { id } }",
        "mutation Edit($id: ID!) { updatePost(id: $id, input: {title: \"x\", status: draft}, ifMatch: 2) { version } deletePost(id: $id, ifMatch: 3) }",
        "subscription Watch { postEvents(filter: \"score > 1\", after: 10) { seq op record { id title } } }",
        "query Wrong { posts { nodes { secret } } }",
    ];
    let Some(check) = tools::graphql_check(BIN, &sdl, &documents) else {
        return;
    };
    let printed = check.schema.expect("graphql-js builds the schema");
    assert!(printed.contains("type Post"), "{printed}");
    for (doc, errors) in documents.iter().zip(&check.documents).take(5) {
        assert!(errors.is_empty(), "{doc}: {errors:?}");
    }
    assert!(
        check.documents[5].iter().any(|e| e.contains("secret")),
        "{:?}",
        check.documents[5]
    );
}

#[test]
fn persisted_only_runs_the_project_documents_and_introspection_can_be_off() {
    let text = "query Titles { posts(first: 5) { nodes { title } } }\n";
    let p = project(
        Some(SCHEMA),
        "[graphql]\npersisted_only = true\nintrospection = false\n",
    )
    .file("graphql/titles.graphql", text);
    let s = p.serve(BIN);
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let persisted = |hash: &str, query: Option<&str>| {
        let mut body =
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        if let Some(q) = query {
            body["query"] = q.into();
        }
        send(&s, None, "POST", "/api/v1/graphql", Some(body))
    };
    let r = persisted(&hash, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["data"]["posts"]["nodes"].is_array(), "{}", r.text);
    let r = persisted(&"0".repeat(64), None);
    assert_eq!(
        codes(&r.json()),
        ["PERSISTED_QUERY_NOT_FOUND"],
        "{}",
        r.text
    );
    let r = send(
        &s,
        None,
        "POST",
        "/api/v1/graphql",
        Some(json!({"query": "{ posts { nodes { title } } }"})),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "FORBIDDEN"),
        "{}",
        r.text
    );
    s.logs
        .wait_for(DEADLINE, |l| l["operation"] == "query Titles")
        .expect("the operation is named in the request log");
    // Over the WebSocket too: text is refused, the hash runs.
    let url = s.url("/api/v1/graphql").replacen("http://", "ws://", 1);
    let mut ws =
        Ws::connect(&url, &[("sec-websocket-protocol", "graphql-transport-ws")]).expect("upgrade");
    ws.send(&json!({"type": "connection_init"}));
    assert_eq!(ws.recv().expect("ack")["type"], "connection_ack");
    ws.send(&json!({"id": "t", "type": "subscribe", "payload": {"query": "{ posts { nodes { title } } }"}}));
    let m = ws.recv().expect("refusal");
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["payload"][0]["extensions"]["code"], "FORBIDDEN", "{m}");
    ws.send(&json!({
        "id": "h", "type": "subscribe",
        "payload": {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}},
    }));
    let m = ws.recv().expect("result");
    assert_eq!(m["type"], "next", "{m}");
    assert!(m["payload"]["data"]["posts"]["nodes"].is_array(), "{m}");

    // Introspection off (as in production by default): __schema is refused.
    let s = project(Some(SCHEMA), "[graphql]\nintrospection = false\n").serve(BIN);
    let r = gql(&s, None, "{ __schema { types { name } } }", json!({}));
    assert!(!codes(&r).is_empty(), "{r}");
    assert!(
        r["data"].is_null() || r["data"]["__schema"].is_null(),
        "{r}"
    );
    let s = project(Some(SCHEMA), "").serve(BIN);
    let r = gql(&s, None, "{ __schema { queryType { name } } }", json!({}));
    assert_eq!(r["data"]["__schema"]["queryType"]["name"], "Query", "{r}");
}

#[test]
fn subscription_ids_are_unique_and_a_revoked_key_ends_the_connection() {
    let s = project(Some(SCHEMA), "[realtime]\nheartbeat = \"1s\"\n").serve(BIN);
    let (token, _) = register(&s, "ann@example.com");
    let r = send(
        &s,
        Some(&token),
        "POST",
        "/api/v1/auth/api-keys",
        Some(json!({"name": "watcher", "scopes": ["posts:read"]})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json()["data"]["key"].as_str().expect("key").to_owned();
    let key_id = r.json()["data"]["id"].as_str().expect("id").to_owned();
    let url = s.url("/api/v1/graphql").replacen("http://", "ws://", 1);
    let open = || {
        let mut ws = Ws::connect(&url, &[("sec-websocket-protocol", "graphql-transport-ws")])
            .expect("upgrade");
        ws.send(&json!({"type": "connection_init", "payload": {"token": key}}));
        assert_eq!(ws.recv().expect("ack")["type"], "connection_ack");
        ws
    };
    let subscribe = json!({
        "id": "same", "type": "subscribe",
        "payload": {"query": "subscription { postEvents { seq } }"},
    });
    let mut ws = open();
    ws.send(&subscribe);
    ws.send(&subscribe);
    assert_eq!(
        ws.close_code(),
        Some(4409),
        "a second subscriber under one id"
    );

    // The protocol's other refusals: no subscribe before the acknowledgement, no
    // message that is not JSON.
    let connect = || {
        Ws::connect(&url, &[("sec-websocket-protocol", "graphql-transport-ws")]).expect("upgrade")
    };
    let mut ws = connect();
    ws.send(&subscribe);
    assert_eq!(ws.close_code(), Some(4401));
    let mut ws = connect();
    ws.send_text("{not json");
    assert_eq!(ws.close_code(), Some(4400));

    // Each operation on a connection has a budget of its own; a quiet connection is
    // pinged by the server and stays open.
    let mut ws = open();
    for i in 0..3 {
        ws.send(&json!({
            "id": format!("q{i}"), "type": "subscribe",
            "payload": {"query": "{ posts(first: 100) { nodes { id } } }"},
        }));
        let m = loop {
            let m = ws.recv().expect("result");
            if m["type"] != "ping" && m["type"] != "complete" {
                break m;
            }
        };
        assert_eq!(m["type"], "next", "{m}");
        assert_eq!(m["id"], format!("q{i}"), "{m}");
        assert!(m["payload"]["errors"].is_null(), "{m}");
    }
    let ping = loop {
        let m = ws.recv().expect("message");
        if m["type"] == "ping" {
            break m;
        }
    };
    assert_eq!(ping, json!({"type": "ping"}));

    let mut ws = open();
    ws.send(&subscribe);
    let r = send(
        &s,
        Some(&token),
        "DELETE",
        &format!("/api/v1/auth/api-keys/{key_id}"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(ws.close_code(), Some(4403), "the key was revoked");
    // A bad token is refused at connection_init.
    let mut ws =
        Ws::connect(&url, &[("sec-websocket-protocol", "graphql-transport-ws")]).expect("upgrade");
    ws.send(&json!({"type": "connection_init", "payload": {"token": "not-a-token"}}));
    assert_eq!(ws.close_code(), Some(4403));
}

#[test]
fn operations_over_the_websocket_count_against_the_rate_limit() {
    let s = Project::on(crate::backend())
        .schema(SCHEMA)
        .settings("[rate_limit]\ndefault = \"4/1m\"\n")
        .serve(BIN);
    let url = s.url("/api/v1/graphql").replacen("http://", "ws://", 1);
    // The upgrade itself is one request.
    let mut ws =
        Ws::connect(&url, &[("sec-websocket-protocol", "graphql-transport-ws")]).expect("upgrade");
    ws.send(&json!({"type": "connection_init"}));
    assert_eq!(ws.recv().expect("ack")["type"], "connection_ack");
    let mut codes_seen = Vec::new();
    for i in 0..4 {
        ws.send(&json!({
            "id": format!("q{i}"), "type": "subscribe",
            "payload": {"query": "{ posts(first: 1) { nodes { id } } }"},
        }));
        let m = loop {
            let m = ws.recv().expect("answer");
            if m["type"] != "complete" {
                break m;
            }
        };
        codes_seen.push(match m["type"].as_str() {
            Some("next") => "ok".to_owned(),
            _ => m["payload"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        });
    }
    assert_eq!(codes_seen, ["ok", "ok", "ok", "RATE_LIMITED"]);
}
