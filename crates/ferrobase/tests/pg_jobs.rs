//! `jobs.rs` on PostgreSQL, and what only several nodes on one database show: each job
//! runs once, each cron tick is enqueued once.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrobase_testkit::Backend;
use ferrobase_testkit::receiver::Receiver;
use serde_json::json;

fn backend() -> Backend {
    Backend::Postgres
}

#[path = "jobs.rs"]
mod cases;

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

#[test]
fn two_nodes_run_each_job_once_and_each_tick_once() {
    let receiver = Receiver::start(|_| (200, "{}".into()));
    let s = cases::project(
        &receiver,
        r#"
[schedules.every_second]
cron = "* * * * * *"
job = "render"
payload = { kind = "tick" }
"#,
    )
    .serve(BIN);
    if s.project().database_url().is_none() {
        return; // PostgreSQL unreachable: said so loudly by the harness.
    }
    let admin = cases::admin_token(&s);
    let b = s.another(BIN);
    const N: usize = 60;
    for n in 0..N {
        // Alternate nodes: both enqueue, both work.
        let node = if n % 2 == 0 { &s } else { &b };
        cases::enqueue(node, &admin, json!({"type": "render", "payload": {"n": n}}));
    }
    // Wait until every enqueued job and at least three ticks were delivered.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let received = receiver.received();
        let jobs = received
            .iter()
            .filter(|r| r.json()["n"].is_number())
            .count();
        let ticks = received
            .iter()
            .filter(|r| r.json()["kind"] == "tick")
            .count();
        if jobs >= N && ticks >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "{jobs} jobs, {ticks} ticks delivered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut per_job: BTreeMap<String, usize> = BTreeMap::new();
    for r in receiver.received() {
        *per_job
            .entry(r.header("ferrobase-job-id").expect("job id").to_owned())
            .or_default() += 1;
    }
    assert!(
        per_job.values().all(|&n| n == 1),
        "a job ran twice: {per_job:?}"
    );
    let ns: std::collections::BTreeSet<i64> = receiver
        .received()
        .iter()
        .filter_map(|r| r.json()["n"].as_i64())
        .collect();
    assert_eq!(ns.len(), N);
    // One job per tick, whichever node enqueued it.
    let listed = cases::call(
        &s,
        &admin,
        "GET",
        "/api/v1/admin/jobs?type=render&limit=200",
        None,
    );
    let mut per_tick: BTreeMap<String, usize> = BTreeMap::new();
    for j in listed.json()["data"].as_array().expect("data") {
        if j["payload"]["kind"] == "tick" {
            *per_tick
                .entry(j["runAt"].as_str().expect("runAt").to_owned())
                .or_default() += 1;
        }
    }
    assert!(per_tick.len() >= 3, "{per_tick:?}");
    assert!(
        per_tick.values().all(|&n| n == 1),
        "a tick ran twice: {per_tick:?}"
    );
}
