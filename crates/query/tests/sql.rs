//! The SQL the compiler emits for each dialect. PostgreSQL runs these once its store
//! exists; until then its text is pinned here.

use ferrobase_query::check::{Mode, check};
use ferrobase_query::env::Env;
use ferrobase_query::sql::{Dialect, to_sql};
use sea_query::{Expr, PostgresQueryBuilder, Query, SqliteQueryBuilder, Value, Values};
use serde_json::json;

const SCHEMA: &str = r#"
[auth]
roles = ["admin", "user"]
[resources.users.fields]
name = { type = "string" }
[resources.tags.fields]
label = { type = "string" }
[resources.posts]
timestamps = true
[resources.posts.fields]
title = { type = "string", required = true }
status = { type = "enum", values = ["draft", "published"] }
score = { type = "number" }
author = { type = "relation", resource = "users" }
tags = { type = "relation", resource = "tags", many = true }
"#;

fn compile(filter: &str, dialect: Dialect, auth: Option<serde_json::Value>) -> (String, Values) {
    let schema = ferrobase_schema::schema_from_str("schema.toml", SCHEMA).expect("schema");
    let posts = schema.resource("posts").expect("posts");
    let expr = ferrobase_query::parse(filter).expect("parses");
    let cond = check(&expr, &schema, posts, Mode::Filter).expect("checks");
    let auth = auth.and_then(|a| a.as_object().cloned());
    let env = Env {
        auth: auth.as_ref(),
        body: None,
        now: time::macros::datetime!(2026-11-21 00:00 UTC),
    };
    let condition = to_sql(&cond, &env, dialect, "posts");
    let select = Query::select()
        .expr(Expr::cust("1"))
        .from("posts")
        .and_where(condition)
        .to_owned();
    match dialect {
        Dialect::Sqlite => select.build(SqliteQueryBuilder),
        Dialect::Postgres => select.build(PostgresQueryBuilder),
    }
}

fn s(v: &str) -> Value {
    Value::String(Some(v.to_owned()))
}

#[test]
fn postgres_comparisons_are_typed_and_bound() {
    let (sql, values) = compile(
        "status = 'published' && created_at > @now - 1d",
        Dialect::Postgres,
        None,
    );
    assert_eq!(
        sql,
        r#"SELECT 1 FROM "posts" WHERE "posts"."status" = $1 AND "posts"."created_at" > CAST($2 AS timestamptz)"#
    );
    assert_eq!(
        values,
        Values(vec![s("published"), s("2026-11-20T00:00:00.000000Z")])
    );
}

#[test]
fn postgres_contains_folds_ascii_case_without_like() {
    let (sql, values) = compile("title ~ '50%_OFF'", Dialect::Postgres, None);
    assert_eq!(
        sql,
        r#"SELECT 1 FROM "posts" WHERE strpos(translate("posts"."title", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), $1) > 0"#
    );
    assert_eq!(values, Values(vec![s("50%_off")]));
    let (sql, values) = compile("title ~ '50%_OFF'", Dialect::Sqlite, None);
    assert_eq!(
        sql,
        r#"SELECT 1 FROM "posts" WHERE instr(lower("posts"."title"), ?) > 0"#
    );
    assert_eq!(values, Values(vec![s("50%_off")]));
}

#[test]
fn relation_paths_become_exists_subqueries() {
    let (sql, _) = compile(
        "author.name = 'Ann' || tags.label != 'x'",
        Dialect::Postgres,
        None,
    );
    assert_eq!(
        sql,
        concat!(
            r#"SELECT 1 FROM "posts" WHERE EXISTS(SELECT 1 FROM "users" AS "r1" WHERE "r1"."id" = "posts"."author" AND "r1"."name" = $1) "#,
            r#"OR (NOT COALESCE(EXISTS(SELECT 1 FROM "posts__tags" AS "j2" INNER JOIN "tags" AS "r3" ON "r3"."id" = "j2"."target" WHERE "j2"."source" = "posts"."id" AND "r3"."label" = $2), FALSE))"#
        )
    );
    let (sql, _) = compile(
        "tags = '0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b'",
        Dialect::Postgres,
        None,
    );
    assert_eq!(
        sql,
        r#"SELECT 1 FROM "posts" WHERE EXISTS(SELECT 1 FROM "posts__tags" AS "j1" WHERE "j1"."source" = "posts"."id" AND "j1"."target" = CAST($1 AS uuid))"#,
        "ids of a many relation need no join to the target"
    );
}

#[test]
fn request_values_are_bound_and_decided_before_the_database() {
    let me = json!({"id": "0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b", "role": "user"});
    let (sql, values) = compile(
        "author = @auth.id || @auth.role = 'admin'",
        Dialect::Postgres,
        Some(me),
    );
    assert_eq!(
        sql, r#"SELECT 1 FROM "posts" WHERE "posts"."author" = CAST($1 AS uuid)"#,
        "the role test is decided here (false) and drops out"
    );
    assert_eq!(
        values,
        Values(vec![s("0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b")])
    );
    // Anonymous: @auth.id is absent, so the comparison is false, not `IS NULL`.
    let (sql, values) = compile("author = @auth.id", Dialect::Postgres, None);
    assert_eq!(sql, r#"SELECT 1 FROM "posts" WHERE FALSE"#);
    assert!(values.0.is_empty());
    let (sql, _) = compile("@auth.id != null", Dialect::Sqlite, None);
    assert_eq!(sql, r#"SELECT 1 FROM "posts" WHERE FALSE"#);
}
