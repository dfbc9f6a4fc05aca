//! Reads on the shared PostgreSQL connections (`[database] read_connections`): a read
//! stuck behind a slow query does not hold up the reads that come after it, and a shared
//! connection that PostgreSQL closed is opened again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrobase_schema::{Settings, SourceFile, schema_from_str};
use ferrobase_store::{NewRecord, ResourceId, Store, StoreError};
use ferrobase_testkit::services::TestDatabase;
use sea_query::Expr;
use serde_json::json;

const SCHEMA: &str = r#"
[resources.items.fields]
title = { type = "string", required = true }
[resources.items.rules]
create = "true"
"#;

const ID: &str = "01900000-0000-7000-8000-000000000001";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A store on `db` whose reads share one connection, holding one item, and the item's
/// resource.
fn open(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    db: &TestDatabase,
) -> (Store, ResourceId) {
    let env = BTreeMap::from([
        ("DATABASE_URL".to_owned(), db.url().to_owned()),
        (
            "FERROBASE_DATABASE__READ_CONNECTIONS".to_owned(),
            "1".to_owned(),
        ),
    ]);
    let settings = Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
    assert_eq!(settings.database.read_connections, 1);
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let res = items(&schema);
    rt.block_on(async {
        let store = Store::open(dir, &settings, schema).expect("store");
        store
            .maintenance()
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        store
            .records()
            .insert(
                res,
                NewRecord {
                    id: ID.into(),
                    now: "2026-01-02T12:00:00.000000Z".into(),
                    values: vec![json!("one")],
                    targets: Default::default(),
                    actor: None,
                },
                None,
            )
            .await
            .expect("insert");
        (store, res)
    })
}

/// The resource `items` (after the built-in ones).
fn items(schema: &ferrobase_schema::Schema) -> ResourceId {
    ResourceId(
        schema
            .resources
            .iter()
            .position(|r| r.name == "items")
            .expect("items"),
    )
}

/// A connection of the test's own to the same database.
async fn admin(db: &TestDatabase) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

async fn get(
    (store, res): &(Store, ResourceId),
    visible: Option<Expr>,
) -> Result<Option<String>, StoreError> {
    Ok(store
        .records()
        .get(*res, ID.into(), visible)
        .await?
        .map(|r| r.id))
}

#[test]
fn a_read_stuck_behind_a_slow_query_does_not_hold_up_later_reads() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let rt = runtime();
    let store = Arc::new(open(&rt, dir.path(), &db));
    rt.block_on(async {
        let admin = admin(&db).await;
        // A read whose condition takes seconds, on the one shared connection.
        let slow = tokio::spawn({
            let store = store.clone();
            async move { get(&store, Some(Expr::cust("pg_sleep(4) IS NOT NULL"))).await }
        });
        // Wait until PostgreSQL has been running it for longer than a read ever takes.
        while !running(&admin, "pg_sleep(4)", 200).await {
            assert!(
                !slow.is_finished(),
                "the slow read ended before it was seen"
            );
        }
        // A read now goes around the stuck connection and is answered while the slow one
        // still runs.
        assert_eq!(get(&store, None).await.expect("read"), Some(ID.to_owned()));
        assert!(
            !slow.is_finished(),
            "the read waited for the slow query to end"
        );
        // The slow read itself is answered in full.
        assert_eq!(
            slow.await.expect("join").expect("slow read"),
            Some(ID.to_owned())
        );
    });
}

/// Whether PostgreSQL runs a statement containing `marker` for this test's database, for
/// longer than `ms` milliseconds.
async fn running(admin: &tokio_postgres::Client, marker: &str, ms: i64) -> bool {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND strpos(query, $1) > 0 \
             AND now() - query_start > make_interval(secs => $2::float8 / 1000) \
             AND pid <> pg_backend_pid()",
            &[&marker, &(ms as f64)],
        )
        .await
        .expect("activity")
        .get::<_, i64>(0)
        == 1
}

#[test]
fn a_read_given_up_still_counts_until_its_statement_is_answered() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let rt = runtime();
    let store = Arc::new(open(&rt, dir.path(), &db));
    rt.block_on(async {
        let admin = admin(&db).await;
        let slow = tokio::spawn({
            let store = store.clone();
            async move { get(&store, Some(Expr::cust("pg_sleep(3.5) IS NOT NULL"))).await }
        });
        // Seen executing for a while (not just being prepared, which is over at once).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !running(&admin, "pg_sleep(3.5)", 200).await {
            assert!(
                !slow.is_finished(),
                "the slow read ended before it was seen"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "the slow read never ran"
            );
        }
        // Its request goes away (a timeout, a client that left); PostgreSQL still runs it
        // on the shared connection.
        slow.abort();
        assert!(slow.await.expect_err("aborted").is_cancelled());
        // A read now is not queued behind the abandoned statement.
        assert_eq!(get(&store, None).await.expect("read"), Some(ID.to_owned()));
        assert!(
            running(&admin, "pg_sleep(3.5)", 0).await,
            "the read waited for the abandoned statement to end"
        );
    });
}

#[test]
fn a_shared_connection_postgres_closed_is_opened_again() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let rt = runtime();
    let store = open(&rt, dir.path(), &db);
    rt.block_on(async {
        assert_eq!(get(&store, None).await.expect("read"), Some(ID.to_owned()));
        let admin = admin(&db).await;
        let cut = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("terminate")
            .get::<_, i64>(0);
        assert!(cut >= 1, "the store's connections were cut");
        // The first read may still be sent down the closed connection, before the store
        // has heard that it closed: it fails as unavailable, never as anything else.
        match get(&store, None).await {
            Ok(found) => assert_eq!(found, Some(ID.to_owned())),
            Err(e) => assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}"),
        }
        // The next read opens a new connection.
        assert_eq!(get(&store, None).await.expect("read"), Some(ID.to_owned()));
    });
}
