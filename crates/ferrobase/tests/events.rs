//! The event log through the real binary: after `kill -9` under concurrent writes and a
//! restart, the log holds exactly the acknowledged writes (plus at most the writes in
//! flight when the process died, which may have committed without their answer), each
//! once, in one order a follower reads without gaps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrobase_schema::{Settings, SourceFile, schema_from_str};
use ferrobase_store::{EventOp, RecordEvent, Store};
use ferrobase_testkit::{Backend, Project};
use serde_json::json;

/// The store these tests run on; `pg_events.rs` includes this file with PostgreSQL.
#[allow(
    dead_code,
    reason = "unused where another file includes this one as a module"
)]
fn backend() -> Backend {
    Backend::Sqlite
}

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const SCHEMA: &str = r#"
[resources.items.fields]
title = { type = "string", required = true }
[resources.items.rules]
list   = "true"
view   = "true"
create = "true"
"#;

const WRITERS: usize = 6;

/// Every event in the project's database, read by a follower from the start.
fn read_log(project: &Project) -> Vec<RecordEvent> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let env: BTreeMap<String, String> = project
        .database_url()
        .map(|url| ("DATABASE_URL".to_owned(), url.to_owned()))
        .into_iter()
        .collect();
    let settings = Settings::load(&SourceFile::new("ferrobase.toml", ""), &env).expect("settings");
    let schema = Arc::new(schema_from_str("schema.toml", SCHEMA).expect("schema"));
    rt.block_on(async {
        let store = Store::open(project.path(), &settings, schema).expect("store");
        store
            .maintenance()
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
        let last = store.events().last_event().await.expect("last");
        let mut follower = store.follow_events(0);
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while follower.position() < last {
            events.extend(follower.next_batch(500).await.expect("follow").events);
            assert!(Instant::now() < deadline, "the follower did not catch up");
            tokio::task::yield_now().await;
        }
        events
    })
}

#[test]
fn kill_9_under_concurrent_writes_leaves_exactly_the_acknowledged_events() {
    // Rate limits are on by default; this test writes as fast as it can.
    let s = Project::on(crate::backend())
        .schema(SCHEMA)
        .settings("[rate_limit]\nenabled = false\n")
        .serve(BIN);
    let url = s.url("/api/v1/items");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let died = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, acked, died) = (url.clone(), acked.clone(), died.clone());
            std::thread::spawn(move || {
                let client = ferrobase_testkit::reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut n = 0;
                while !died.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = client
                        .post(&url)
                        .json(&json!({"title": format!("writer {w} item {n}")}))
                        .send();
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let body: serde_json::Value = r.json().expect("json");
                            let id = body["data"]["id"].as_str().expect("id").to_owned();
                            acked.lock().expect("lock").push(id);
                        }
                        Ok(r) => panic!("unexpected answer {}", r.status()),
                        // The server was killed under this request.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 300 {
        assert!(Instant::now() < deadline, "the writers did not get going");
        std::thread::yield_now();
    }
    s.signal("KILL");
    died.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked: BTreeSet<String> = acked.lock().expect("lock").iter().cloned().collect();

    // Restart: the node serves again and its writes are logged after the others.
    let s = s.into_project().serve(BIN);
    let after = s.post("/api/v1/items", &json!({"title": "after the restart"}));
    assert_eq!(after.status, 201, "{}", after.text);
    let after_id = after.json()["data"]["id"].as_str().expect("id").to_owned();
    let project = s.into_project();

    let events = read_log(&project);
    assert!(
        events
            .iter()
            .all(|e| e.op == EventOp::Create && e.resource == "items")
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "one order");
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "one event per write");
    for id in &acked {
        assert!(
            distinct.contains(id.as_str()),
            "acknowledged {id} has no event"
        );
    }
    assert_eq!(ids.last(), Some(&after_id.as_str()));
    let unacknowledged = distinct
        .iter()
        .filter(|id| !acked.contains(**id) && **id != after_id)
        .count();
    assert!(
        unacknowledged <= WRITERS,
        "{unacknowledged} events without an acknowledged write, more than were in flight"
    );
    if project.database_url().is_none() {
        // One writer commits in order: SQLite's log has no holes at all.
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let expected: Vec<i64> = (seqs[0]..seqs[0] + seqs.len() as i64).collect();
        assert_eq!(seqs, expected);
    }
}
