//! `ferrobase users create --email E --role R`: bootstraps accounts (the first admin)
//! from the command line. The password comes from standard input, never an argument, so
//! it stays out of shell history and process listings.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use std::collections::BTreeMap;

use ferrobase_auth::Passwords;
use ferrobase_auth::password::check_length;
use ferrobase_http::AppState;
use ferrobase_records::{RecordError, Registrant};
use ferrobase_store::{Store, StoreError};
use serde_json::{Map, Value};

use crate::{EXIT_CONFIG, EXIT_RUNTIME, project};

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Creates one user.
pub fn create(dir: &Path, email: &str, role: &str) -> ExitCode {
    let project = match project::load(dir) {
        Ok(p) => p,
        Err(problems) => {
            project::report(&problems);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if !project.schema.auth.roles.iter().any(|r| r == role) {
        return fail(
            EXIT_CONFIG,
            format!(
                "role '{role}' is not one of: {}",
                project.schema.auth.roles.join(", ")
            ),
        );
    }
    let mut password = String::new();
    if std::io::stdin().lock().read_line(&mut password).is_err() {
        return fail(
            EXIT_CONFIG,
            "could not read the password from standard input",
        );
    }
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    if let Err(m) = check_length(&password) {
        return fail(EXIT_CONFIG, format!("the password {m}"));
    }
    let schema = Arc::new(project.schema);
    if !schema.resources.iter().any(|r| r.is_users()) {
        return fail(EXIT_RUNTIME, "the schema has no users resource");
    }
    let mut body = Map::new();
    body.insert("email".into(), Value::String(email.to_owned()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_RUNTIME, e),
    };
    let settings = Arc::new(project.settings);
    let result = runtime.block_on(async {
        let store = Store::open(&project.dir, &settings, schema.clone())?;
        store
            .maintenance()
            .wait_ready(std::time::Duration::from_secs(30))
            .await?;
        let redis = match settings.redis.url.as_deref() {
            Some(url) => Some(
                ferrobase_cluster::Redis::connect(url, &settings.redis.prefix)
                    .map_err(|e| RecordError::Store(StoreError::Config(e.to_string())))?,
            ),
            None => None,
        };
        // The record service of a node: the write gets its event, and the effects every
        // write has (the shared read cache forgets) run as they would for a request.
        let records = AppState::new(schema.clone(), settings.clone(), store, redis)
            .records
            .clone();
        let account = records.plan_account(Registrant::Operator, body, BTreeMap::new())?;
        let hash = Passwords::default().hash(&password);
        records.create_account(account, hash, Some(role)).await
    });
    match result {
        Ok(record) => {
            println!("created user {} ({email}, role {role})", record.id);
            ExitCode::SUCCESS
        }
        Err(RecordError::Store(StoreError::Unique { .. })) => fail(
            EXIT_CONFIG,
            format!("a user with the email {email} already exists"),
        ),
        Err(RecordError::Invalid(errors)) => {
            let text: Vec<String> = errors
                .iter()
                .map(|(k, v)| format!("{k} {}", v.join(", ")))
                .collect();
            fail(EXIT_CONFIG, text.join("; "))
        }
        Err(e) => fail(EXIT_RUNTIME, e),
    }
}
