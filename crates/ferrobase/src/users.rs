//! `ferrobase users create --email E --role R`: bootstraps accounts (the first admin)
//! from the command line. The password comes from standard input, never an argument, so
//! it stays out of shell history and process listings.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use ferrobase_auth::Passwords;
use ferrobase_auth::password::check_length;
use ferrobase_schema::input::{WriteContext, for_create};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{NewRecord, ResourceId, Store, StoreError};
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
    let Some((index, users)) = schema
        .resources
        .iter()
        .enumerate()
        .find(|(_, r)| r.is_users())
    else {
        return fail(EXIT_RUNTIME, "the schema has no users resource");
    };
    let now = format_datetime(time::OffsetDateTime::now_utc());
    let mut body = Map::new();
    body.insert("email".into(), Value::String(email.to_lowercase()));
    let mut values = match for_create(
        users,
        body,
        &WriteContext {
            auth_id: None,
            now: &now,
        },
    ) {
        Ok(v) => v,
        Err(errors) => {
            let text: Vec<String> = errors
                .iter()
                .map(|(k, v)| format!("{k} {}", v.join(", ")))
                .collect();
            return fail(EXIT_CONFIG, text.join("; "));
        }
    };
    let set = |values: &mut Vec<Value>, name: &str, value: Value| {
        if let Some(i) = users.fields.iter().position(|f| f.name == name) {
            values[i] = value;
        }
    };
    set(&mut values, "role", Value::String(role.to_owned()));
    set(
        &mut values,
        "password_hash",
        Value::String(Passwords::default().hash(&password)),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_RUNTIME, e),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let result = runtime.block_on(async {
        let store = Store::open(&project.dir, &project.settings, schema.clone())?;
        store
            .maintenance()
            .wait_ready(std::time::Duration::from_secs(30))
            .await?;
        store
            .records()
            .insert(
                ResourceId(index),
                NewRecord {
                    id,
                    now,
                    values,
                    targets: Default::default(),
                    actor: None,
                },
                None,
            )
            .await
    });
    match result {
        Ok(record) => {
            println!("created user {} ({email}, role {role})", record.id);
            ExitCode::SUCCESS
        }
        Err(StoreError::Unique { .. }) => fail(
            EXIT_CONFIG,
            format!("a user with the email {email} already exists"),
        ),
        Err(e) => fail(EXIT_RUNTIME, e),
    }
}
