//! Applying migrations (SPEC §9): migration files from `migrations/`, the record of what
//! was applied (name and checksum, in `_ferrobase_migrations`), the state the tables are
//! in (`_ferrobase_schema`), and what start-up does about differences.
//!
//! Steps are rendered to SQL per database at apply time (`sqlite.rs`, `postgres.rs`);
//! each migration runs in one transaction, after its data checks.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::path::Path;

use ferrobase_schema::migration::{MigrationFile, Risk, SchemaState, Step, checksum, diff};
use ferrobase_schema::{Resource, Rules, Schema};

use crate::StoreError;

/// A migration file read from `migrations/`.
#[derive(Debug, Clone)]
pub struct MigrationSource {
    /// File name without `.toml`; migrations apply in name order.
    pub name: String,
    /// Checksum of the exact text.
    pub checksum: String,
    /// The steps.
    pub file: MigrationFile,
}

/// What a database records of its migrations: the schema state its tables are in
/// (`None` before the first migration) and the migrations applied, in order.
pub type History = (Option<SchemaState>, Vec<AppliedMigration>);

/// A migration recorded as applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its name.
    pub name: String,
    /// Checksum of its text when applied.
    pub checksum: String,
    /// When (canonical datetime).
    pub applied_at: String,
}

/// What start-up may do about a database that differs from `schema.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupPolicy {
    /// Development: apply pending migrations and schema changes that lose nothing and
    /// cannot fail on existing data, say what was done, refuse the rest.
    Additive,
    /// Production: refuse to start while anything is pending, naming it (an empty
    /// database without any migration history is initialised from `schema.toml`).
    Strict,
    /// Commands (`migrate ...`): prepare the bookkeeping tables, change nothing else.
    Manual,
}

/// Reads every `*.toml` in `dir` (none when it does not exist), sorted by name.
pub fn read_migrations(dir: &Path) -> Result<Vec<MigrationSource>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: the file name is not UTF-8", path.display()))?
            .to_owned();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file = MigrationFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        out.push(MigrationSource {
            name,
            checksum: checksum(&text),
            file,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The migration files not applied yet, in order; refuses applied files that changed
/// since (or vanished), naming them.
pub fn pending<'a>(
    files: &'a [MigrationSource],
    applied: &[AppliedMigration],
) -> Result<Vec<&'a MigrationSource>, String> {
    let mut problems = Vec::new();
    for done in applied {
        match files.iter().find(|f| f.name == done.name) {
            Some(file) if file.checksum != done.checksum => problems.push(format!(
                "migration {} was edited after it was applied (on {}); restore it and write a new migration for the change",
                done.name, done.applied_at
            )),
            Some(_) => {}
            None => problems.push(format!(
                "migration {} was applied (on {}) but its file is gone from migrations/",
                done.name, done.applied_at
            )),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    Ok(files
        .iter()
        .filter(|f| !applied.iter().any(|a| a.name == f.name))
        .collect())
}

/// Applies a migration's steps to `state` the way they would run: steps already true of
/// it are skipped, and `each` sees every step that would really run, in order.
pub fn advance(
    state: &mut SchemaState,
    migration: &MigrationSource,
    mut each: impl FnMut(&Step),
) -> Result<(), String> {
    for step in &migration.file.steps {
        if !state.satisfies(step) {
            each(step);
            state
                .apply(step)
                .map_err(|e| format!("migration {}: {e}", migration.name))?;
        }
    }
    Ok(())
}

/// The state a list of migration files leads to from an empty database.
pub fn replay(files: &[MigrationSource]) -> Result<SchemaState, String> {
    let mut state = SchemaState::default();
    for m in files {
        advance(&mut state, m, |_| {})?;
    }
    Ok(state)
}

/// What start-up will do.
#[derive(Debug, Default)]
pub(crate) struct StartupPlan<'a> {
    /// Migration files to apply, in order.
    pub migrations: Vec<&'a MigrationSource>,
    /// Schema changes to apply without a file (development), after the migrations.
    pub changes: Vec<Step>,
}

/// Decides what start-up does, or why it refuses.
pub(crate) fn startup_plan<'a>(
    policy: StartupPolicy,
    state: &SchemaState,
    fresh: bool,
    files: &'a [MigrationSource],
    applied: &[AppliedMigration],
    schema: &Schema,
) -> Result<StartupPlan<'a>, String> {
    if policy == StartupPolicy::Manual {
        return Ok(StartupPlan::default());
    }
    let migrations = pending(files, applied)?;
    // The state the files lead to, then what schema.toml adds beyond them.
    // Risky steps are judged as they would run, in order: a step is "already done" only
    // against the state the steps before it leave.
    let mut after = state.clone();
    let mut risky = Vec::new();
    for m in &migrations {
        advance(&mut after, m, |step| {
            if step.risk() != Risk::Additive {
                risky.push(format!("migration {}: {}", m.name, step.describe()));
            }
        })?;
    }
    let changes = diff(&after, schema);
    match policy {
        StartupPolicy::Strict => {
            if fresh && files.is_empty() && applied.is_empty() {
                // First start of a deployment without migration history.
                return Ok(StartupPlan {
                    migrations,
                    changes,
                });
            }
            let mut problems: Vec<String> = migrations
                .iter()
                .map(|m| format!("pending migration {}", m.name))
                .collect();
            problems.extend(changes.iter().map(|s| {
                format!(
                    "schema.toml has a change no migration makes: {}",
                    s.describe()
                )
            }));
            if problems.is_empty() {
                Ok(StartupPlan::default())
            } else {
                Err(format!(
                    "{}\nrun `ferrobase migrate create NAME` for schema changes and `ferrobase migrate apply` before starting in production",
                    problems.join("\n")
                ))
            }
        }
        _ => {
            risky.extend(
                changes
                    .iter()
                    .filter(|s| s.risk() != Risk::Additive)
                    .map(Step::describe),
            );
            if risky.is_empty() {
                Ok(StartupPlan {
                    migrations,
                    changes,
                })
            } else {
                Err(format!(
                    "these changes could lose data or fail on existing rows, so they are not applied automatically:\n  {}\nreview them with `ferrobase migrate plan`, write them with `ferrobase migrate create NAME`, apply with `ferrobase migrate apply` (drops need --allow-destructive)",
                    risky.join("\n  ")
                ))
            }
        }
    }
}

/// Refuses destructive steps unless allowed.
pub(crate) fn check_allowed(steps: &[Step], allow_destructive: bool) -> Result<(), StoreError> {
    if allow_destructive {
        return Ok(());
    }
    let destructive: Vec<String> = steps
        .iter()
        .filter(|s| s.risk() == Risk::Destructive)
        .map(Step::describe)
        .collect();
    if destructive.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "refusing steps that lose data:\n  {}\nrun again with --allow-destructive once you are sure",
            destructive.join("\n  ")
        )))
    }
}

/// A resource of the state as the DDL functions take it (no rules: tables only).
pub(crate) fn resource_of(
    spec: &ferrobase_schema::migration::ResourceSpec,
) -> Result<Resource, StoreError> {
    let fields = spec
        .fields
        .iter()
        .map(|f| {
            f.to_field().ok_or_else(|| {
                StoreError::Config(format!(
                    "field {}.{} has an unknown type or an invalid pattern",
                    spec.name, f.name
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Resource {
        name: spec.name.clone(),
        timestamps: spec.timestamps,
        fields,
        indexes: spec.indexes.iter().map(|i| i.to_index()).collect(),
        rules: Rules::default(),
        renamed_from: None,
        graphql_name: None,
    })
}

/// A refusal because existing rows do not meet a new constraint.
pub(crate) fn violations(what: &str, count: u64, detail: &str) -> StoreError {
    StoreError::Config(format!(
        "{what}: {count} existing row{} {detail}; fix the data first, or change the migration",
        if count == 1 { "" } else { "s" }
    ))
}

/// Refuses adding `field` to a table of `rows` rows when they cannot all get a valid
/// value: a required field needs a default to fill them, a unique one cannot give the
/// same default to two.
pub(crate) fn check_new_field(
    resource: &str,
    field: &ferrobase_schema::migration::FieldSpec,
    rows: i64,
) -> Result<(), StoreError> {
    let default = field.constant_default();
    if field.required && default.is_none() && rows > 0 {
        return Err(violations(
            &format!("adding required field {resource}.{}", field.name),
            rows as u64,
            "would have no value (give the field a default, or add it optional first)",
        ));
    }
    if field.unique && default.is_some() && rows > 1 {
        return Err(violations(
            &format!("adding unique field {resource}.{}", field.name),
            rows as u64,
            "would share its default value",
        ));
    }
    Ok(())
}

/// The SQL one step runs on SQLite or PostgreSQL, given the state before it (for
/// `migrate plan`).
pub fn render_sql(
    postgres: bool,
    state: &SchemaState,
    step: &Step,
) -> Result<Vec<String>, StoreError> {
    if postgres {
        self::postgres::render(state, step)
    } else {
        self::sqlite::render(state, step)
    }
}

/// Judges a field's existing values against its new declaration: each value (decoded by
/// the old type) must pass the validation writes will apply, and a newly required field
/// may only be empty where its default fills it. Refuses with the count and an example.
pub(crate) fn judge_values(
    resource: &str,
    to: &ferrobase_schema::migration::FieldSpec,
    values: impl Iterator<Item = Result<serde_json::Value, StoreError>>,
) -> Result<(), StoreError> {
    use serde_json::Value;
    let field = to
        .to_field()
        .ok_or_else(|| StoreError::Config(format!("{resource}.{}: unknown type", to.name)))?;
    let fill = to.constant_default().filter(|_| to.required);
    let (mut bad, mut example) = (0u64, None);
    for value in values {
        let problem = match (&value?, &fill) {
            (Value::Null, Some(_)) => None,
            (Value::Null, None) if to.required => Some("is missing".to_owned()),
            (Value::Null, None) => None,
            (v, _) => ferrobase_schema::validate::validate_value(&field, v)
                .err()
                .map(|m| m.join("; ")),
        };
        if let Some(problem) = problem {
            bad += 1;
            example.get_or_insert(problem);
        }
    }
    if bad > 0 {
        return Err(violations(
            &format!("changing {resource}.{}", to.name),
            bad,
            &format!("would break it ({})", example.unwrap_or_default()),
        ));
    }
    Ok(())
}
