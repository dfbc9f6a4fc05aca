//! The event log on SQLite and PostgreSQL: one event per successful write with the
//! right content, none for a write that rolls back, and a follower that never skips an
//! event, not even one whose transaction commits after a later `seq`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobase_schema::input::Change;
use ferrobase_schema::{Settings, SourceFile, schema_from_str};
use ferrobase_store::{
    Access, BatchOp, Deletion, EventOp, NewRecord, RecordEvent, ResourceId, Store, StoreError,
    Update,
};
use ferrobase_testkit::services::TestDatabase;
use serde_json::json;

const SCHEMA: &str = r#"
[resources.items.fields]
title  = { type = "string", required = true }
secret = { type = "string", hidden = true }
[resources.items.rules]
create = "true"
"#;

const T0: &str = "2026-01-02T12:00:00.000000Z";
const T1: &str = "2026-01-02T12:00:01.000000Z";
const T2: &str = "2026-01-02T12:00:02.000000Z";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn open(rt: &tokio::runtime::Runtime, dir: &std::path::Path, db: Option<&TestDatabase>) -> Store {
    open_with(rt, dir, db, SCHEMA)
}

fn open_with(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    db: Option<&TestDatabase>,
    schema: &str,
) -> Store {
    let env: BTreeMap<String, String> = db
        .iter()
        .map(|db| ("DATABASE_URL".to_owned(), db.url().to_owned()))
        .collect();
    let settings = Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
    let schema = Arc::new(schema_from_str("schema.toml", schema).expect("schema"));
    rt.block_on(async {
        let store = Store::open(dir, &settings, schema).expect("store");
        store
            .maintenance()
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        store
    })
}

fn items(store_schema: &ferrobase_schema::Schema) -> ResourceId {
    ResourceId(
        store_schema
            .resources
            .iter()
            .position(|r| r.name == "items")
            .expect("items"),
    )
}

fn new_item(id: &str, title: &str, at: &str) -> NewRecord {
    NewRecord {
        id: id.into(),
        now: at.into(),
        // Built-in fields of `items`: title, secret.
        values: vec![json!(title), json!("s3cret")],
        targets: Default::default(),
        actor: Some("01900000-0000-7000-8000-0000000000aa".into()),
    }
}

fn set_title(title: &str, at: &str) -> Update {
    Update {
        now: at.into(),
        changes: vec![(0, Change::Set(json!(title)))],
        if_match: None,
        guard: None,
        targets: Default::default(),
        actor: Some("01900000-0000-7000-8000-0000000000bb".into()),
    }
}

fn deletion(at: &str) -> Deletion {
    Deletion {
        if_match: None,
        access: Access::default(),
        actor: None,
        now: at.into(),
    }
}

const A: &str = "01900000-0000-7000-8000-000000000001";
const B: &str = "01900000-0000-7000-8000-000000000002";
const C: &str = "01900000-0000-7000-8000-000000000003";
const D: &str = "01900000-0000-7000-8000-000000000004";

/// Every event the follower can read now, from the start.
async fn all_events(store: &Store) -> Vec<RecordEvent> {
    let mut follower = store.follow_events(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = store.events().last_event().await.expect("last");
    let mut events = Vec::new();
    while follower.position() < last {
        let batch = follower.next_batch(2).await.expect("follow");
        events.extend(batch.events);
        assert!(Instant::now() < deadline, "the follower did not catch up");
        tokio::task::yield_now().await;
    }
    events
}

fn each_write_has_one_event(db: Option<&TestDatabase>) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&rt, dir.path(), db);
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let res = items(&schema);
    rt.block_on(async {
        let created = store
            .records()
            .insert(res, new_item(A, "first", T0), None)
            .await
            .expect("insert");
        store
            .records()
            .update(res, A.into(), set_title("second", T1), Access::default())
            .await
            .expect("update")
            .expect("found");
        // An update that changes nothing writes nothing.
        let unchanged = Update {
            changes: Vec::new(),
            ..set_title("x", T1)
        };
        store
            .records()
            .update(res, A.into(), unchanged, Access::default())
            .await
            .expect("update");
        assert!(
            store
                .records()
                .delete(res, A.into(), deletion(T2))
                .await
                .expect("delete")
        );
        // A write refused inside its transaction leaves no event.
        let refused = store
            .records()
            .insert(
                res,
                new_item(B, "refused", T0),
                Some(sea_query::Expr::cust("FALSE")),
            )
            .await;
        assert!(matches!(refused, Err(StoreError::Forbidden)), "{refused:?}");
        // A batch that fails at its second write leaves nothing, the first included.
        let failed = store
            .records()
            .batch(vec![
                BatchOp::Insert {
                    res,
                    record: new_item(C, "in a failed batch", T0),
                    allowed: None,
                },
                BatchOp::Update {
                    res,
                    id: D.into(),
                    update: set_title("missing", T1),
                    access: Access::default(),
                },
            ])
            .await;
        assert_eq!(failed.err().map(|e| e.index), Some(Some(1)));
        // A batch that succeeds has one event per write.
        store
            .records()
            .batch(vec![
                BatchOp::Insert {
                    res,
                    record: new_item(C, "batched", T0),
                    allowed: None,
                },
                BatchOp::Insert {
                    res,
                    record: new_item(D, "batched too", T0),
                    allowed: None,
                },
            ])
            .await
            .expect("batch");

        let events = all_events(&store).await;
        let summary: Vec<(EventOp, &str, i64)> = events
            .iter()
            .map(|e| (e.op, e.id.as_str(), e.version))
            .collect();
        assert_eq!(
            summary,
            vec![
                (EventOp::Create, A, 1),
                (EventOp::Update, A, 2),
                (EventOp::Delete, A, 2),
                (EventOp::Create, C, 1),
                (EventOp::Create, D, 1),
            ]
        );
        assert!(
            events.windows(2).all(|w| w[0].seq < w[1].seq),
            "seq increases"
        );
        let [create, update, delete, ..] = events.as_slice() else {
            panic!("five events");
        };
        assert_eq!(create.resource, "items");
        assert_eq!(create.at, T0);
        assert_eq!(
            create.actor.as_deref(),
            Some("01900000-0000-7000-8000-0000000000aa")
        );
        assert_eq!(create.record["title"], "first");
        assert_eq!(create.record["id"], A);
        assert_eq!(create.record["version"], created.version);
        assert_eq!(create.record.get("secret"), None, "hidden fields stay out");
        assert_eq!(create.previous, None);
        assert_eq!(update.record["title"], "second");
        assert_eq!(update.record["version"], 2);
        assert_eq!(update.at, T1);
        assert_eq!(
            update.previous.as_ref().map(|p| p["title"].clone()),
            Some(json!("first"))
        );
        assert_eq!(delete.actor, None);
        assert_eq!(delete.record["title"], "second");
        assert_eq!(delete.previous.as_ref(), Some(&delete.record));
        assert_eq!(delete.to_json()["op"], "delete");

        // Retention: events before a time are trimmed; seq is never reused.
        let last = store.events().last_event().await.expect("last");
        assert_eq!(
            store.events().trim_events(T1.into()).await.expect("trim"),
            3
        );
        let kept = all_events(&store).await;
        assert_eq!(kept.len(), 2);
        store
            .records()
            .insert(
                res,
                new_item("01900000-0000-7000-8000-000000000005", "after", T2),
                None,
            )
            .await
            .expect("insert");
        assert!(store.events().last_event().await.expect("last") > last);
    });
}

#[test]
fn each_write_has_one_event_on_sqlite() {
    each_write_has_one_event(None);
}

#[test]
fn each_write_has_one_event_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    each_write_has_one_event(Some(&db));
}

const LINKED: &str = r#"
[resources.items.fields]
title  = { type = "string", required = true, unique = true }
secret = { type = "string", hidden = true }
[resources.notes.fields]
body = { type = "string", required = true }
item = { type = "relation", resource = "items", required = true }
"#;

/// A create refused by its relation check or a unique value leaves neither a row nor an
/// event; an accepted one leaves exactly one event with the stored record. On
/// PostgreSQL such a create is one statement (checks, row and event together), so
/// this is what that statement must keep.
fn a_refused_create_leaves_no_row_and_no_event(db: Option<&TestDatabase>) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with(&rt, dir.path(), db, LINKED);
    let schema = schema_from_str("schema.toml", LINKED).expect("schema");
    let resource = |name: &str| {
        ResourceId(
            schema
                .resources
                .iter()
                .position(|r| r.name == name)
                .expect("resource"),
        )
    };
    let (items, notes) = (resource("items"), resource("notes"));
    rt.block_on(async {
        let records = store.records();
        records
            .insert(items, new_item(A, "first", T0), None)
            .await
            .expect("item");
        let note = |id: &str, item: &str| NewRecord {
            id: id.into(),
            now: T1.into(),
            values: vec![json!("a note"), json!(item)],
            targets: Default::default(),
            actor: None,
        };
        // A relation to no record: refused, naming the field.
        let broken = records.insert(notes, note(B, D), None).await;
        match broken {
            Err(StoreError::BrokenRelation { fields }) => {
                // Worded alike on both stores (PostgreSQL's one-statement create leaves
                // this check to the foreign key).
                assert_eq!(
                    fields.get("item"),
                    Some(&vec![format!("no items record has id {D}")]),
                    "the field is named: {fields:?}"
                );
            }
            other => panic!("expected a broken relation, got {other:?}"),
        }
        // A unique value taken: refused.
        let taken = records.insert(items, new_item(C, "first", T1), None).await;
        assert!(matches!(taken, Err(StoreError::Unique { .. })), "{taken:?}");
        // Neither left a row.
        assert!(
            records
                .get(notes, B.into(), None)
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            records
                .get(items, C.into(), None)
                .await
                .expect("get")
                .is_none()
        );
        // An accepted note: one event, with the stored record.
        let stored = records.insert(notes, note(C, A), None).await.expect("note");
        assert_eq!(stored.version, 1);
        let events = all_events(&store).await;
        let summary: Vec<(&str, EventOp, &str)> = events
            .iter()
            .map(|e| (e.resource.as_str(), e.op, e.id.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![("items", EventOp::Create, A), ("notes", EventOp::Create, C)],
            "one event per accepted create, none for the refused ones"
        );
        assert_eq!(events[1].record["item"], json!(A));
        assert_eq!(events[1].record["body"], json!("a note"));
        assert_eq!(
            events[0].record.get("secret"),
            None,
            "hidden fields stay out"
        );
    });
}

#[test]
fn a_refused_create_leaves_no_row_and_no_event_on_sqlite() {
    a_refused_create_leaves_no_row_and_no_event(None);
}

#[test]
fn a_refused_create_leaves_no_row_and_no_event_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    a_refused_create_leaves_no_row_and_no_event(Some(&db));
}

/// Appends an event the way a write does (the transaction has an id before the
/// sequence hands out its `seq`), on a transaction the test holds open.
fn raw_event(tx: &mut ferrobase_testkit::postgres::Transaction<'_>, id: &str) -> i64 {
    tx.query_one("SELECT pg_current_xact_id()::text", &[])
        .expect("xact id");
    let row = tx
        .query_one(
            "INSERT INTO \"_ferrobase_events\" (\"resource\", \"op\", \"record_id\", \"version\", \"at\", \"record\") VALUES ('items', 'create', CAST($1::text AS uuid), 1, now(), '{}') RETURNING \"seq\"",
            &[&id],
        )
        .expect("insert event");
    row.get(0)
}

/// Reads until the follower's position reaches `until`, polling (other tests' running
/// transactions on the same server may hold it back for a moment).
fn follow_until(
    rt: &tokio::runtime::Runtime,
    follower: &mut ferrobase_store::EventFollower,
    until: i64,
) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while follower.position() < until {
        let batch = rt.block_on(follower.next_batch(100)).expect("follow");
        seen.extend(batch.events.iter().map(|e| e.seq));
        assert!(
            Instant::now() < deadline,
            "the follower stopped at {} before {until}",
            follower.position()
        );
        if batch.events.is_empty() {
            std::thread::yield_now();
        }
    }
    seen
}

#[test]
fn a_follower_reads_events_committed_out_of_seq_order_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&rt, dir.path(), Some(&db));
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let res = items(&schema);
    let mut follower = store.follow_events(0);
    let first = rt
        .block_on(store.records().insert(res, new_item(A, "first", T0), None))
        .expect("insert");
    assert_eq!(follow_until(&rt, &mut follower, 1).len(), 1, "{first:?}");

    let mut early =
        ferrobase_testkit::postgres::Client::connect(db.url(), ferrobase_testkit::postgres::NoTls)
            .expect("connect");
    let mut late =
        ferrobase_testkit::postgres::Client::connect(db.url(), ferrobase_testkit::postgres::NoTls)
            .expect("connect");
    // `early` takes the lower seq but commits last.
    let mut early_tx = early.transaction().expect("begin");
    let low = raw_event(&mut early_tx, B);
    let mut late_tx = late.transaction().expect("begin");
    let high = raw_event(&mut late_tx, C);
    assert!(low < high);
    late_tx.commit().expect("commit the later seq first");

    // The later seq is committed and visible, but the follower must not pass `low`
    // while its transaction may still commit.
    for _ in 0..5 {
        let batch = rt.block_on(follower.next_batch(100)).expect("follow");
        assert!(batch.events.is_empty(), "{:?}", batch.events);
        assert!(follower.position() < low);
    }
    early_tx.commit().expect("commit the earlier seq");
    assert_eq!(follow_until(&rt, &mut follower, high), vec![low, high]);

    // A rolled-back write leaves a hole the follower passes once its transaction ended.
    let mut hole_tx = early.transaction().expect("begin");
    let hole = raw_event(&mut hole_tx, D);
    hole_tx.rollback().expect("rollback");
    let after = rt
        .block_on(
            store
                .records()
                .insert(res, new_item(D, "after the hole", T1), None),
        )
        .expect("insert");
    let last = rt.block_on(store.events().last_event()).expect("last");
    assert!(last > hole, "{after:?}");
    assert_eq!(follow_until(&rt, &mut follower, last), vec![last]);
    let batch = rt.block_on(follower.next_batch(100)).expect("follow");
    assert!(batch.events.is_empty(), "{:?}", batch.events);
}

/// The writer's transaction got its id after the last transaction the server completed
/// (nothing else committed meanwhile): PostgreSQL 14+ puts such an id at or above the
/// snapshot's `xmax` without listing it, so a follower that trusted `xmax` took the seq
/// for final and passed it before the commit made it visible (seen as events missing
/// from realtime streams under steady sequential writes).
#[test]
fn a_follower_waits_for_a_writer_whose_id_is_above_the_snapshot_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&rt, dir.path(), Some(&db));
    let mut follower = store.follow_events(0);
    let mut writer =
        ferrobase_testkit::postgres::Client::connect(db.url(), ferrobase_testkit::postgres::NoTls)
            .expect("connect");
    for round in 0..20 {
        let mut tx = writer.transaction().expect("begin");
        let seq = raw_event(&mut tx, &format!("00000000-0000-7000-8000-{round:012}"));
        // Polled at once, with the writer's transaction open: nothing may be final.
        let batch = rt.block_on(follower.next_batch(100)).expect("follow");
        assert!(batch.events.is_empty(), "{:?}", batch.events);
        assert!(follower.position() < seq, "passed {seq} before its commit");
        tx.commit().expect("commit");
        assert_eq!(follow_until(&rt, &mut follower, seq), vec![seq]);
    }
}

/// Statistics taken while the log was small (an `ANALYZE` when it held two events) made
/// SQLite scan the whole log for every follower read; the store forgets its own tables'
/// statistics when it opens, so the read seeks to the position again.
#[test]
fn early_statistics_do_not_make_followers_scan_the_log_on_sqlite() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let res = items(&schema);
    let ids = [
        "01900000-0000-7000-8000-00000000aa01",
        "01900000-0000-7000-8000-00000000aa02",
    ];
    {
        let store = open(&rt, dir.path(), None);
        for id in ids {
            rt.block_on(store.records().insert(res, new_item(id, "early", T0), None))
                .expect("insert");
        }
    }
    let file = dir.path().join("data").join("ferrobase.db");
    let plan = || {
        let conn = rusqlite::Connection::open(&file).expect("open");
        conn.query_row(
            "EXPLAIN QUERY PLAN SELECT \"seq\" FROM \"_ferrobase_events\" WHERE \"seq\" > ?1 AND \"seq\" <= ?2 ORDER BY \"seq\" LIMIT ?3",
            rusqlite::params![1, i64::MAX, 500],
            |row| row.get::<_, String>(3),
        )
        .expect("plan")
    };
    rusqlite::Connection::open(&file)
        .expect("open")
        .execute_batch("ANALYZE")
        .expect("analyze");
    assert!(
        plan().starts_with("SCAN"),
        "the statistics mislead: {}",
        plan()
    );
    // Opening the store again drops them.
    drop(open(&rt, dir.path(), None));
    assert!(plan().starts_with("SEARCH"), "{}", plan());
}
