//! `ferrobase migrate plan|create NAME|apply|status` (SPEC §9).
//!
//! Migration files are database-neutral steps (`migrations/<timestamp>_<name>.toml`).
//! `create` writes the steps from what the files lead to up to `schema.toml`; `plan`
//! prints the SQL the configured database would run; `apply` runs pending files, each in
//! a transaction, recording name and checksum; `status` lists applied and pending ones.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use ferrobase_schema::migration::{MigrationFile, Risk, SchemaState, Step, diff};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::migrate::{
    AppliedMigration, MigrationSource, StartupPolicy, pending, read_migrations, replay,
};
use ferrobase_store::{Store, StoreError};

use crate::{EXIT_CONFIG, EXIT_RUNTIME, project};

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn code_of(e: &StoreError) -> u8 {
    match e {
        StoreError::Config(_) => EXIT_CONFIG,
        _ => EXIT_RUNTIME,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(EXIT_RUNTIME, e))
}

fn files(dir: &Path) -> Result<Vec<MigrationSource>, ExitCode> {
    read_migrations(&dir.join("migrations")).map_err(|e| fail(EXIT_CONFIG, e))
}

/// `migrate create NAME`: writes the steps from the files' state to `schema.toml`.
pub fn create(dir: &Path, name: &str) -> ExitCode {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return fail(
            EXIT_CONFIG,
            "a migration name is lower-case letters, digits and _ (up to 64), like add_tags",
        );
    }
    let project = match project::load(dir) {
        Ok(p) => p,
        Err(problems) => {
            project::report(&problems);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let files = match files(dir) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let state = match replay(&files) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let steps = diff(&state, &project.schema);
    if steps.is_empty() {
        println!("schema.toml matches the migrations; nothing to write");
        return ExitCode::SUCCESS;
    }
    let file = MigrationFile { steps };
    let text = match file.render() {
        Ok(t) => t,
        Err(e) => return fail(EXIT_RUNTIME, e),
    };
    let stamp = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    );
    let folder = dir.join("migrations");
    if let Err(e) = std::fs::create_dir_all(&folder) {
        return fail(
            EXIT_RUNTIME,
            format!("cannot create {}: {e}", folder.display()),
        );
    }
    // Never overwrite: a second migration in the same second gets a suffix.
    let mut path = folder.join(format!("{stamp}_{name}.toml"));
    let mut n = 2;
    while path.exists() {
        path = folder.join(format!("{stamp}_{name}_{n}.toml"));
        n += 1;
    }
    if let Err(e) = std::fs::write(&path, text) {
        return fail(
            EXIT_RUNTIME,
            format!("cannot write {}: {e}", path.display()),
        );
    }
    println!("wrote {}", path.display());
    for step in &file.steps {
        println!("  {}{}", step.describe(), risk_note(step));
    }
    ExitCode::SUCCESS
}

fn risk_note(step: &Step) -> &'static str {
    match step.risk() {
        Risk::Additive => "",
        Risk::Checked => "  [checked against existing rows]",
        Risk::Destructive => "  [DESTRUCTIVE: needs --allow-destructive]",
    }
}

/// Opens the project's store without changing anything at start-up.
fn open(dir: &Path) -> Result<(project::Project, Store, tokio::runtime::Runtime), ExitCode> {
    let project = project::load(dir).map_err(|problems| {
        project::report(&problems);
        ExitCode::from(EXIT_CONFIG)
    })?;
    let rt = runtime()?;
    let schema = Arc::new(project.schema.clone());
    let store = rt
        .block_on(async {
            let store = Store::open_with(
                &project.dir,
                &project.settings,
                schema,
                StartupPolicy::Manual,
            )?;
            store
                .maintenance()
                .wait_ready(std::time::Duration::from_secs(30))
                .await?;
            Ok::<_, StoreError>(store)
        })
        .map_err(|e| fail(code_of(&e), e))?;
    Ok((project, store, rt))
}

/// What `status` and `plan` look at: the project, its store, the migration files, the
/// recorded state and the applied migrations.
struct Loaded {
    project: project::Project,
    store: Store,
    files: Vec<MigrationSource>,
    recorded: Option<SchemaState>,
    applied: Vec<AppliedMigration>,
}

fn load(dir: &Path) -> Result<Loaded, ExitCode> {
    let (project, store, rt) = open(dir)?;
    let files = files(dir)?;
    let (recorded, applied) = rt
        .block_on(store.maintenance().migrations())
        .map_err(|e| fail(code_of(&e), e))?;
    Ok(Loaded {
        project,
        store,
        files,
        recorded,
        applied,
    })
}

/// `migrate status`: applied and pending migrations, and unwritten schema changes.
pub fn status(dir: &Path) -> ExitCode {
    let Loaded {
        project,
        files,
        applied,
        ..
    } = match load(dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    for a in &applied {
        println!("applied  {}  ({})", a.name, a.applied_at);
    }
    let todo = match pending(&files, &applied) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    for p in &todo {
        println!("pending  {}", p.name);
    }
    match replay(&files) {
        Ok(state) => {
            let unwritten = diff(&state, &project.schema);
            if !unwritten.is_empty() {
                println!(
                    "schema.toml has changes no migration makes yet (ferrobase migrate create NAME):"
                );
                for step in &unwritten {
                    println!("  {}", step.describe());
                }
            }
        }
        Err(e) => return fail(EXIT_CONFIG, e),
    }
    if todo.is_empty() && applied.is_empty() {
        println!("no migrations yet");
    }
    ExitCode::SUCCESS
}

/// `migrate plan`: the SQL of pending migrations (and of unwritten changes) for the
/// configured database.
pub fn plan(dir: &Path) -> ExitCode {
    let Loaded {
        project,
        store,
        files,
        recorded,
        applied,
    } = match load(dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let todo = match pending(&files, &applied) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let postgres = store.is_postgres();
    let mut state = recorded.unwrap_or_default();
    let print = |title: &str, steps: &[Step], state: &mut SchemaState| -> Result<(), String> {
        println!("-- {title}");
        for step in steps {
            if state.satisfies(step) {
                println!("-- {} (already done)", step.describe());
                continue;
            }
            println!("-- {}{}", step.describe(), risk_note(step));
            let sql = ferrobase_store::migrate::render_sql(postgres, state, step)
                .map_err(|e| e.to_string())?;
            for s in sql {
                println!("{s};");
            }
            state.apply(step)?;
        }
        Ok(())
    };
    for m in &todo {
        if let Err(e) = print(&format!("migration {}", m.name), &m.file.steps, &mut state) {
            return fail(EXIT_CONFIG, e);
        }
    }
    let after_files = match replay(&files) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let unwritten = diff(&after_files, &project.schema);
    if !unwritten.is_empty()
        && let Err(e) = print(
            "schema.toml changes no migration makes yet (write them with `ferrobase migrate create NAME`)",
            &unwritten,
            &mut state,
        )
    {
        return fail(EXIT_CONFIG, e);
    }
    if todo.is_empty() && unwritten.is_empty() {
        println!("-- nothing pending");
    }
    ExitCode::SUCCESS
}

/// `migrate apply [--allow-destructive]`.
pub fn apply(dir: &Path, allow_destructive: bool) -> ExitCode {
    let (_, store, rt) = match open(dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let files = match files(dir) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let now = format_datetime(time::OffsetDateTime::now_utc());
    match rt.block_on(
        store
            .maintenance()
            .apply_migrations(files, allow_destructive, now),
    ) {
        Ok(done) if done.is_empty() => {
            println!("nothing to apply");
            ExitCode::SUCCESS
        }
        Ok(done) => {
            for name in done {
                println!("applied {name}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(code_of(&e), e),
    }
}
