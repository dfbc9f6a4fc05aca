//! `realtime.rs` on PostgreSQL: the same test bodies, another store; and two nodes on
//! one database, where a write on one reaches a subscriber on the other.

use ferrobase_testkit::Backend;
use serde_json::json;

fn backend() -> Backend {
    Backend::Postgres
}

#[path = "realtime.rs"]
mod cases;

#[test]
fn a_write_on_one_node_reaches_subscribers_on_another() {
    let a = cases::project("").serve(cases::BIN);
    let b = a.another(cases::BIN);
    let (token, user) = cases::register(&a, "a@example.com");
    let on_b = cases::sse(&b, "/api/v1/posts/events", None, None);
    let mut ws_b = cases::ws(&b, Some(&token));
    cases::subscribe(&mut ws_b, "mine", "posts", json!({}));
    for i in 0..10 {
        let post = cases::create(
            &a,
            &token,
            &user,
            json!({"title": format!("p{i}"), "status": "published"}),
        );
        let e = on_b.next_record();
        assert_eq!(e.json()["record"]["id"], post["id"], "{e:?}");
        assert_eq!(ws_b.recv().expect("event")["record"]["id"], post["id"]);
    }
    // And back: written on B, seen on A; a stream opened right after writes starts
    // after them (never with an event written before it), on either node.
    for i in 0..5 {
        let on_a = cases::sse(&a, "/api/v1/posts/events", None, None);
        let post = cases::create(
            &b,
            &token,
            &user,
            json!({"title": format!("from b {i}"), "status": "published"}),
        );
        assert_eq!(on_a.next_record().json()["record"]["id"], post["id"]);
        let on_b = cases::sse(&b, "/api/v1/posts/events", None, None);
        let post = cases::create(
            &a,
            &token,
            &user,
            json!({"title": format!("from a {i}"), "status": "published"}),
        );
        assert_eq!(on_b.next_record().json()["record"]["id"], post["id"]);
    }
}
