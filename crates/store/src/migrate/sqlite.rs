//! Migration steps on SQLite. `ALTER TABLE` here can add and rename columns but not change
//! them, so every other change to an existing table uses SQLite's documented rebuild:
//! with foreign keys off, create the new table, copy the rows, drop the old table, rename
//! the new one, recreate its indexes, then `PRAGMA foreign_key_check` before committing.

use ferrobase_schema::FieldType;
use ferrobase_schema::migration::{FieldSpec, ResourceSpec, SchemaState, Step};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{AppliedMigration, resource_of, violations};
use crate::StoreError;
use crate::common::join_table;
use crate::sqlite::ddl::{create_indexes, create_table, q};
use crate::sqlite::records::decode;

/// The bookkeeping tables.
const BOOKKEEPING: &str = r#"
CREATE TABLE IF NOT EXISTS "_ferrobase_migrations" (
  "name" TEXT PRIMARY KEY NOT NULL,
  "checksum" TEXT NOT NULL,
  "applied_at" TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS "_ferrobase_schema" (
  "id" INTEGER PRIMARY KEY CHECK ("id" = 1),
  "state" TEXT NOT NULL
) STRICT;
"#;

/// Creates the bookkeeping tables; returns the recorded state (`None` before the first
/// migration) and the applied migrations.
pub(crate) fn load(conn: &Connection) -> Result<super::History, StoreError> {
    conn.execute_batch(BOOKKEEPING)?;
    let state: Option<String> = conn
        .query_row(
            "SELECT \"state\" FROM \"_ferrobase_schema\" WHERE \"id\" = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let state = state
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::Config(format!("the recorded schema state is unreadable: {e}")))?;
    let mut stmt = conn.prepare(
        "SELECT \"name\", \"checksum\", \"applied_at\" FROM \"_ferrobase_migrations\" ORDER BY \"name\"",
    )?;
    let applied = stmt
        .query_map([], |r| {
            Ok(AppliedMigration {
                name: r.get(0)?,
                checksum: r.get(1)?,
                applied_at: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((state, applied))
}

/// Whether a table of this name exists.
pub(crate) fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")?
        .exists([name])?)
}

/// Records the state the tables are in.
pub(crate) fn save_state(conn: &Connection, state: &SchemaState) -> Result<(), StoreError> {
    let text = serde_json::to_string(state).map_err(|e| StoreError::Internal(e.to_string()))?;
    conn.execute(
        "INSERT INTO \"_ferrobase_schema\" (\"id\", \"state\") VALUES (1, ?) ON CONFLICT (\"id\") DO UPDATE SET \"state\" = excluded.\"state\"",
        [text],
    )?;
    Ok(())
}

/// Records an applied migration.
pub(crate) fn record(
    conn: &Connection,
    name: &str,
    checksum: &str,
    now: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO \"_ferrobase_migrations\" (\"name\", \"checksum\", \"applied_at\") VALUES (?, ?, ?)",
        params![name, checksum, now],
    )?;
    Ok(())
}

/// Runs `work` in one transaction with foreign keys off (the rebuild procedure needs
/// them off, and `PRAGMA foreign_keys` cannot change inside a transaction), checking
/// every foreign key before committing.
pub(crate) fn in_transaction<T>(
    conn: &mut Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // Renames must carry other tables' foreign keys along (the default since 3.26).
    conn.pragma_update(None, "legacy_alter_table", "OFF")?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = work(&tx)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(StoreError::Config(format!(
                "the migration would leave rows of {table} pointing at records that do not exist"
            )));
        }
        tx.commit()?;
        Ok(out)
    })();
    conn.pragma_update(None, "foreign_keys", "ON")?;
    result
}

/// An SQL literal of a constant default, for filling existing rows.
fn literal(field: &FieldSpec, value: &Value) -> String {
    let text = |s: &str| format!("'{}'", s.replace('\'', "''"));
    match (field.ty.as_str(), value) {
        (_, Value::Null) => "NULL".into(),
        ("json", v) => text(&v.to_string()),
        (_, Value::Bool(b)) => i64::from(*b).to_string(),
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::String(s)) => text(s),
        (_, other) => text(&other.to_string()),
    }
}

fn resource<'s>(state: &'s SchemaState, name: &str) -> Result<&'s ResourceSpec, StoreError> {
    state
        .resource(name)
        .ok_or_else(|| StoreError::Config(format!("resource '{name}' does not exist")))
}

/// The statements that rebuild `old` as `new`; `fill` gives, per column of `new`, the
/// expression over the old table that fills it.
fn rebuild(new: &ResourceSpec, fill: impl Fn(&str) -> String) -> Result<Vec<String>, StoreError> {
    let table = &new.name;
    let temp = format!("_new_{table}");
    let mut staged = resource_of(new)?;
    staged.name.clone_from(&temp);
    let columns = crate::common::expected_columns(&staged);
    let mut stmts = vec![create_table(&staged)];
    stmts.push(format!(
        "INSERT INTO {} ({}) SELECT {} FROM {}",
        q(&temp),
        columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", "),
        columns
            .iter()
            .map(|c| fill(c))
            .collect::<Vec<_>>()
            .join(", "),
        q(table)
    ));
    stmts.push(format!("DROP TABLE {}", q(table)));
    stmts.push(format!("ALTER TABLE {} RENAME TO {}", q(&temp), q(table)));
    stmts.extend(create_indexes(&resource_of(new)?));
    Ok(stmts)
}

/// The SQL of one step, given the state before it.
pub(crate) fn render(state: &SchemaState, step: &Step) -> Result<Vec<String>, StoreError> {
    let mut after = state.clone();
    after.apply(step).map_err(StoreError::Config)?;
    Ok(match step {
        Step::CreateResource { resource } => {
            let r = resource_of(resource)?;
            // A leftover table of the same name is refused, not silently reused.
            let mut stmts =
                vec![create_table(&r).replacen("CREATE TABLE IF NOT EXISTS", "CREATE TABLE", 1)];
            stmts.extend(create_indexes(&r));
            stmts
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
            for f in old.fields.iter().filter(|f| f.many) {
                stmts.push(format!(
                    "ALTER TABLE {} RENAME TO {}",
                    q(&join_table(from, &f.name)),
                    q(&join_table(to, &f.name))
                ));
            }
            stmts.extend(drop_named_indexes(old));
            stmts.extend(create_indexes(&resource_of(self::resource(&after, to)?)?));
            stmts
        }
        Step::SetTimestamps {
            resource,
            timestamps,
        } => {
            let new = self::resource(&after, resource)?;
            let now = ferrobase_schema::validate::format_datetime(time::OffsetDateTime::now_utc());
            let now = format!("'{now}'");
            let stamped = *timestamps;
            rebuild(new, |c| match c {
                "created_at" | "updated_at" if stamped => now.clone(),
                other => q(other),
            })?
        }
        Step::AddField { resource, field } => {
            let new = self::resource(&after, resource)?;
            if field.many {
                add_join_table(new, &field.name)?
            } else if !field.required && !field.unique {
                let r = resource_of(new)?;
                let column = column_ddl(&r, &field.name);
                let mut stmts = vec![format!("ALTER TABLE {} ADD COLUMN {column}", q(resource))];
                stmts.extend(create_indexes(&r));
                stmts
            } else {
                let fill = field
                    .constant_default()
                    .map_or_else(|| "NULL".to_owned(), |v| literal(field, &v));
                rebuild(new, |c| if c == field.name { fill.clone() } else { q(c) })?
            }
        }
        Step::DropField { resource, field } => {
            let old = self::resource(state, resource)?;
            let spec = old.field(field).ok_or_else(|| {
                StoreError::Config(format!("'{resource}.{field}' does not exist"))
            })?;
            if spec.many {
                vec![format!(
                    "DROP TABLE IF EXISTS {}",
                    q(&join_table(resource, field))
                )]
            } else {
                let mut stmts = drop_named_indexes(old);
                stmts.extend(rebuild(self::resource(&after, resource)?, q)?);
                stmts
            }
        }
        Step::RenameField { resource, from, to } => {
            let old = self::resource(state, resource)?;
            let spec = old
                .field(from)
                .ok_or_else(|| StoreError::Config(format!("'{resource}.{from}' does not exist")))?;
            let mut stmts = drop_named_indexes(old);
            if spec.many {
                stmts.push(format!(
                    "ALTER TABLE {} RENAME TO {}",
                    q(&join_table(resource, from)),
                    q(&join_table(resource, to))
                ));
            } else {
                stmts.push(format!(
                    "ALTER TABLE {} RENAME COLUMN {} TO {}",
                    q(resource),
                    q(from),
                    q(to)
                ));
            }
            stmts.extend(create_indexes(&resource_of(self::resource(
                &after, resource,
            )?)?));
            stmts
        }
        Step::AlterField { resource, from, to } => {
            if from.many || to.many {
                // Only the constraints on the number of links can change (checked
                // against the data); the join table stays.
                Vec::new()
            } else {
                let fill = to.constant_default().filter(|_| to.required).map_or_else(
                    || q(&to.name),
                    |v| format!("COALESCE({}, {})", q(&to.name), literal(to, &v)),
                );
                let mut stmts = drop_named_indexes(self::resource(state, resource)?);
                stmts.extend(rebuild(self::resource(&after, resource)?, |c| {
                    if c == to.name { fill.clone() } else { q(c) }
                })?);
                stmts
            }
        }
        Step::CreateIndex { resource, .. } => {
            create_indexes(&resource_of(self::resource(&after, resource)?)?)
        }
        Step::DropIndex { resource, index } => vec![format!(
            "DROP INDEX IF EXISTS {}",
            q(&format!("ix__{resource}__{index}"))
        )],
    })
}

/// A column's definition as `CREATE TABLE` writes it.
fn column_ddl(resource: &ferrobase_schema::Resource, field: &str) -> String {
    let ddl = create_table(resource);
    ddl.lines()
        .map(|l| l.trim().trim_end_matches(','))
        .find(|l| l.starts_with(&q(field)))
        .unwrap_or_default()
        .to_owned()
}

/// The statements creating a many relation's join table and its index.
fn add_join_table(new: &ResourceSpec, field: &str) -> Result<Vec<String>, StoreError> {
    let jt = join_table(&new.name, field);
    Ok(create_indexes(&resource_of(new)?)
        .into_iter()
        .filter(|s| s.contains(&q(&jt)))
        .collect())
}

/// Drops the indexes named after a resource (they are recreated under current names).
fn drop_named_indexes(r: &ResourceSpec) -> Vec<String> {
    let mut names: Vec<String> = r
        .indexes
        .iter()
        .map(|i| format!("ix__{}__{}", r.name, i.name))
        .collect();
    for f in &r.fields {
        if f.many {
            names.push(format!("jt__{}__target", join_table(&r.name, &f.name)));
        } else if f.resource.is_some() && !f.unique {
            names.push(format!("fk__{}__{}", r.name, f.name));
        }
    }
    names
        .iter()
        .map(|n| format!("DROP INDEX IF EXISTS {}", q(n)))
        .collect()
}

/// Refuses a step that existing rows would violate, counting them.
pub(crate) fn check(conn: &Connection, state: &SchemaState, step: &Step) -> Result<(), StoreError> {
    match step {
        Step::AddField { resource, field } if !field.many => {
            let rows: i64 =
                conn.query_row(&format!("SELECT COUNT(*) FROM {}", q(resource)), [], |r| {
                    r.get(0)
                })?;
            super::check_new_field(resource, field, rows)
        }
        Step::AlterField { resource, from, to } if !to.many => {
            let ty = from.to_field().map(|f| f.ty).unwrap_or(FieldType::Json);
            let mut stmt = conn.prepare(&format!("SELECT {} FROM {}", q(&to.name), q(resource)))?;
            let values = stmt.query_map([], |row| Ok(decode(&ty, row.get_ref(0)?)))?;
            super::judge_values(
                resource,
                to,
                values.map(|v| v.map_err(StoreError::from).and_then(|v| v)),
            )?;
            if to.unique && !from.unique {
                duplicates(conn, resource, std::slice::from_ref(&to.name))?;
            }
            Ok(())
        }
        Step::AlterField { resource, to, .. } => {
            // Many relations: the number of links per record.
            let jt = join_table(resource, &to.name);
            let counts = format!(
                "SELECT COUNT(*) FROM (SELECT \"source\", COUNT(*) AS n FROM {} GROUP BY \"source\" HAVING n < ? OR n > ?)",
                q(&jt)
            );
            let min = to.min_length.unwrap_or(0) as i64;
            let max = to.max_length.map_or(i64::MAX, |m| m as i64);
            let bad: i64 = conn.query_row(&counts, params![min, max], |r| r.get(0))?;
            if bad > 0 {
                return Err(violations(
                    &format!("changing {resource}.{}", to.name),
                    bad as u64,
                    "have a number of links outside the new bounds",
                ));
            }
            let _ = state;
            Ok(())
        }
        Step::CreateIndex { resource, index } if index.unique => duplicates(
            conn,
            resource,
            &index
                .columns
                .iter()
                .map(|c| c.trim_start_matches('-').to_owned())
                .collect::<Vec<_>>(),
        ),
        _ => Ok(()),
    }
}

fn duplicates(conn: &Connection, resource: &str, columns: &[String]) -> Result<(), StoreError> {
    let cols = columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    let not_null = columns
        .iter()
        .map(|c| format!("{} IS NOT NULL", q(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let bad: i64 = conn.query_row(
        &format!(
            "SELECT COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM {} WHERE {not_null} GROUP BY {cols} HAVING COUNT(*) > 1)",
            q(resource)
        ),
        [],
        |r| r.get(0),
    )?;
    if bad > 0 {
        return Err(violations(
            &format!("making {resource} ({}) unique", columns.join(", ")),
            bad as u64,
            "share a value with another row",
        ));
    }
    Ok(())
}

/// Checks, then runs, one step; returns the statements it ran.
pub(crate) fn apply(
    conn: &Connection,
    state: &mut SchemaState,
    step: &Step,
) -> Result<Vec<String>, StoreError> {
    if state.satisfies(step) {
        return Ok(Vec::new());
    }
    check(conn, state, step)?;
    let stmts = render(state, step)?;
    for sql in &stmts {
        conn.execute_batch(sql)?;
    }
    state.apply(step).map_err(StoreError::Config)?;
    Ok(stmts)
}

/// Brings the database to `schema` as `policy` allows (see [`super::StartupPolicy`]);
/// returns what was done, one line each.
pub(crate) fn startup(
    conn: &mut Connection,
    schema: &ferrobase_schema::Schema,
    policy: super::StartupPolicy,
    files: &[super::MigrationSource],
    now: &str,
) -> Result<Vec<String>, StoreError> {
    let (recorded, applied) = load(conn)?;
    let (state, fresh) = match recorded {
        Some(state) => (state, false),
        None => {
            let mut legacy = false;
            for r in &schema.resources {
                legacy |= table_exists(conn, &r.name)?;
            }
            if legacy {
                // Tables made before migrations existed: they must match schema.toml,
                // which then becomes the recorded state.
                crate::sqlite::ddl::apply(conn, schema)?;
                let state = SchemaState::of(schema);
                save_state(conn, &state)?;
                (state, false)
            } else {
                (SchemaState::default(), true)
            }
        }
    };
    let plan = super::startup_plan(policy, &state, fresh, files, &applied, schema)
        .map_err(StoreError::Config)?;
    let mut state = state;
    let mut done = Vec::new();
    for m in plan.migrations {
        in_transaction(conn, |tx| {
            for step in &m.file.steps {
                apply(tx, &mut state, step)?;
            }
            record(tx, &m.name, &m.checksum, now)?;
            save_state(tx, &state)
        })?;
        done.push(format!("applied migration {}", m.name));
    }
    if !plan.changes.is_empty() {
        in_transaction(conn, |tx| {
            for step in &plan.changes {
                apply(tx, &mut state, step)?;
            }
            save_state(tx, &state)
        })?;
        done.extend(plan.changes.iter().map(Step::describe));
    }
    conn.execute_batch(crate::auth::SQLITE_DDL)?;
    conn.execute_batch(crate::jobs::SQLITE_DDL)?;
    Ok(done)
}

/// Applies pending migrations (each in its own transaction); returns their names.
pub(crate) fn apply_pending(
    conn: &mut Connection,
    files: &[super::MigrationSource],
    allow_destructive: bool,
    now: &str,
) -> Result<Vec<String>, StoreError> {
    let (recorded, applied) = load(conn)?;
    let mut state = recorded.unwrap_or_default();
    let pending = super::pending(files, &applied).map_err(StoreError::Config)?;
    for m in &pending {
        super::check_allowed(&m.file.steps, allow_destructive)
            .map_err(|e| StoreError::Config(format!("migration {}: {e}", m.name)))?;
    }
    let mut done = Vec::new();
    for m in pending {
        in_transaction(conn, |tx| {
            for step in &m.file.steps {
                apply(tx, &mut state, step)?;
            }
            record(tx, &m.name, &m.checksum, now)?;
            save_state(tx, &state)
        })
        .map_err(|e| StoreError::Config(format!("migration {} was not applied: {e}", m.name)))?;
        done.push(m.name.clone());
    }
    conn.execute_batch(crate::auth::SQLITE_DDL)?;
    conn.execute_batch(crate::jobs::SQLITE_DDL)?;
    Ok(done)
}
