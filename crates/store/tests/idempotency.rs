//! Idempotency keys in the store, on SQLite and PostgreSQL: claimed once, in flight,
//! mismatched, finished and replayed, abandoned, expired.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrobase_schema::{Settings, SourceFile, schema_from_str, templates};
use ferrobase_store::{Claim, IdempotencyClaim, Store, StoredResponse};
use ferrobase_testkit::services::TestDatabase;

fn claim(key: &str, hash: &str, now: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.into(),
        request_hash: hash.into(),
        now: now.into(),
        expired_before: "2026-01-01T00:00:00.000000Z".into(),
        abandoned_before: "2026-01-02T00:00:00.000000Z".into(),
    }
}

async fn take(store: &Store, key: &str, hash: &str, now: &str) -> Claim {
    store
        .idempotency()
        .claim_idempotency(claim(key, hash, now))
        .await
        .expect("claim")
}

async fn lifecycle(store: &Store) {
    let t = "2026-01-02T12:00:00.000000Z";
    assert_eq!(take(store, "k", "h1", t).await, Claim::Fresh);
    assert_eq!(
        take(store, "k", "h1", t).await,
        Claim::InFlight,
        "the first request is still running"
    );
    assert_eq!(take(store, "k", "h2", t).await, Claim::Mismatch);
    let response = StoredResponse {
        status: 201,
        headers: r#"[["location","/api/v1/x/1"]]"#.into(),
        body: b"{\"data\":{}}".to_vec(),
    };
    store
        .idempotency()
        .complete_idempotency("k".into(), response.clone())
        .await
        .expect("complete");
    assert_eq!(take(store, "k", "h1", t).await, Claim::Done(response));
    assert_eq!(
        take(store, "k", "h2", t).await,
        Claim::Mismatch,
        "a finished key still refuses another request"
    );

    // Released keys (the request failed) can be claimed again.
    assert_eq!(take(store, "r", "h", t).await, Claim::Fresh);
    store
        .idempotency()
        .release_idempotency("r".into())
        .await
        .expect("release");
    assert_eq!(take(store, "r", "h", t).await, Claim::Fresh);

    // A claim whose request died (older than the abandon horizon) is taken over.
    let old = "2026-01-01T06:00:00.000000Z";
    assert_eq!(take(store, "d", "h", old).await, Claim::Fresh);
    assert_eq!(take(store, "d", "h", t).await, Claim::Fresh);
    assert_eq!(
        take(store, "d", "h", t).await,
        Claim::InFlight,
        "taken over, and now in flight again"
    );

    // Keys older than the retention are forgotten, even finished ones.
    let ancient = "2025-12-31T00:00:00.000000Z";
    assert_eq!(take(store, "e", "h1", ancient).await, Claim::Fresh);
    store
        .idempotency()
        .complete_idempotency(
            "e".into(),
            StoredResponse {
                status: 200,
                headers: "[]".into(),
                body: Vec::new(),
            },
        )
        .await
        .expect("complete");
    assert_eq!(
        take(store, "e", "h2", t).await,
        Claim::Fresh,
        "expired keys are new again"
    );
}

fn run(database: Option<&TestDatabase>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: BTreeMap<String, String> = database
            .iter()
            .map(|db| ("DATABASE_URL".to_owned(), db.url().to_owned()))
            .collect();
        let settings =
            Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
        let schema =
            Arc::new(schema_from_str("schema.toml", templates::BLOG_SCHEMA).expect("schema"));
        let store = Store::open(dir.path(), &settings, schema).expect("store");
        store
            .maintenance()
            .wait_ready(std::time::Duration::from_secs(30))
            .await
            .expect("ready");
        lifecycle(&store).await;
    });
}

#[test]
fn idempotency_keys_on_sqlite() {
    run(None);
}

#[test]
fn idempotency_keys_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    run(Some(&db));
}
