//! Migration steps on PostgreSQL: `ALTER TABLE` does everything SQLite needs a rebuild
//! for; DDL is transactional, so each migration commits whole or not at all.

use ferrobase_schema::FieldType;
use ferrobase_schema::migration::{FieldSpec, ResourceSpec, SchemaState, Step};
use serde_json::Value;
use tokio_postgres::Transaction;

use super::{AppliedMigration, resource_of, violations};
use crate::StoreError;
use crate::common::join_table;
use crate::postgres::ddl::{column_type, create_table, foreign_keys, indexes, q};
use crate::postgres::records::decode;

const BOOKKEEPING: &str = r#"
CREATE TABLE IF NOT EXISTS "_ferrobase_migrations" (
  "name" text PRIMARY KEY,
  "checksum" text NOT NULL,
  "applied_at" text NOT NULL
);
CREATE TABLE IF NOT EXISTS "_ferrobase_schema" (
  "id" integer PRIMARY KEY CHECK ("id" = 1),
  "state" text NOT NULL
);
"#;

/// Creates the bookkeeping tables; returns the recorded state and applied migrations.
pub(crate) async fn load(tx: &Transaction<'_>) -> Result<super::History, StoreError> {
    tx.batch_execute(BOOKKEEPING).await?;
    let state = tx
        .query_opt(
            "SELECT \"state\" FROM \"_ferrobase_schema\" WHERE \"id\" = 1",
            &[],
        )
        .await?
        .map(|row| serde_json::from_str::<SchemaState>(row.get(0)))
        .transpose()
        .map_err(|e| StoreError::Config(format!("the recorded schema state is unreadable: {e}")))?;
    let applied = tx
        .query(
            "SELECT \"name\", \"checksum\", \"applied_at\" FROM \"_ferrobase_migrations\" ORDER BY \"name\"",
            &[],
        )
        .await?
        .iter()
        .map(|r| AppliedMigration {
            name: r.get(0),
            checksum: r.get(1),
            applied_at: r.get(2),
        })
        .collect();
    Ok((state, applied))
}

/// Whether a table of this name exists in the current schema.
pub(crate) async fn table_exists(tx: &Transaction<'_>, name: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1",
            &[&name],
        )
        .await?
        .is_some())
}

/// Records the state the tables are in.
pub(crate) async fn save_state(
    tx: &Transaction<'_>,
    state: &SchemaState,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(state).map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.execute(
        "INSERT INTO \"_ferrobase_schema\" (\"id\", \"state\") VALUES (1, $1) ON CONFLICT (\"id\") DO UPDATE SET \"state\" = excluded.\"state\"",
        &[&text],
    )
    .await?;
    Ok(())
}

/// Records an applied migration.
pub(crate) async fn record(
    tx: &Transaction<'_>,
    name: &str,
    checksum: &str,
    now: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO \"_ferrobase_migrations\" (\"name\", \"checksum\", \"applied_at\") VALUES ($1, $2, $3)",
        &[&name, &checksum, &now],
    )
    .await?;
    Ok(())
}

fn literal(field: &FieldSpec, value: &Value) -> String {
    let text = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let cast = column_type(&field.to_field().map_or(FieldType::Text, |f| f.ty));
    let cast = cast.split(' ').next().unwrap_or("text");
    match value {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if field.ty != "json" => format!("CAST({} AS {cast})", text(s)),
        other => format!("CAST({} AS jsonb)", text(&other.to_string())),
    }
}

fn resource<'s>(state: &'s SchemaState, name: &str) -> Result<&'s ResourceSpec, StoreError> {
    state
        .resource(name)
        .ok_or_else(|| StoreError::Config(format!("resource '{name}' does not exist")))
}

/// Renames a constraint when it exists.
fn rename_constraint(table: &str, from: &str, to: &str) -> String {
    format!(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{from}') THEN \
         ALTER TABLE {} RENAME CONSTRAINT {} TO {}; END IF; END $$",
        q(table),
        q(from),
        q(to)
    )
}

fn rename_index(from: &str, to: &str) -> String {
    format!("ALTER INDEX IF EXISTS {} RENAME TO {}", q(from), q(to))
}

/// What creating a resource runs: the table (refusing a leftover one of the same name)
/// and its plain indexes now; foreign keys and join tables, which refer to other tables,
/// once every table of the migration exists (`deferred`).
fn create_ddl(spec: &ResourceSpec) -> Result<(Vec<String>, Vec<String>), StoreError> {
    let r = resource_of(spec)?;
    let table = create_table(&r).replacen("CREATE TABLE IF NOT EXISTS", "CREATE TABLE", 1);
    let mut now = vec![table];
    let mut deferred = foreign_keys(&r);
    for stmt in indexes(&r) {
        // Join tables (and their indexes) mention the resource's name followed by `__`.
        if stmt.contains(&format!("\"{}__", spec.name))
            || stmt.contains(&format!("\"jt__{}__", spec.name))
        {
            deferred.push(stmt);
        } else {
            now.push(stmt);
        }
    }
    Ok((now, deferred))
}

/// The SQL of one step, given the state before it, split into what runs at once and
/// what runs after every step of the migration (foreign keys of new tables).
pub(crate) fn render_parts(
    state: &SchemaState,
    step: &Step,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    match step {
        Step::CreateResource { resource } => create_ddl(resource),
        other => Ok((render(state, other)?, Vec::new())),
    }
}

/// The SQL of one step, given the state before it.
pub(crate) fn render(state: &SchemaState, step: &Step) -> Result<Vec<String>, StoreError> {
    let mut after = state.clone();
    after.apply(step).map_err(StoreError::Config)?;
    Ok(match step {
        Step::CreateResource { resource } => {
            let (mut now, deferred) = create_ddl(resource)?;
            now.extend(deferred);
            now
        }
        Step::DropResource { resource } => {
            let r = self::resource(state, resource)?;
            let mut stmts: Vec<String> = r
                .fields
                .iter()
                .filter(|f| f.many)
                .map(|f| format!("DROP TABLE IF EXISTS {}", q(&join_table(resource, &f.name))))
                .collect();
            stmts.push(format!("DROP TABLE {}", q(resource)));
            stmts
        }
        Step::RenameResource { from, to } => {
            let old = self::resource(state, from)?;
            let mut stmts = vec![format!("ALTER TABLE {} RENAME TO {}", q(from), q(to))];
            for index in &old.indexes {
                stmts.push(rename_index(
                    &format!("ix__{from}__{}", index.name),
                    &format!("ix__{to}__{}", index.name),
                ));
            }
            for f in &old.fields {
                let (a, b) = (join_table(from, &f.name), join_table(to, &f.name));
                if f.many {
                    stmts.push(format!("ALTER TABLE {} RENAME TO {}", q(&a), q(&b)));
                    stmts.push(rename_index(
                        &format!("jt__{a}__target"),
                        &format!("jt__{b}__target"),
                    ));
                    continue;
                }
                stmts.push(rename_constraint(
                    to,
                    &format!("uq__{a}"),
                    &format!("uq__{b}"),
                ));
                stmts.push(rename_index(&format!("uq__{a}"), &format!("uq__{b}")));
                stmts.push(rename_constraint(
                    to,
                    &format!("fk__{a}"),
                    &format!("fk__{b}"),
                ));
                stmts.push(rename_index(&format!("fk__{a}"), &format!("fk__{b}")));
            }
            stmts
        }
        Step::SetTimestamps {
            resource,
            timestamps: true,
        } => ["created_at", "updated_at"]
            .iter()
            .flat_map(|c| {
                [
                    format!(
                        "ALTER TABLE {} ADD COLUMN {} timestamptz NOT NULL DEFAULT now()",
                        q(resource),
                        q(c)
                    ),
                    format!(
                        "ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT",
                        q(resource),
                        q(c)
                    ),
                ]
            })
            .collect(),
        Step::SetTimestamps { resource, .. } => vec![format!(
            "ALTER TABLE {} DROP COLUMN \"created_at\", DROP COLUMN \"updated_at\"",
            q(resource)
        )],
        Step::AddField { resource, field } => {
            let new = resource_of(self::resource(&after, resource)?)?;
            if field.many {
                let jt = q(&join_table(resource, &field.name));
                indexes(&new)
                    .into_iter()
                    .filter(|s| s.contains(&jt))
                    .collect()
            } else {
                let declared = new
                    .field(&field.name)
                    .ok_or_else(|| StoreError::Internal("added field missing".into()))?;
                let mut stmts = vec![format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    q(resource),
                    q(&field.name),
                    column_type(&declared.ty)
                )];
                stmts.extend(fill_and_constrain(resource, None, field));
                stmts.extend(foreign_keys(&new));
                stmts.extend(indexes(&new));
                stmts
            }
        }
        Step::DropField { resource, field } => {
            let spec = self::resource(state, resource)?
                .field(field)
                .ok_or_else(|| {
                    StoreError::Config(format!("'{resource}.{field}' does not exist"))
                })?;
            if spec.many {
                vec![format!(
                    "DROP TABLE IF EXISTS {}",
                    q(&join_table(resource, field))
                )]
            } else {
                vec![format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    q(resource),
                    q(field)
                )]
            }
        }
        Step::RenameField { resource, from, to } => {
            let spec = self::resource(state, resource)?
                .field(from)
                .ok_or_else(|| StoreError::Config(format!("'{resource}.{from}' does not exist")))?;
            let (a, b) = (join_table(resource, from), join_table(resource, to));
            if spec.many {
                vec![
                    format!("ALTER TABLE {} RENAME TO {}", q(&a), q(&b)),
                    rename_index(&format!("jt__{a}__target"), &format!("jt__{b}__target")),
                ]
            } else {
                vec![
                    format!(
                        "ALTER TABLE {} RENAME COLUMN {} TO {}",
                        q(resource),
                        q(from),
                        q(to)
                    ),
                    rename_constraint(resource, &format!("uq__{a}"), &format!("uq__{b}")),
                    rename_index(&format!("uq__{a}"), &format!("uq__{b}")),
                    rename_constraint(resource, &format!("fk__{a}"), &format!("fk__{b}")),
                    rename_index(&format!("fk__{a}"), &format!("fk__{b}")),
                ]
            }
        }
        Step::AlterField { resource, from, to } => {
            if from.many || to.many {
                return Ok(Vec::new());
            }
            let new = resource_of(self::resource(&after, resource)?)?;
            let declared = new
                .field(&to.name)
                .ok_or_else(|| StoreError::Internal("altered field missing".into()))?;
            let mut stmts = Vec::new();
            if from.ty != to.ty {
                let ty = column_type(&declared.ty);
                let bare = ty.split(' ').next().unwrap_or("text");
                stmts.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} TYPE {ty} USING {}::{bare}",
                    q(resource),
                    q(&to.name),
                    q(&to.name)
                ));
            }
            if from.on_delete != to.on_delete || from.resource != to.resource || from.ty != to.ty {
                stmts.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                    q(resource),
                    q(&format!("fk__{resource}__{}", to.name))
                ));
            }
            stmts.extend(fill_and_constrain(resource, Some(from), to));
            stmts.extend(foreign_keys(&new));
            stmts.extend(indexes(&new));
            stmts
        }
        Step::CreateIndex { resource, .. } => {
            indexes(&resource_of(self::resource(&after, resource)?)?)
        }
        Step::DropIndex { resource, index } => vec![format!(
            "DROP INDEX IF EXISTS {}",
            q(&format!("ix__{resource}__{index}"))
        )],
    })
}

/// Fills missing values from the default and sets NOT NULL / UNIQUE as `to` says.
fn fill_and_constrain(resource: &str, from: Option<&FieldSpec>, to: &FieldSpec) -> Vec<String> {
    let mut stmts = Vec::new();
    let was_required = from.is_some_and(|f| f.required);
    let was_unique = from.is_some_and(|f| f.unique);
    if to.required && !was_required {
        if let Some(v) = to.constant_default() {
            stmts.push(format!(
                "UPDATE {} SET {} = {} WHERE {} IS NULL",
                q(resource),
                q(&to.name),
                literal(to, &v),
                q(&to.name)
            ));
        }
        stmts.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
            q(resource),
            q(&to.name)
        ));
    }
    if !to.required && was_required {
        stmts.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
            q(resource),
            q(&to.name)
        ));
    }
    let name = q(&format!("uq__{resource}__{}", to.name));
    if to.unique && !was_unique && !to.case_insensitive {
        stmts.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {name} UNIQUE ({})",
            q(resource),
            q(&to.name)
        ));
    }
    if !to.unique && was_unique {
        stmts.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {name}",
            q(resource)
        ));
        stmts.push(format!("DROP INDEX IF EXISTS {name}"));
    }
    stmts
}

/// Refuses a step that existing rows would violate, counting them.
pub(crate) async fn check(tx: &Transaction<'_>, step: &Step) -> Result<(), StoreError> {
    match step {
        Step::AddField { resource, field } if !field.many => {
            let rows: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {}", q(resource)), &[])
                .await?
                .get(0);
            super::check_new_field(resource, field, rows)
        }
        Step::AlterField { resource, from, to } if !to.many => {
            let ty = from.to_field().map_or(FieldType::Json, |f| f.ty);
            let rows = tx
                .query(&format!("SELECT {} FROM {}", q(&to.name), q(resource)), &[])
                .await?;
            super::judge_values(resource, to, rows.iter().map(|row| decode(&ty, row, 0)))?;
            if to.unique && !from.unique {
                duplicates(tx, resource, std::slice::from_ref(&to.name)).await?;
            }
            Ok(())
        }
        Step::AlterField { resource, to, .. } => {
            let sql = format!(
                "SELECT COUNT(*) FROM (SELECT \"source\", COUNT(*) AS n FROM {} GROUP BY \"source\" HAVING COUNT(*) < $1 OR COUNT(*) > $2) AS bad",
                q(&join_table(resource, &to.name))
            );
            let min = to.min_length.unwrap_or(0) as i64;
            let max = to.max_length.map_or(i64::MAX, |m| m as i64);
            let bad: i64 = tx.query_one(&sql, &[&min, &max]).await?.get(0);
            if bad > 0 {
                return Err(violations(
                    &format!("changing {resource}.{}", to.name),
                    bad as u64,
                    "have a number of links outside the new bounds",
                ));
            }
            Ok(())
        }
        Step::CreateIndex { resource, index } if index.unique => {
            let columns: Vec<String> = index
                .columns
                .iter()
                .map(|c| c.trim_start_matches('-').to_owned())
                .collect();
            duplicates(tx, resource, &columns).await
        }
        _ => Ok(()),
    }
}

async fn duplicates(
    tx: &Transaction<'_>,
    resource: &str,
    columns: &[String],
) -> Result<(), StoreError> {
    let cols = columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    let not_null = columns
        .iter()
        .map(|c| format!("{} IS NOT NULL", q(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let bad: i64 = tx
        .query_one(
            &format!(
                "SELECT CAST(COALESCE(SUM(n), 0) AS bigint) FROM (SELECT COUNT(*) AS n FROM {} WHERE {not_null} GROUP BY {cols} HAVING COUNT(*) > 1) AS d",
                q(resource)
            ),
            &[],
        )
        .await?
        .get(0);
    if bad > 0 {
        return Err(violations(
            &format!("making {resource} ({}) unique", columns.join(", ")),
            bad as u64,
            "share a value with another row",
        ));
    }
    Ok(())
}

/// Runs statements, turning a database refusal into a message naming the statement.
async fn run(tx: &Transaction<'_>, stmts: &[String]) -> Result<(), StoreError> {
    for sql in stmts {
        tx.batch_execute(sql)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => StoreError::Config(format!(
                    "PostgreSQL refused `{}`: {}",
                    sql.lines().next().unwrap_or(sql),
                    db.message()
                )),
                None => StoreError::from(e),
            })?;
    }
    Ok(())
}

/// Checks, then runs, one step; statements that must wait for every table of the
/// migration are added to `deferred` (run them with [`finish`]).
pub(crate) async fn apply(
    tx: &Transaction<'_>,
    state: &mut SchemaState,
    step: &Step,
    deferred: &mut Vec<String>,
) -> Result<(), StoreError> {
    if state.satisfies(step) {
        return Ok(());
    }
    // Writers of other nodes wait until the migration commits, so rows cannot change
    // between the data checks and the new constraints.
    if let Some(table) = locked_table(step)
        && table_exists(tx, table).await?
    {
        tx.batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", q(table)))
            .await?;
    }
    check(tx, step).await?;
    let (now, later) = render_parts(state, step)?;
    run(tx, &now).await?;
    deferred.extend(later);
    state.apply(step).map_err(StoreError::Config)?;
    Ok(())
}

/// Runs what [`apply`] deferred.
pub(crate) async fn finish(tx: &Transaction<'_>, deferred: Vec<String>) -> Result<(), StoreError> {
    run(tx, &deferred).await
}

fn locked_table(step: &Step) -> Option<&str> {
    match step {
        Step::AddField { resource, .. }
        | Step::AlterField { resource, .. }
        | Step::CreateIndex { resource, .. } => Some(resource),
        _ => None,
    }
}

/// Key of the advisory lock that serialises nodes changing the schema.
const LOCK: i64 = 7_220_418_370;

/// Brings the database to `schema` as `policy` allows, under an advisory lock so that
/// nodes starting together do not race; returns what was done.
pub(crate) async fn startup(
    client: &mut tokio_postgres::Client,
    schema: &ferrobase_schema::Schema,
    policy: super::StartupPolicy,
    files: &[super::MigrationSource],
    now: &str,
) -> Result<Vec<String>, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let result = startup_locked(client, schema, policy, files, now).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await;
    let done = result?;
    unlocked?;
    Ok(done)
}

async fn startup_locked(
    client: &mut tokio_postgres::Client,
    schema: &ferrobase_schema::Schema,
    policy: super::StartupPolicy,
    files: &[super::MigrationSource],
    now: &str,
) -> Result<Vec<String>, StoreError> {
    let tx = client.transaction().await?;
    let (recorded, applied) = load(&tx).await?;
    let mut legacy = false;
    if recorded.is_none() {
        for r in &schema.resources {
            legacy |= table_exists(&tx, &r.name).await?;
        }
    }
    tx.commit().await?;
    let (mut state, fresh) = match recorded {
        Some(state) => (state, false),
        None if legacy => {
            // Tables made before migrations existed: they must match schema.toml, which
            // then becomes the recorded state.
            crate::postgres::ddl::apply(client, schema).await?;
            let state = SchemaState::of(schema);
            let tx = client.transaction().await?;
            save_state(&tx, &state).await?;
            tx.commit().await?;
            (state, false)
        }
        None => (SchemaState::default(), true),
    };
    let plan = super::startup_plan(policy, &state, fresh, files, &applied, schema)
        .map_err(StoreError::Config)?;
    let mut done = Vec::new();
    for m in plan.migrations {
        let tx = client.transaction().await?;
        let mut deferred = Vec::new();
        for step in &m.file.steps {
            apply(&tx, &mut state, step, &mut deferred).await?;
        }
        finish(&tx, deferred).await?;
        record(&tx, &m.name, &m.checksum, now).await?;
        save_state(&tx, &state).await?;
        tx.commit().await?;
        done.push(format!("applied migration {}", m.name));
    }
    if !plan.changes.is_empty() {
        let tx = client.transaction().await?;
        let mut deferred = Vec::new();
        for step in &plan.changes {
            apply(&tx, &mut state, step, &mut deferred).await?;
        }
        finish(&tx, deferred).await?;
        save_state(&tx, &state).await?;
        tx.commit().await?;
        done.extend(plan.changes.iter().map(Step::describe));
    }
    identity_tables(client).await?;
    Ok(done)
}

/// The identity tables refer to `users`: they are made once it exists.
async fn identity_tables(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    if table_exists(&tx, ferrobase_schema::USERS).await? {
        tx.batch_execute(crate::postgres::ddl::AUTH_DDL).await?;
        tx.batch_execute(crate::jobs::POSTGRES_DDL).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Applies pending migrations, each in its own transaction; returns their names.
pub(crate) async fn apply_pending(
    client: &mut tokio_postgres::Client,
    files: &[super::MigrationSource],
    allow_destructive: bool,
    now: &str,
) -> Result<Vec<String>, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let result = async {
        let tx = client.transaction().await?;
        let (recorded, applied) = load(&tx).await?;
        tx.commit().await?;
        let mut state = recorded.unwrap_or_default();
        let pending = super::pending(files, &applied).map_err(StoreError::Config)?;
        for m in &pending {
            super::check_allowed(&m.file.steps, allow_destructive)
                .map_err(|e| StoreError::Config(format!("migration {}: {e}", m.name)))?;
        }
        let mut done = Vec::new();
        for m in pending {
            let tx = client.transaction().await?;
            let applied = async {
                let mut deferred = Vec::new();
                for step in &m.file.steps {
                    apply(&tx, &mut state, step, &mut deferred).await?;
                }
                finish(&tx, deferred).await?;
                record(&tx, &m.name, &m.checksum, now).await?;
                save_state(&tx, &state).await
            }
            .await;
            applied.map_err(|e| {
                StoreError::Config(format!("migration {} was not applied: {e}", m.name))
            })?;
            tx.commit().await?;
            done.push(m.name.clone());
        }
        identity_tables(client).await?;
        Ok(done)
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await;
    result
}
