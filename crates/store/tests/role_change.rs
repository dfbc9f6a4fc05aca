//! A user's role change ends their sessions in the same transaction: when ending them
//! fails, the role does not change (and no event says it did).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferrobase_schema::input::Change;
use ferrobase_schema::{Settings, SourceFile, USERS, schema_from_str, templates};
use ferrobase_store::{Access, NewRecord, ResourceId, SessionRow, Store, Update};
use ferrobase_testkit::services::TestDatabase;
use serde_json::json;

const USER: &str = "01900000-0000-7000-8000-0000000000aa";
const NOW: &str = "2026-01-02T12:00:00.000000Z";
const LATER: &str = "2030-01-01T00:00:00.000000Z";

fn at(text: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("time")
}

fn promote(role_field: usize) -> Update {
    Update {
        now: NOW.into(),
        changes: vec![(role_field, Change::Set(json!("editor")))],
        if_match: None,
        guard: None,
        targets: Default::default(),
        actor: None,
    }
}

/// Runs the scenario; `break_revocation` installs a trigger that makes ending sessions
/// fail, `repair` removes it.
fn role_change_is_one_transaction(
    db: Option<&TestDatabase>,
    break_revocation: &dyn Fn(&std::path::Path),
    repair: &dyn Fn(&std::path::Path),
) {
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
    let schema = Arc::new(schema_from_str("schema.toml", templates::BLOG_SCHEMA).expect("schema"));
    let users = schema
        .resources
        .iter()
        .position(|r| r.name == USERS)
        .expect("users");
    let resource = &schema.resources[users];
    let role = resource
        .fields
        .iter()
        .position(|f| f.name == "role")
        .expect("role");
    let res = ResourceId(users);
    let mut values = vec![serde_json::Value::Null; resource.fields.len()];
    values[0] = json!("someone@example.com");
    values[role] = json!("viewer");
    values[resource
        .fields
        .iter()
        .position(|f| f.name == "verified")
        .expect("verified")] = json!(false);
    let store = rt.block_on(async {
        let store = Store::open(dir.path(), &settings, schema.clone()).expect("store");
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
                    id: USER.into(),
                    now: NOW.into(),
                    values,
                    targets: Default::default(),
                    actor: None,
                },
                None,
            )
            .await
            .expect("user");
        store
            .sessions()
            .insert_session(SessionRow {
                id: "01900000-0000-7000-8000-0000000000bb".into(),
                user_id: USER.into(),
                token_hash: "session-hash".into(),
                created_at: at(NOW),
                expires_at: at(LATER),
            })
            .await
            .expect("session");
        store
    });
    let events_before = rt.block_on(store.events().last_event()).expect("last");

    break_revocation(dir.path());
    let refused = rt.block_on(store.records().update(
        res,
        USER.into(),
        promote(role),
        Access::default(),
    ));
    assert!(refused.is_err(), "{refused:?}");
    let user = rt
        .block_on(store.records().get(res, USER.into(), None))
        .expect("get")
        .expect("user");
    assert_eq!(user.values[role], "viewer", "the role stayed");
    assert_eq!(user.version, 1);
    assert_eq!(
        rt.block_on(store.events().last_event()).expect("last"),
        events_before
    );
    assert!(
        rt.block_on(store.sessions().session("session-hash".into(), at(NOW)))
            .expect("session")
            .is_some()
    );

    repair(dir.path());
    let promoted = rt
        .block_on(
            store
                .records()
                .update(res, USER.into(), promote(role), Access::default()),
        )
        .expect("update")
        .expect("user");
    assert_eq!(promoted.values[role], "editor");
    assert!(
        rt.block_on(store.sessions().session("session-hash".into(), at(NOW)))
            .expect("session")
            .is_none(),
        "the old session ended with the role change"
    );
}

#[test]
fn a_role_change_whose_revocation_fails_leaves_the_role_on_sqlite() {
    let file = |dir: &std::path::Path| {
        rusqlite::Connection::open(dir.join("data/ferrobase.db")).expect("open")
    };
    role_change_is_one_transaction(
        None,
        &|dir| {
            file(dir)
                .execute_batch(
                    "CREATE TRIGGER fail_revoke BEFORE UPDATE ON _ferrobase_sessions BEGIN SELECT RAISE(ABORT, 'revocation fails'); END;",
                )
                .expect("trigger");
        },
        &|dir| {
            file(dir)
                .execute_batch("DROP TRIGGER fail_revoke;")
                .expect("drop trigger");
        },
    );
}

#[test]
fn a_role_change_whose_revocation_fails_leaves_the_role_on_postgres() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let url = db.url().to_owned();
    let client = || {
        ferrobase_testkit::postgres::Client::connect(&url, ferrobase_testkit::postgres::NoTls)
            .expect("connect")
    };
    role_change_is_one_transaction(
        Some(&db),
        &|_| {
            client()
                .batch_execute(
                    "CREATE FUNCTION fail_revoke() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'revocation fails'; END $$;
                     CREATE TRIGGER fail_revoke BEFORE UPDATE ON _ferrobase_sessions FOR EACH ROW EXECUTE FUNCTION fail_revoke();",
                )
                .expect("trigger");
        },
        &|_| {
            client()
                .batch_execute("DROP TRIGGER fail_revoke ON _ferrobase_sessions;")
                .expect("drop trigger");
        },
    );
}
