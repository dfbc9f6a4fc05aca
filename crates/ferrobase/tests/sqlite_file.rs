//! The embedded store notices when its database file is taken away under it: writes
//! are refused (never acknowledged and then lost) and `/ready` says 503.

use ferrobase_testkit::Project;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ferrobase");

const SCHEMA: &str = r#"
[resources.items.fields]
title = { type = "string" }
[resources.items.rules]
list   = "true"
view   = "true"
create = "true"
"#;

#[test]
fn removing_the_data_directory_refuses_writes_instead_of_losing_them() {
    let s = Project::new().schema(SCHEMA).serve(BIN);
    let kept = s.post("/api/v1/items", &json!({"title": "before"}));
    assert_eq!(kept.status, 201, "{}", kept.text);
    assert_eq!(s.get("/ready").status, 200);

    std::fs::remove_dir_all(s.dir().join("data")).expect("remove data/");

    for title in ["after-1", "after-2"] {
        let r = s.post("/api/v1/items", &json!({"title": title}));
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.code(), "UNAVAILABLE", "{}", r.text);
        assert!(r.text.contains("database file"), "{}", r.text);
    }
    let batch = s.post(
        "/api/v1/batch",
        &json!({"operations": [{"method": "POST", "path": "items", "body": {"title": "b"}}]}),
    );
    assert_eq!(batch.status, 503, "{}", batch.text);
    let ready = s.get("/ready");
    assert_eq!(ready.status, 503, "{}", ready.text);

    // After a restart nothing that was answered 2xx is missing: the refused writes were
    // never acknowledged.
    let s = s.into_project().serve(BIN);
    let list = s.get("/api/v1/items");
    assert_eq!(list.status, 200, "{}", list.text);
    let titles: Vec<String> = list.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!titles.iter().any(|t| t.starts_with("after")), "{titles:?}");
    assert_eq!(s.get("/ready").status, 200);
}
