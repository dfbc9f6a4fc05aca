//! A write made through the record service without any HTTP request (as a job, the CLI
//! or GraphQL will) still makes the server-side read cache forget, on SQLite and
//! PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use ferrobase_access::Identity;
use ferrobase_http::AppState;
use ferrobase_schema::{Settings, SourceFile, schema_from_str};
use ferrobase_store::{NewRecord, Store};
use ferrobase_testkit::services::TestDatabase;
use serde_json::{Value, json};
use tower::ServiceExt;

const SCHEMA: &str = r#"
[resources.items.fields]
title = { type = "string" }
[resources.items.rules]
list   = "true"
view   = "true"
create = "true"
"#;

async fn titles(state: &AppState) -> Vec<String> {
    let req = Request::builder()
        .uri("/api/v1/items")
        .body(Body::empty())
        .expect("request");
    let res = ferrobase_http::router(state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = to_bytes(res.into_body(), 1 << 20).await.expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn scenario(db: Option<&TestDatabase>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = db
        .iter()
        .map(|db| ("DATABASE_URL".to_owned(), db.url().to_owned()))
        .collect();
    let settings = Settings::load(
        &SourceFile::new(
            "ferrobase.toml",
            "[cache]\nserver = \"memory\"\n[rate_limit]\nenabled = false\n",
        ),
        &env,
    )
    .expect("settings");
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let store = Store::open(dir.path(), &settings, schema.clone()).expect("store");
    store
        .maintenance()
        .wait_ready(std::time::Duration::from_secs(30))
        .await
        .expect("ready");
    let state = AppState::builder(schema, Arc::new(settings), store).build();
    let (items, _) = state.records.resource("items").expect("items");

    assert!(titles(&state).await.is_empty());
    // A write straight into the store, past the record service, is not seen: the
    // answer above is cached (this is what the service's effects are for).
    state
        .store
        .records()
        .insert(
            items,
            NewRecord {
                id: "01900000-0000-7000-8000-000000000001".into(),
                now: "2026-01-01T00:00:00.000000Z".into(),
                values: vec![json!("behind the cache")],
                targets: Default::default(),
                actor: None,
            },
            None,
        )
        .await
        .expect("insert");
    assert!(titles(&state).await.is_empty(), "served from the cache");

    // A write through the record service, with no HTTP request anywhere, invalidates.
    let Value::Object(body) = json!({"title": "outside HTTP"}) else {
        unreachable!("an object")
    };
    state
        .records
        .create(&Identity(None), items, body)
        .await
        .expect("create");
    let mut seen = titles(&state).await;
    seen.sort();
    assert_eq!(seen, vec!["behind the cache", "outside HTTP"]);
}

fn run(db: Option<&TestDatabase>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(scenario(db));
}

#[test]
fn a_write_outside_http_invalidates_the_read_cache_on_sqlite() {
    run(None);
}

#[test]
fn a_write_outside_http_invalidates_the_read_cache_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    run(Some(&db));
}
