//! A delete that cascades through relations leaves an event for every record it changes
//! or removes, on SQLite and PostgreSQL: `on_delete = "cascade"` deletes (deepest
//! first), `"set_null"` updates, and a `"restrict"` anywhere down the cascade refuses the
//! whole delete without an event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrobase_schema::{Settings, SourceFile, schema_from_str};
use ferrobase_store::{
    Access, Deletion, EventOp, NewRecord, RecordEvent, ResourceId, Store, StoreError,
};
use ferrobase_testkit::services::TestDatabase;
use serde_json::{Value, json};

const SCHEMA: &str = r#"
[resources.folders.fields]
name = { type = "string", required = true }

[resources.notes.fields]
folder = { type = "relation", resource = "folders", required = true, on_delete = "cascade" }

[resources.comments.fields]
note = { type = "relation", resource = "notes", required = true, on_delete = "cascade" }

[resources.pins.fields]
folder = { type = "relation", resource = "folders", on_delete = "set_null" }
label  = { type = "string" }

[resources.stars.fields]
comment = { type = "relation", resource = "comments", on_delete = "restrict" }
"#;

const T0: &str = "2026-01-02T12:00:00.000000Z";
const T1: &str = "2026-01-02T12:00:01.000000Z";

fn id(n: u32) -> String {
    format!("01900000-0000-7000-8000-{n:012}")
}

fn run(db: Option<&TestDatabase>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let env: BTreeMap<String, String> = db
        .iter()
        .map(|db| ("DATABASE_URL".to_owned(), db.url().to_owned()))
        .collect();
    let settings = Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    let res = |name: &str| {
        ResourceId(
            schema
                .resources
                .iter()
                .position(|r| r.name == name)
                .expect("resource"),
        )
    };
    rt.block_on(async {
        let store = Store::open(dir.path(), &settings, schema.clone()).expect("store");
        store
            .maintenance()
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        let insert = |r: &str, n: u32, values: Vec<Value>| {
            let store = store.clone();
            let res = res(r);
            async move {
                store
                    .records()
                    .insert(
                        res,
                        NewRecord {
                            id: id(n),
                            now: T0.into(),
                            values,
                            targets: Default::default(),
                            actor: None,
                        },
                        None,
                    )
                    .await
                    .expect("insert");
            }
        };
        // Folder 1 holds notes 2 and 3; note 2 has comments 4 and 5; pin 6 points at the
        // folder, pin 7 at nothing. Folder 10 holds note 11 whose comment 12 is starred.
        insert("folders", 1, vec![json!("inbox")]).await;
        insert("notes", 2, vec![json!(id(1))]).await;
        insert("notes", 3, vec![json!(id(1))]).await;
        insert("comments", 4, vec![json!(id(2))]).await;
        insert("comments", 5, vec![json!(id(2))]).await;
        insert("pins", 6, vec![json!(id(1)), json!("top")]).await;
        insert("pins", 7, vec![Value::Null, json!("loose")]).await;
        insert("folders", 10, vec![json!("archive")]).await;
        insert("notes", 11, vec![json!(id(10))]).await;
        insert("comments", 12, vec![json!(id(11))]).await;
        insert("stars", 13, vec![json!(id(12))]).await;
        let before = store.events().last_event().await.expect("last");

        let deletion = Deletion {
            if_match: None,
            access: Access::default(),
            actor: Some(id(99)),
            now: T1.into(),
        };
        // A restricting reference deep down refuses the whole delete: no event at all.
        let refused = store
            .records()
            .delete(res("folders"), id(10), deletion.clone())
            .await;
        assert!(
            matches!(refused, Err(StoreError::Referenced)),
            "{refused:?}"
        );
        assert_eq!(store.events().last_event().await.expect("last"), before);

        assert!(
            store
                .records()
                .delete(res("folders"), id(1), deletion)
                .await
                .expect("delete")
        );
        // Read until the follower reaches the last event (on PostgreSQL other tests'
        // open transactions may hold it back for a moment).
        let last = store.events().last_event().await.expect("last");
        let mut follower = store.follow_events(before);
        let mut events: Vec<RecordEvent> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while follower.position() < last {
            events.extend(follower.next_batch(100).await.expect("follow").events);
            assert!(
                std::time::Instant::now() < deadline,
                "the follower is stuck"
            );
            tokio::task::yield_now().await;
        }
        let summary: Vec<(&str, EventOp, String)> = events
            .iter()
            .map(|e| (e.resource.as_str(), e.op, e.id.clone()))
            .collect();
        // The pin is cleared first; then the deepest records go before what held them;
        // the folder last.
        assert_eq!(summary[0], ("pins", EventOp::Update, id(6)));
        assert_eq!(summary.last(), Some(&("folders", EventOp::Delete, id(1))));
        let position = |r: &str, n: u32| {
            summary
                .iter()
                .position(|(res, op, i)| *res == r && *op == EventOp::Delete && *i == id(n))
                .unwrap_or_else(|| panic!("no delete event for {r} {n}: {summary:?}"))
        };
        assert!(position("comments", 4) < position("notes", 2));
        assert!(position("comments", 5) < position("notes", 2));
        assert_eq!(summary.len(), 6, "{summary:?}");
        position("notes", 3);
        let pin = &events[0];
        assert_eq!(pin.record["folder"], Value::Null);
        assert_eq!(pin.record["label"], "top");
        assert_eq!(pin.record["version"], 2);
        assert_eq!(
            pin.previous.as_ref().map(|p| p["folder"].clone()),
            Some(json!(id(1)))
        );
        assert!(events.iter().all(|e| e.actor.as_deref() == Some(&*id(99))));
        assert!(events.iter().all(|e| e.at == T1));
        // The records are gone or changed as the events say.
        let get = |r: &str, n: u32| {
            let store = store.clone();
            let res = res(r);
            async move { store.records().get(res, id(n), None).await.expect("get") }
        };
        for (r, n) in [("folders", 1), ("notes", 2), ("notes", 3), ("comments", 4)] {
            assert!(get(r, n).await.is_none(), "{r} {n} still there");
        }
        let pin = get("pins", 6).await.expect("pin stays");
        assert_eq!(pin.values[0], Value::Null);
        assert_eq!(pin.version, 2);
        assert_eq!(get("pins", 7).await.expect("pin").version, 1);
        assert!(
            get("notes", 11).await.is_some(),
            "the refused delete kept its notes"
        );
    });
}

#[test]
fn a_cascading_delete_has_an_event_for_every_record_it_touches_on_sqlite() {
    run(None);
}

#[test]
fn a_cascading_delete_has_an_event_for_every_record_it_touches_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    run(Some(&db));
}
