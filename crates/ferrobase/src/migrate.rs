//! `ferrobase migrate plan|create NAME|apply|status` (SPEC §9).
//!
//! Migration files are database-neutral steps (`migrations/<timestamp>_<name>.toml`).
//! `create` writes the steps from what the files lead to up to `schema.toml`; `plan`
//! prints the SQL the configured database would run; `apply` runs pending files, each in
//! a transaction, recording name and checksum; `status` lists applied and pending ones.
//!
//! A development `serve` applies schema changes without writing files, so a database may
//! hold more than its files say (every project that starts with `serve` has tables and no
//! files). That difference is *drift*: `status` and `plan` name it, and `create` writes it
//! first as a baseline migration, which such a database already satisfies (applying it
//! runs nothing) and which builds the same tables on a fresh one. The new migration then
//! starts from what the database holds, so renames declared in `schema.toml` stay renames.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use ferrobase_schema::migration::{MigrationFile, Risk, SchemaState, Step, diff, diff_states};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::migrate::{
    AppliedMigration, MigrationSource, StartupPolicy, advance, pending, read_migrations, replay,
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
    // Where the database is, when it can be reached; the files alone otherwise.
    let position = match open_store(&project) {
        Ok((store, rt)) => match rt.block_on(store.maintenance().migrations()) {
            Ok((recorded, applied)) => Position::of(&files, recorded, &applied, &project.schema),
            Err(e) => return fail(code_of(&e), e),
        },
        Err(e) => {
            eprintln!(
                "warning: cannot reach the database ({e}); writing the migration from migrations/ alone"
            );
            replay(&files).map(Position::files_only)
        }
    };
    let position = match position {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    if !position.drift.is_empty() && position.pending > 0 {
        return fail(
            EXIT_CONFIG,
            "the database holds changes no migration file records and has migrations it has not applied; apply them first (`ferrobase migrate apply`), then write the new one",
        );
    }
    let steps = diff(&position.after, &project.schema);
    if steps.is_empty() && position.drift.is_empty() {
        println!("schema.toml matches the migrations; nothing to write");
        return ExitCode::SUCCESS;
    }
    let folder = dir.join("migrations");
    if let Err(e) = std::fs::create_dir_all(&folder) {
        return fail(
            EXIT_RUNTIME,
            format!("cannot create {}: {e}", folder.display()),
        );
    }
    let now = time::OffsetDateTime::now_utc();
    if !position.drift.is_empty() {
        // Written a second earlier than the change, so that it sorts first.
        let baseline = MigrationFile {
            steps: position.drift,
        };
        let at = now - time::Duration::seconds(1);
        if let Err(code) = write_migration(&folder, at, &format!("{name}_baseline"), &baseline) {
            return code;
        }
        println!("  (what the database already holds, made without a migration file)");
    }
    if steps.is_empty() {
        return ExitCode::SUCCESS;
    }
    let file = MigrationFile { steps };
    match write_migration(&folder, now, name, &file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Writes `migrations/<stamp>_<name>.toml` (never over another file) and says what it
/// holds.
fn write_migration(
    folder: &Path,
    at: time::OffsetDateTime,
    name: &str,
    file: &MigrationFile,
) -> Result<(), ExitCode> {
    let text = file.render().map_err(|e| fail(EXIT_RUNTIME, e))?;
    let stamp = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    // Never overwrite: a second migration in the same second gets a suffix.
    let mut path = folder.join(format!("{stamp}_{name}.toml"));
    let mut n = 2;
    while path.exists() {
        path = folder.join(format!("{stamp}_{name}_{n}.toml"));
        n += 1;
    }
    std::fs::write(&path, text).map_err(|e| {
        fail(
            EXIT_RUNTIME,
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    println!("wrote {}", path.display());
    for step in &file.steps {
        println!("  {}{}", step.describe(), risk_note(step));
    }
    Ok(())
}

/// Where a database stands against the migration files and `schema.toml`.
struct Position {
    /// The state the database will be in once its pending files are applied (the files'
    /// state when the database could not be asked).
    after: SchemaState,
    /// What the database holds beyond its applied files: the steps from the files' state
    /// to the recorded one (declared renames kept as renames).
    drift: Vec<Step>,
    /// How many files it has not applied.
    pending: usize,
}

impl Position {
    fn of(
        files: &[MigrationSource],
        recorded: Option<SchemaState>,
        applied: &[AppliedMigration],
        schema: &ferrobase_schema::Schema,
    ) -> Result<Self, String> {
        let todo = pending(files, applied)?;
        let done: Vec<MigrationSource> = files
            .iter()
            .filter(|f| applied.iter().any(|a| a.name == f.name))
            .cloned()
            .collect();
        let drift = match &recorded {
            Some(state) => diff_states(&replay(&done)?, state, schema),
            None => Vec::new(),
        };
        let mut after = recorded.unwrap_or_default();
        for m in &todo {
            advance(&mut after, m, |_| {})?;
        }
        Ok(Self {
            after,
            drift,
            pending: todo.len(),
        })
    }

    fn files_only(after: SchemaState) -> Self {
        Self {
            after,
            drift: Vec::new(),
            pending: 0,
        }
    }

    /// Says what the drift is and what `create` will do about it, each line prefixed.
    fn explain_drift(&self, prefix: &str) {
        if self.drift.is_empty() {
            return;
        }
        println!(
            "{prefix}the database holds changes no migration file records (made by `serve`); `ferrobase migrate create NAME` writes them first, as a baseline this database already satisfies:"
        );
        for step in &self.drift {
            println!("{prefix}  {}", step.describe());
        }
    }
}

fn risk_note(step: &Step) -> &'static str {
    match step.risk() {
        Risk::Additive => "",
        Risk::Checked => "  [checked against existing rows]",
        Risk::Destructive => "  [DESTRUCTIVE: needs --allow-destructive]",
    }
}

/// Opens the project's store without changing anything at start-up.
fn open_store(project: &project::Project) -> Result<(Store, tokio::runtime::Runtime), StoreError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let schema = Arc::new(project.schema.clone());
    let store = rt.block_on(async {
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
    })?;
    Ok((store, rt))
}

/// The project and its store, or the exit code after saying why not.
fn open(dir: &Path) -> Result<(project::Project, Store, tokio::runtime::Runtime), ExitCode> {
    let project = project::load(dir).map_err(|problems| {
        project::report(&problems);
        ExitCode::from(EXIT_CONFIG)
    })?;
    let (store, rt) = open_store(&project).map_err(|e| fail(code_of(&e), e))?;
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
        recorded,
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
    let position = match Position::of(&files, recorded, &applied, &project.schema) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    position.explain_drift("");
    let unwritten = diff(&position.after, &project.schema);
    if !unwritten.is_empty() {
        println!("schema.toml has changes no migration makes yet (ferrobase migrate create NAME):");
        for step in &unwritten {
            println!("  {}", step.describe());
        }
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
    let position = match Position::of(&files, recorded.clone(), &applied, &project.schema) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    position.explain_drift("-- ");
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
    // From where the database will be, not from where the files lead: they differ by
    // the drift, and a rename must stay a rename of the columns this database has.
    let unwritten = diff(&position.after, &project.schema);
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
