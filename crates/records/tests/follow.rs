//! Writes through the record service wake this node's followers, which then read each
//! write's event (with the writer as actor), on SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrobase_access::{Caller, Identity, Via};
use ferrobase_query::cursor::CursorCodec;
use ferrobase_records::Records;
use ferrobase_schema::{Settings, SourceFile, schema_from_str};
use ferrobase_store::{EventOp, Store};
use ferrobase_testkit::services::TestDatabase;
use serde_json::{Value, json};

const SCHEMA: &str = r#"
[resources.notes.fields]
text = { type = "string" }
[resources.notes.rules]
view   = "true"
create = "@auth.id != null"
update = "@auth.id != null"
"#;

async fn scenario(db: Option<&TestDatabase>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = db
        .iter()
        .map(|db| ("DATABASE_URL".to_owned(), db.url().to_owned()))
        .collect();
    let settings = Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let store = Store::open(dir.path(), &settings, schema.clone()).expect("store");
    store
        .maintenance()
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("ready");
    let records = Records::builder(schema, store, CursorCodec::new([7; 32], None)).build();
    let (notes, _) = records.resource("notes").expect("notes");
    let writer = Identity(Some(Caller {
        id: "01900000-0000-7000-8000-0000000000aa".into(),
        role: "viewer".into(),
        user: None,
        via: Via::Bearer,
    }));
    let mut wakeups = records.event_wakeups();
    let mut follower = records.follow_events(0);

    let Value::Object(body) = json!({"text": "first"}) else {
        unreachable!("object")
    };
    let created = records.create(&writer, notes, body).await.expect("create");
    assert!(
        wakeups.has_changed().expect("open"),
        "the write woke followers"
    );
    wakeups.mark_unchanged();
    let Value::Object(patch) = json!({"text": "second"}) else {
        unreachable!("object")
    };
    records
        .update(&writer, notes, &created.id, patch, Some(vec![1]))
        .await
        .expect("update");
    assert!(wakeups.has_changed().expect("open"));

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(follower.next_batch(10).await.expect("follow").events);
        assert!(Instant::now() < deadline, "{events:?}");
        tokio::task::yield_now().await;
    }
    assert_eq!(events.len(), 2);
    assert_eq!(
        events.iter().map(|e| e.op).collect::<Vec<_>>(),
        vec![EventOp::Create, EventOp::Update]
    );
    assert!(events.iter().all(|e| e.id == created.id
        && e.actor.as_deref() == Some("01900000-0000-7000-8000-0000000000aa")));
    assert_eq!(events[1].record["text"], "second");
    assert_eq!(
        events[1].previous.as_ref().map(|p| p["text"].clone()),
        Some(json!("first"))
    );
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
fn record_writes_reach_followers_on_sqlite() {
    run(None);
}

#[test]
fn record_writes_reach_followers_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    run(Some(&db));
}
