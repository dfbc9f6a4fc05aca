//! Creates written in groups on PostgreSQL (`[database] create_batch`, `create_writers`):
//! creates queued together are committed together, each row with its event, and a create
//! PostgreSQL refuses is answered on its own while the others of its group are written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrobase_schema::{Settings, SourceFile, schema_from_str};
use ferrobase_store::{NewRecord, ResourceId, Store, StoreError};
use ferrobase_testkit::services::TestDatabase;
use serde_json::json;

const SCHEMA: &str = r#"
[resources.items]
timestamps = true
[resources.items.fields]
title  = { type = "string", required = true, unique = true }
[resources.notes]
timestamps = true
[resources.notes.fields]
body = { type = "string", required = true }
item = { type = "relation", resource = "items", required = true }
"#;

const T0: &str = "2026-01-02T12:00:00.000000Z";

fn runtime() -> tokio::runtime::Runtime {
    // One thread: every create of a `join_all` is queued before the writer task runs, so
    // which creates share a statement does not depend on timing.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A store on `db` with the given `[database]` settings, and the ids of `items` and
/// `notes`.
fn open(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    db: &TestDatabase,
    batch: usize,
    writers: usize,
) -> (Store, ResourceId, ResourceId) {
    let env = BTreeMap::from([
        ("DATABASE_URL".to_owned(), db.url().to_owned()),
        (
            "FERROBASE_DATABASE__CREATE_BATCH".to_owned(),
            batch.to_string(),
        ),
        (
            "FERROBASE_DATABASE__CREATE_WRITERS".to_owned(),
            writers.to_string(),
        ),
    ]);
    let settings = Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
    assert_eq!(
        (
            settings.database.create_batch,
            settings.database.create_writers
        ),
        (batch, writers)
    );
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let at = |name: &str| {
        ResourceId(
            schema
                .resources
                .iter()
                .position(|r| r.name == name)
                .expect("resource"),
        )
    };
    let (items, notes) = (at("items"), at("notes"));
    let store = rt.block_on(async {
        let store = Store::open(dir, &settings, schema.clone()).expect("store");
        store
            .maintenance()
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        store
    });
    (store, items, notes)
}

fn id(n: usize) -> String {
    format!("01900000-0000-7000-8000-{n:012}")
}

fn item(n: usize, title: &str) -> NewRecord {
    NewRecord {
        id: id(n),
        now: T0.into(),
        values: vec![json!(title)],
        targets: Default::default(),
        actor: Some("someone".into()),
    }
}

fn note(n: usize, item: &str) -> NewRecord {
    NewRecord {
        id: id(n),
        now: T0.into(),
        values: vec![json!(format!("note {n}")), json!(item)],
        targets: Default::default(),
        actor: None,
    }
}

/// A connection of the test's own to `db`.
fn sql(db: &TestDatabase) -> ferrobase_testkit::postgres::Client {
    ferrobase_testkit::postgres::Client::connect(db.url(), ferrobase_testkit::postgres::NoTls)
        .expect("connect")
}

/// Rows of `table` per transaction that wrote them, and whether each row's event was
/// written by the same transaction; in the order of the rows' ids.
fn transactions(db: &TestDatabase, table: &str) -> (Vec<i64>, bool) {
    let mut client = sql(db);
    let sizes = client
        .query(
            &format!("SELECT count(*) FROM \"{table}\" GROUP BY xmin::text ORDER BY min(id::text)"),
            &[],
        )
        .expect("groups")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let with_event: bool = client
        .query_one(
            &format!(
                "SELECT bool_and(e.xmin::text = r.xmin::text AND e.resource = '{table}' AND e.version = r.version AND e.at = r.created_at) AND count(e.seq) = count(*) FROM \"{table}\" r LEFT JOIN \"_ferrobase_events\" e ON e.record_id = r.id AND e.op = 'create'"
            ),
            &[],
        )
        .expect("events")
        .get(0);
    (sizes, with_event)
}

#[test]
fn creates_queued_together_commit_together_with_their_events() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, items, _) = open(&rt, dir.path(), &db, 10, 1);
    let records = store.records();
    rt.block_on(async {
        let creates = (1..=24).map(|n| records.insert(items, item(n, &format!("item {n}")), None));
        for (n, created) in futures_util::future::join_all(creates)
            .await
            .into_iter()
            .enumerate()
        {
            let created = created.expect("created");
            assert_eq!(created.id, id(n + 1));
            assert_eq!(created.values, vec![json!(format!("item {}", n + 1))]);
        }
        let stored = records
            .get(items, id(24), None)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.values, vec![json!("item 24")]);
    });
    // All 24 were queued before the one writer took any: ten creates a statement, each
    // with its events in its own transaction.
    assert_eq!(transactions(&db, "items"), (vec![10, 10, 4], true));
    // Each event carries its own record and actor.
    let mut client = sql(&db);
    let events: Vec<(String, String, Option<String>)> = client
        .query(
            "SELECT record_id::text, record->>'title', actor FROM _ferrobase_events ORDER BY record_id",
            &[],
        )
        .expect("events")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected: Vec<(String, String, Option<String>)> = (1..=24)
        .map(|n| (id(n), format!("item {n}"), Some("someone".to_owned())))
        .collect();
    assert_eq!(events, expected);
}

#[test]
fn a_refused_create_is_answered_alone_and_its_group_is_written() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, items, notes) = open(&rt, dir.path(), &db, 32, 1);
    let records = store.records();
    let missing = id(999);
    rt.block_on(async {
        records
            .insert(items, item(1, "taken"), None)
            .await
            .expect("first item");
        // Queued together: items 2..=6, one with a title already taken; notes 7..=11, one
        // pointing at no item.
        let item_creates = (2..=6).map(|n| {
            let title = if n == 4 {
                "taken".to_owned()
            } else {
                format!("item {n}")
            };
            records.insert(items, item(n, &title), None)
        });
        let note_creates = (7..=11).map(|n| {
            let target = if n == 9 { missing.clone() } else { id(1) };
            records.insert(notes, note(n, &target), None)
        });
        let (item_outcomes, note_outcomes) = futures_util::future::join(
            futures_util::future::join_all(item_creates),
            futures_util::future::join_all(note_creates),
        )
        .await;
        for (n, outcome) in (2..=6).zip(&item_outcomes) {
            match (n, outcome) {
                (4, Err(StoreError::Unique { fields })) => assert_eq!(fields, &["title"]),
                (4, other) => panic!("item 4 takes a title already taken: {other:?}"),
                (_, other) => assert!(other.is_ok(), "item {n}: {other:?}"),
            }
        }
        for (n, outcome) in (7..=11).zip(&note_outcomes) {
            match (n, outcome) {
                (9, Err(StoreError::BrokenRelation { fields })) => assert_eq!(
                    fields.get("item"),
                    Some(&vec![format!("no items record has id {missing}")])
                ),
                (9, other) => panic!("note 9 points at no item: {other:?}"),
                (_, other) => assert!(other.is_ok(), "note {n}: {other:?}"),
            }
        }
        for (res, n, kept) in [
            (items, 4, false),
            (items, 5, true),
            (notes, 9, false),
            (notes, 10, true),
        ] {
            let found = records.get(res, id(n), None).await.expect("get");
            assert_eq!(found.is_some(), kept, "record {n}");
        }
    });
    // Every accepted create has its event from its own transaction; the refused ones left
    // neither row nor event.
    let (item_groups, items_evented) = transactions(&db, "items");
    assert_eq!(item_groups.iter().sum::<i64>(), 5);
    assert!(items_evented);
    let (note_groups, notes_evented) = transactions(&db, "notes");
    assert_eq!(note_groups.iter().sum::<i64>(), 4);
    assert!(notes_evented);
}

#[test]
fn a_create_batch_of_one_writes_every_create_alone() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, items, _) = open(&rt, dir.path(), &db, 1, 1);
    let records = store.records();
    rt.block_on(async {
        let creates = (1..=6).map(|n| records.insert(items, item(n, &format!("item {n}")), None));
        for created in futures_util::future::join_all(creates).await {
            created.expect("created");
        }
    });
    assert_eq!(transactions(&db, "items"), (vec![1; 6], true));
}
