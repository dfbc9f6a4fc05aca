//! `[database] statement_cache = false` on PostgreSQL (for poolers in transaction mode):
//! every statement goes unprepared, and reads, writes, lists and sign-ins work as with
//! the cache.

use ferrobase_testkit::{Backend, Project};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

#[test]
fn the_api_works_without_prepared_statements() {
    let project = Project::on(Backend::Postgres).settings("[database]\nstatement_cache = false\n");
    if project.database_url().is_none() {
        return;
    }
    let s = project.serve(BIN);
    let r = s.post(
        "/api/v1/auth/register",
        &json!({"email": "ann@example.com", "password": "correct horse battery", "name": "Ann"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.json()["data"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let send = |method: &str, path: &str, body: Option<serde_json::Value>| {
        s.send(|c| {
            let mut rb = c
                .request(method.parse().expect("method"), s.url(path))
                .bearer_auth(&token);
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            rb
        })
    };
    let mut ids = Vec::new();
    for n in 0..3 {
        let r = send(
            "POST",
            "/api/v1/posts",
            Some(
                json!({"title": format!("Post {n}"), "slug": format!("post-{n}"), "status": "published"}),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json()["data"]["id"].as_str().expect("id").to_owned());
    }
    // The same statements again and again: nothing is left prepared to collide with.
    for _ in 0..3 {
        let r = send("GET", "/api/v1/posts?sort=-created_at&limit=2", None);
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(2));
        let r = send("GET", &format!("/api/v1/posts/{}", ids[0]), None);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = send(
        "POST",
        "/api/v1/posts",
        Some(json!({"title": "Again", "slug": "post-0"})),
    );
    assert_eq!(
        r.status, 409,
        "a unique value is still a conflict: {}",
        r.text
    );
}
