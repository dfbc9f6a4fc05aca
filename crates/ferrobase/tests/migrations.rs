//! Migrations through the real binary (SPEC §9): `migrate create|plan|apply|status`,
//! changes that keep data, refusals, development and production start-up, scaffolding.

use std::process::Output;

use ferrobase_testkit::{Backend, Project, Server};
use serde_json::{Value, json};

/// The store these tests run on; `pg_migrations.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const V1: &str = r#"
# The notes of the team. (This comment must survive `api add`.)
[resources.notes]
timestamps = true
[resources.notes.fields]
title = { type = "string", required = true }
body = { type = "text" }
[resources.notes.rules]
list = "true"
view = "true"
create = "true"
update = "true"
delete = "true"
"#;

/// V1 with `title` renamed, a new field and an index, a many relation, `body` kept.
const V2: &str = r#"
[resources.notes]
timestamps = true
[resources.notes.fields]
headline = { type = "string", required = true, renamed_from = "title" }
body = { type = "text" }
priority = { type = "integer" }
related = { type = "relation", resource = "notes", many = true }
[resources.notes.indexes]
by_priority = ["-priority"]
[resources.notes.rules]
list = "true"
view = "true"
create = "true"
update = "true"
delete = "true"
"#;

fn run(project: &Project, args: &[&str]) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = project.run_bounded(BIN, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().unwrap_or(-1), text)
}

fn ok(project: &Project, args: &[&str]) -> String {
    let (code, text) = run(project, args);
    assert_eq!(code, 0, "ferrobase {args:?} failed:\n{text}");
    text
}

fn note(s: &Server, body: Value) -> String {
    let r = s.post("/api/v1/notes", &body);
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["data"]["id"].as_str().expect("id").to_owned()
}

/// A project on V1 with its first migration applied and two notes in it.
fn seeded() -> (Project, Vec<String>) {
    let project = Project::on(crate::backend()).schema(V1);
    ok(&project, &["migrate", "create", "init"]);
    ok(&project, &["migrate", "apply"]);
    let s = project.serve(BIN);
    let ids = vec![
        note(&s, json!({"title": "first", "body": "kept"})),
        note(&s, json!({"title": "second"})),
    ];
    (s.into_project(), ids)
}

/// The names of the indexes on a table, read from the database itself.
fn indexes(project: &Project, table: &str) -> Vec<String> {
    match project.database_url() {
        Some(url) => {
            let mut client = ferrobase_testkit::postgres::Client::connect(
                url,
                ferrobase_testkit::postgres::NoTls,
            )
            .expect("connect");
            client
                .query(
                    "SELECT indexname FROM pg_indexes WHERE tablename = $1",
                    &[&table],
                )
                .expect("indexes")
                .iter()
                .map(|r| r.get(0))
                .collect()
        }
        None => {
            let conn =
                rusqlite::Connection::open(project.path().join("data/ferrobase.db")).expect("open");
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?")
                .expect("prepare");
            stmt.query_map([table], |r| r.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        }
    }
}

#[test]
fn renames_new_fields_indexes_and_many_relations_keep_the_data() {
    let (project, ids) = seeded();
    let project = project.schema(V2);
    let (_, plan) = run(&project, &["migrate", "plan"]);
    assert!(
        plan.contains("schema.toml changes no migration makes yet"),
        "{plan}"
    );
    let created = ok(&project, &["migrate", "create", "second"]);
    for expected in [
        "rename field notes.title to headline",
        "add field notes.priority (integer)",
        "add field notes.related (relation)",
        "create index notes.by_priority (-priority)",
    ] {
        assert!(created.contains(expected), "{expected} in {created}");
    }
    let plan = ok(&project, &["migrate", "plan"]);
    assert!(plan.contains("-- migration"), "{plan}");
    assert!(
        plan.contains("RENAME COLUMN \"title\" TO \"headline\""),
        "the SQL of the configured database: {plan}"
    );
    ok(&project, &["migrate", "apply"]);
    let status = ok(&project, &["migrate", "status"]);
    assert_eq!(status.matches("applied ").count(), 2, "{status}");
    assert!(!status.contains("pending"), "{status}");
    assert!(
        indexes(&project, "notes")
            .iter()
            .any(|i| i == "ix__notes__by_priority"),
        "{:?}",
        indexes(&project, "notes")
    );

    let s = project.serve(BIN);
    let first = s.get(&format!("/api/v1/notes/{}", ids[0])).json()["data"].clone();
    assert_eq!(first["headline"], "first", "renamed, data kept");
    assert_eq!(first["body"], "kept");
    assert_eq!(first["priority"], Value::Null);
    assert!(first.get("title").is_none());
    let r = s.patch(
        &format!("/api/v1/notes/{}", ids[1]),
        &json!({"priority": 3, "related": [ids[0]]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = s.get("/api/v1/notes?sort=-priority&expand=related").json();
    assert_eq!(listed["data"][0]["headline"], "second");
    assert_eq!(
        listed["data"][0]["expand"]["related"][0]["headline"],
        "first"
    );
    let r = s.post("/api/v1/notes", &json!({"title": "old name"}));
    assert_eq!(r.status, 400, "the old name is gone: {}", r.text);
}

/// The path every project takes: `serve` creates the tables (no migration file yet), the
/// schema changes, `migrate` takes it from there; the files then build the same tables
/// on a fresh database.
#[test]
fn a_database_that_serve_created_evolves_with_migrate() {
    let project = Project::on(crate::backend()).schema(V1);
    let s = project.serve(BIN);
    let ids = [
        note(&s, json!({"title": "first", "body": "kept"})),
        note(&s, json!({"title": "second"})),
    ];
    let project = s.into_project().schema(V2);

    let status = ok(&project, &["migrate", "status"]);
    assert!(
        status.contains("the database holds changes no migration file records"),
        "{status}"
    );
    let unwritten = &status[status.find("schema.toml has changes").expect(&status)..];
    assert!(
        unwritten.contains("rename field notes.title to headline"),
        "{status}"
    );
    assert!(!unwritten.contains("create resource"), "{status}");

    let plan = ok(&project, &["migrate", "plan"]);
    assert!(
        plan.contains("RENAME COLUMN \"title\" TO \"headline\""),
        "{plan}"
    );
    assert!(!plan.contains("CREATE TABLE \"notes\""), "{plan}");

    let created = ok(&project, &["migrate", "create", "evolve"]);
    assert!(created.contains("_evolve_baseline.toml"), "{created}");
    assert!(
        created.contains("rename field notes.title to headline"),
        "{created}"
    );
    let applied = ok(&project, &["migrate", "apply"]);
    assert_eq!(applied.matches("applied ").count(), 2, "{applied}");
    let status = ok(&project, &["migrate", "status"]);
    assert_eq!(status.matches("applied ").count(), 2, "{status}");
    assert!(!status.contains("pending"), "{status}");
    assert!(!status.contains("no migration"), "{status}");
    assert!(
        ok(&project, &["migrate", "plan"]).contains("-- nothing pending"),
        "nothing left to do"
    );
    assert!(
        indexes(&project, "notes")
            .iter()
            .any(|i| i == "ix__notes__by_priority")
    );

    let s = project.serve(BIN);
    let first = s.get(&format!("/api/v1/notes/{}", ids[0])).json()["data"].clone();
    assert_eq!(first["headline"], "first", "renamed, data kept");
    assert_eq!(first["body"], "kept");
    let r = s.patch(
        &format!("/api/v1/notes/{}", ids[1]),
        &json!({"priority": 2, "related": [ids[0]]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let migrations = s.path("migrations");
    let shown = shape(&s.get("/api/v1/notes?sort=created_at&expand=related").json());

    // The same files build the same API on a fresh database.
    let fresh = Project::on(crate::backend()).schema(V2);
    std::fs::create_dir_all(fresh.path().join("migrations")).expect("mkdir");
    for entry in std::fs::read_dir(&migrations).expect("migrations") {
        let entry = entry.expect("entry");
        std::fs::copy(
            entry.path(),
            fresh.path().join("migrations").join(entry.file_name()),
        )
        .expect("copy");
    }
    drop(s);
    let applied = ok(&fresh, &["migrate", "apply"]);
    assert_eq!(applied.matches("applied ").count(), 2, "{applied}");
    let f = fresh.serve(BIN);
    let a = note(&f, json!({"headline": "first", "body": "kept"}));
    let b = note(&f, json!({"headline": "second"}));
    let r = f.patch(
        &format!("/api/v1/notes/{b}"),
        &json!({"priority": 2, "related": [a]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let again = shape(&f.get("/api/v1/notes?sort=created_at&expand=related").json());
    assert_eq!(shown, again, "the same records through the same API");
}

#[test]
fn tightening_a_constraint_is_refused_while_rows_violate_it() {
    let (project, ids) = seeded();
    let tight = V1.replace(
        "title = { type = \"string\", required = true }",
        "title = { type = \"string\", required = true, max_length = 5 }",
    );
    let project = project.schema(&tight);
    ok(&project, &["migrate", "create", "short_titles"]);
    let (code, text) = run(&project, &["migrate", "apply"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("1 existing row would break it (must be at most 5 characters)"),
        "{text}"
    );
    assert!(ok(&project, &["migrate", "status"]).contains("pending"));

    // A development server refuses it too (not additive), naming it.
    let (code, text) = run(&project, &["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("change field notes.title"), "{text}");

    // Unique on duplicate values: refused with the count.
    let unique = V1.replace(
        "body = { type = \"text\" }",
        "body = { type = \"text\", unique = true }",
    );
    let other = Project::on(crate::backend()).schema(V1);
    ok(&other, &["migrate", "create", "init"]);
    ok(&other, &["migrate", "apply"]);
    let s = other.serve(BIN);
    note(&s, json!({"title": "a", "body": "same"}));
    note(&s, json!({"title": "b", "body": "same"}));
    let other = s.into_project().schema(&unique);
    ok(&other, &["migrate", "create", "unique_body"]);
    let (code, text) = run(&other, &["migrate", "apply"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("2 existing rows share a value"), "{text}");

    // Once the data fits, the same migration applies.
    let project = {
        let project = project.schema(V1);
        // Serving V1 again needs the pending file out of the way for a moment.
        let pending: Vec<_> = std::fs::read_dir(project.path().join("migrations"))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().contains("short_titles"))
            .collect();
        let saved = std::fs::read_to_string(&pending[0]).expect("read");
        std::fs::remove_file(&pending[0]).expect("remove");
        let s = project.serve(BIN);
        let r = s.patch(
            &format!("/api/v1/notes/{}", ids[1]),
            &json!({"title": "2nd"}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let project = s.into_project();
        std::fs::write(&pending[0], saved).expect("restore");
        project.schema(&tight)
    };
    ok(&project, &["migrate", "apply"]);
    let s = project.serve(BIN);
    let r = s.post("/api/v1/notes", &json!({"title": "far too long"}));
    assert_eq!(r.status, 400, "the new constraint holds: {}", r.text);
}

#[test]
fn dropping_a_field_needs_the_flag() {
    let (project, ids) = seeded();
    let dropped = V1.replace("body = { type = \"text\" }\n", "");
    let project = project.schema(&dropped);
    let created = ok(&project, &["migrate", "create", "drop_body"]);
    assert!(created.contains("DESTRUCTIVE"), "{created}");
    let (code, text) = run(&project, &["migrate", "apply"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("drop field notes.body"), "{text}");
    assert!(text.contains("--allow-destructive"), "{text}");
    ok(&project, &["migrate", "apply", "--allow-destructive"]);
    let s = project.serve(BIN);
    let r = s.get(&format!("/api/v1/notes/{}", ids[0]));
    assert_eq!(
        r.json()["data"]["title"],
        "first",
        "the other fields are intact"
    );
    assert!(r.json()["data"].get("body").is_none());
    assert_eq!(
        s.get("/api/v1/notes?count=true").json()["meta"]["total"],
        2,
        "no row lost"
    );
}

#[test]
fn an_applied_migration_edited_afterwards_is_refused() {
    let (project, _) = seeded();
    let file = std::fs::read_dir(project.path().join("migrations"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .next()
        .expect("the init migration");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, format!("{text}\n# edited\n")).expect("edit");
    let (code, out) = run(&project, &["migrate", "apply"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("was edited after it was applied"), "{out}");
    let (code, out) = run(&project, &["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "serve refuses too: {out}");
    assert!(out.contains("was edited after it was applied"), "{out}");
}

#[test]
fn development_applies_additive_changes_and_production_refuses_pending_ones() {
    let (project, _) = seeded();
    // Development: an added field is applied at start-up, and said so.
    let added = V1.replace(
        "body = { type = \"text\" }",
        "body = { type = \"text\" }\nmood = { type = \"string\" }",
    );
    let project = project.schema(&added);
    let s = project.serve(BIN);
    assert!(
        s.logs.text().contains("add field notes.mood"),
        "{}",
        s.logs.text()
    );
    let r = s.post("/api/v1/notes", &json!({"title": "t", "mood": "calm"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let project = s.into_project();

    // Production: a change without an applied migration stops start-up, named.
    let more = added.replace(
        "mood = { type = \"string\" }",
        "mood = { type = \"string\" }\nscore = { type = \"number\" }",
    );
    let project = project
        .schema(&more)
        .env("FERROBASE_ENV", "production")
        .env("FERROBASE_SECRET", &"s".repeat(40))
        .env("FERROBASE_AUTH__COOKIE_SECURE", "true");
    let (code, text) = run(&project, &["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("add field notes.score"), "{text}");
    ok(&project, &["migrate", "create", "score"]);
    let (code, text) = run(&project, &["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("pending migration"), "{text}");
    assert!(text.contains("_score"), "names it: {text}");
    ok(&project, &["migrate", "apply"]);
    let s = project.serve(BIN);
    let r = s.post("/api/v1/notes", &json!({"title": "t", "score": 1.5}));
    assert_eq!(r.status, 201, "{}", r.text);
}

/// What the API answers, without what differs from run to run (ids, times).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    !["id", "created_at", "updated_at", "requestId"].contains(&k.as_str())
                })
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::String(s) if s.len() == 36 && s.matches('-').count() == 4 => json!("<id>"),
        other => other.clone(),
    }
}

#[test]
fn one_history_gives_the_same_api_on_sqlite_and_postgresql() {
    if crate::backend() == Backend::Postgres {
        return; // this test uses both stores itself
    }
    // Write the history once, on a scratch project.
    let author = Project::new().schema(V1);
    ok(&author, &["migrate", "create", "init"]);
    let author = author.schema(V2);
    ok(&author, &["migrate", "create", "second"]);
    let history: Vec<(String, String)> = std::fs::read_dir(author.path().join("migrations"))
        .expect("dir")
        .map(|e| {
            let p = e.expect("entry").path();
            (
                p.file_name().expect("name").to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).expect("read"),
            )
        })
        .collect();

    let mut answers = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mut project = Project::on(backend).schema(V2);
        if backend == Backend::Postgres && project.database_url().is_none() {
            return; // said loudly by the harness
        }
        for (name, text) in &history {
            project = project.file(&format!("migrations/{name}"), text);
        }
        ok(&project, &["migrate", "apply"]);
        let s = project.serve(BIN);
        let a = s.post("/api/v1/notes", &json!({"headline": "a", "priority": 2}));
        let a_id = a.json()["data"]["id"].as_str().expect("id").to_owned();
        let b = s.post(
            "/api/v1/notes",
            &json!({"headline": "b", "priority": 1, "related": [a_id]}),
        );
        let bad = s.post("/api/v1/notes", &json!({"priority": "high"}));
        let list = s.get("/api/v1/notes?sort=-priority&expand=related&count=true");
        answers.push(json!({
            "a": shape(&a.json()),
            "b": shape(&b.json()),
            "bad": [bad.status, shape(&bad.json())],
            "list": shape(&list.json()["data"]),
            "total": list.json()["meta"]["total"],
        }));
    }
    assert_eq!(answers[0], answers[1], "the same API on both databases");
}

#[test]
fn api_add_appends_a_resource_keeping_the_file_and_docker_writes_its_files() {
    let project = Project::on(crate::backend()).schema(V1);
    ok(
        &project,
        &[
            "api",
            "add",
            "tasks",
            "title:string!",
            "done:boolean",
            "state:enum:open|closed",
        ],
    );
    let text = std::fs::read_to_string(project.path().join("schema.toml")).expect("read");
    assert!(
        text.starts_with(V1),
        "the existing file is kept as it was:\n{text}"
    );
    assert!(text.contains("[resources.tasks.fields]"), "{text}");
    let (code, out) = run(&project, &["api", "add", "tasks", "x:string"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(&project, &["api", "add", "things", "x:blob"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a field type"), "{out}");
    ok(&project, &["check"]);

    // The new resource is safe by default: owners only.
    let s = project.serve(BIN);
    let anonymous = s.post("/api/v1/tasks", &json!({"title": "x"}));
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
    let register = |email: &str| {
        let r = s.post(
            "/api/v1/auth/register",
            &json!({"email": email, "password": "scaffold-password"}),
        );
        r.json()["data"]["accessToken"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let (ann, bob) = (register("ann@example.com"), register("bob@example.com"));
    let r = s.send(|c| {
        c.post(s.url("/api/v1/tasks"))
            .bearer_auth(&ann)
            .json(&json!({"title": "mine", "state": "open"}))
    });
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["data"]["id"].as_str().expect("id").to_owned();
    let r = s.send(|c| {
        c.get(s.url(&format!("/api/v1/tasks/{id}")))
            .bearer_auth(&bob)
    });
    assert_eq!(r.status, 404, "someone else's task is invisible");
    let project = s.into_project();

    ok(&project, &["docker"]);
    let dockerfile =
        std::fs::read_to_string(project.path().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains(" AS build") && dockerfile.contains("FROM debian:bookworm-slim"),
        "multi-stage onto a slim base"
    );
    assert!(dockerfile.contains("USER ferrobase"), "non-root");
    assert!(dockerfile.contains("HEALTHCHECK"));
    let compose = std::fs::read_to_string(project.path().join("compose.yaml")).expect("compose");
    for part in [
        "postgres:",
        "redis:",
        "healthcheck:",
        "service_healthy",
        "DATABASE_URL",
        "REDIS_URL",
    ] {
        assert!(compose.contains(part), "{part} in compose.yaml");
    }
    let (code, out) = run(&project, &["docker"]);
    assert_eq!(code, 2, "no silent overwrite: {out}");
    ok(&project, &["docker", "--force"]);
}

const LIBRARY: &str = r#"
[resources.authors.fields]
name = { type = "string", required = true, unique = true }
[resources.authors.rules]
list = "true"
view = "true"
create = "true"
[resources.books.fields]
title = { type = "string", required = true }
author = { type = "relation", resource = "authors", required = true, on_delete = "cascade" }
tags = { type = "relation", resource = "authors", many = true }
[resources.books.rules]
list = "true"
view = "true"
create = "true"
"#;

#[test]
fn renaming_a_resource_carries_its_relations_and_fills_required_fields() {
    let project = Project::on(crate::backend()).schema(LIBRARY);
    ok(&project, &["migrate", "create", "init"]);
    ok(&project, &["migrate", "apply"]);
    let s = project.serve(BIN);
    let ann = s.post("/api/v1/authors", &json!({"name": "ann"}));
    let ann = ann.json()["data"]["id"].as_str().expect("id").to_owned();
    let book = s.post(
        "/api/v1/books",
        &json!({"title": "b1", "author": ann, "tags": [ann]}),
    );
    assert_eq!(book.status, 201, "{}", book.text);
    let project = s.into_project();

    let renamed = LIBRARY
        .replace(
            "[resources.authors.fields]",
            "[resources.writers]\nrenamed_from = \"authors\"\ntimestamps = true\n[resources.writers.fields]",
        )
        .replace("[resources.authors.rules]", "[resources.writers.rules]")
        .replace("resource = \"authors\"", "resource = \"writers\"")
        .replace(
            "unique = true }",
            "unique = true }\ncountry = { type = \"string\", required = true, default = \"nz\" }",
        );
    let project = project.schema(&renamed);
    let created = ok(&project, &["migrate", "create", "writers"]);
    assert!(
        created.contains("rename resource authors to writers"),
        "{created}"
    );
    assert!(
        !created.contains("DESTRUCTIVE"),
        "relations follow the rename: {created}"
    );
    ok(&project, &["migrate", "apply"]);
    let s = project.serve(BIN);
    let listed = s.get("/api/v1/books?expand=author,tags").json();
    assert_eq!(listed["data"][0]["expand"]["author"]["name"], "ann");
    assert_eq!(
        listed["data"][0]["expand"]["author"]["country"], "nz",
        "filled from the default"
    );
    assert_eq!(listed["data"][0]["expand"]["tags"][0]["name"], "ann");
    let dup = s.post("/api/v1/writers", &json!({"name": "ann"}));
    assert_eq!(
        dup.status, 409,
        "the unique constraint came along: {}",
        dup.text
    );
    assert_eq!(s.get("/api/v1/authors").status, 404);
}

#[test]
fn resources_may_point_forward_and_at_each_other() {
    let schema = r#"
[resources.posts.fields]
title = { type = "string", required = true }
category = { type = "relation", resource = "categories" }
[resources.posts.rules]
list = "true"
view = "true"
create = "true"
[resources.categories.fields]
name = { type = "string", required = true }
featured = { type = "relation", resource = "posts", many = true }
[resources.categories.rules]
list = "true"
view = "true"
create = "true"
"#;
    let project = Project::on(crate::backend()).schema(schema);
    ok(&project, &["migrate", "create", "init"]);
    ok(&project, &["migrate", "apply"]);
    let s = project.serve(BIN);
    let c = s.post("/api/v1/categories", &json!({"name": "news"}));
    let c = c.json()["data"]["id"].as_str().expect("id").to_owned();
    let p = s.post("/api/v1/posts", &json!({"title": "hi", "category": c}));
    assert_eq!(p.status, 201, "{}", p.text);
    let broken = s.post(
        "/api/v1/posts",
        &json!({"title": "x", "category": "01890000-0000-7000-8000-000000000000"}),
    );
    assert_eq!(
        broken.status, 400,
        "the foreign key exists: {}",
        broken.text
    );
}

#[test]
fn development_never_runs_a_drop_hidden_behind_a_rename() {
    let (project, _) = seeded();
    // Two files pulled together: one renames notes, the next drops the renamed table.
    let rename = "[[steps]]\nop = \"rename_resource\"\nfrom = \"notes\"\nto = \"memos\"\n";
    let drop = "[[steps]]\nop = \"drop_resource\"\nresource = \"memos\"\n";
    let project = project
        .file("migrations/99990101000000_rename.toml", rename)
        .file("migrations/99990101000001_drop.toml", drop);
    let (code, text) = run(&project, &["serve", "--addr", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("drop resource memos"), "{text}");
    let (code, text) = run(&project, &["migrate", "apply"]);
    assert_eq!(code, 2, "{text}");
    let status = ok(&project, &["migrate", "status"]);
    assert_eq!(
        status.matches("pending").count(),
        2,
        "nothing applied: {status}"
    );
}
