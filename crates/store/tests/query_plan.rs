//! The blog's indexed list (`status = 'published'`, newest first) is served by its
//! index, with no temporary sort, as SQLite's own plan shows.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrobase_query::check::{Mode, check};
use ferrobase_query::env::Env;
use ferrobase_query::sql::{Dialect, to_sql};
use ferrobase_schema::{Settings, SourceFile, schema_from_str, templates};
use ferrobase_store::{KeyType, ListQuery, ResourceId, SortKey, Store};
use serde_json::json;

fn key(column: &str) -> SortKey {
    SortKey {
        column: column.into(),
        descending: true,
        nullable: false,
        ty: KeyType::Text,
    }
}

#[tokio::test]
async fn published_newest_first_uses_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings =
        Settings::load(&SourceFile::new("ferrobase.toml", ""), &BTreeMap::new()).expect("settings");
    let schema = Arc::new(schema_from_str("schema.toml", templates::BLOG_SCHEMA).expect("blog"));
    let store = Store::open(dir.path(), &settings, schema.clone()).expect("store");
    let posts = schema.resource("posts").expect("posts");
    let res = ResourceId(
        schema
            .resources
            .iter()
            .position(|r| r.name == "posts")
            .expect("index"),
    );

    let expr = ferrobase_query::parse("status = 'published'").expect("parses");
    let cond = check(&expr, &schema, posts, Mode::Filter).expect("checks");
    let env = Env::anonymous(time::OffsetDateTime::now_utc());
    let first_page = ListQuery {
        filter: Some(to_sql(&cond, &env, Dialect::Sqlite, "posts")),
        order: vec![key("created_at"), key("id")],
        after: None,
        limit: 21,
        offset: 0,
        per_parent: None,
    };
    let plan = store
        .records()
        .explain(res, first_page.clone())
        .await
        .expect("plan")
        .join("\n");
    assert!(
        plan.contains("USING INDEX ix__posts__by_status (status=?)"),
        "{plan}"
    );
    assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");

    // A later page (keyset cursor) stays on the index too.
    let next_page = ListQuery {
        after: Some(vec![
            json!("2025-01-01T00:00:00.000000Z"),
            json!("0190a5b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"),
        ]),
        ..first_page
    };
    let plan = store
        .records()
        .explain(res, next_page)
        .await
        .expect("plan")
        .join("\n");
    assert!(plan.contains("USING INDEX ix__posts__by_status"), "{plan}");
    assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
}
