//! Tables, constraints, indexes and join tables for a schema, on SQLite.
//!
//! Names come from the validated schema (lower-case identifiers without `__`), and are
//! quoted anyway. Changing an existing table is the migration engine's job; here a table
//! that no longer matches the schema stops start-up with a clear message.

use ferrobase_schema::{FieldType, OnDelete, Resource, Schema};
use rusqlite::Connection;

use crate::StoreError;
use crate::common::{expected_columns, join_table};

/// Quotes an identifier for SQLite.
pub(crate) fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_type(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::Integer | FieldType::Boolean => "INTEGER",
        FieldType::Number => "REAL",
        _ => "TEXT",
    }
}

fn on_delete(action: OnDelete) -> &'static str {
    match action {
        OnDelete::Restrict => "RESTRICT",
        OnDelete::Cascade => "CASCADE",
        OnDelete::SetNull => "SET NULL",
    }
}

pub(crate) fn create_table(resource: &Resource) -> String {
    let mut cols = vec![
        "\"id\" TEXT PRIMARY KEY NOT NULL".to_owned(),
        "\"version\" INTEGER NOT NULL DEFAULT 1".to_owned(),
    ];
    if resource.timestamps {
        cols.push("\"created_at\" TEXT NOT NULL".into());
        cols.push("\"updated_at\" TEXT NOT NULL".into());
    }
    for field in resource.fields.iter().filter(|f| !f.is_many()) {
        let mut col = format!("{} {}", q(&field.name), column_type(&field.ty));
        if field.case_insensitive {
            col.push_str(" COLLATE NOCASE");
        }
        if field.required {
            col.push_str(" NOT NULL");
        }
        if field.unique {
            col.push_str(" UNIQUE");
        }
        if let FieldType::Boolean = field.ty {
            col.push_str(&format!(" CHECK ({} IN (0, 1))", q(&field.name)));
        }
        if let Some(rel) = field.relation() {
            col.push_str(&format!(
                " REFERENCES {}(\"id\") ON DELETE {}",
                q(&rel.resource),
                on_delete(rel.on_delete)
            ));
        }
        cols.push(col);
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) STRICT",
        q(&resource.name),
        cols.join(",\n  ")
    )
}

pub(crate) fn create_indexes(resource: &Resource) -> Vec<String> {
    let table = &resource.name;
    let mut stmts = Vec::new();
    for index in &resource.indexes {
        let cols = crate::common::index_columns(index, q);
        stmts.push(format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
            if index.unique { "UNIQUE " } else { "" },
            q(&format!("ix__{table}__{}", index.name)),
            q(table),
            cols.join(", ")
        ));
    }
    for field in &resource.fields {
        let Some(rel) = field.relation() else {
            continue;
        };
        if rel.many {
            let jt = join_table(table, &field.name);
            stmts.push(format!(
                "CREATE TABLE IF NOT EXISTS {} (\n  \"source\" TEXT NOT NULL REFERENCES {}(\"id\") ON DELETE CASCADE,\n  \"target\" TEXT NOT NULL REFERENCES {}(\"id\") ON DELETE CASCADE,\n  \"position\" INTEGER NOT NULL,\n  PRIMARY KEY (\"source\", \"target\")\n) STRICT, WITHOUT ROWID",
                q(&jt),
                q(table),
                q(&rel.resource)
            ));
            stmts.push(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} (\"target\")",
                q(&format!("jt__{jt}__target")),
                q(&jt)
            ));
        } else if !field.unique {
            // Foreign keys need an index for ON DELETE to stay fast.
            stmts.push(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
                q(&format!("fk__{table}__{}", field.name)),
                q(table),
                q(&field.name)
            ));
        }
    }
    stmts
}

/// Creates every missing table, join table and index; refuses tables whose columns
/// differ from the schema.
pub(crate) fn apply(conn: &mut Connection, schema: &Schema) -> Result<Vec<String>, StoreError> {
    let tx = conn.transaction()?;
    let mut created = Vec::new();
    let mut mismatches = Vec::new();
    for resource in &schema.resources {
        let existing: Vec<String> = {
            let mut stmt = tx.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
            stmt.query_map([&resource.name], |row| row.get(0))?
                .collect::<Result<_, _>>()?
        };
        if existing.is_empty() {
            tx.execute(&create_table(resource), [])?;
            created.push(resource.name.clone());
        } else {
            let expected = expected_columns(resource);
            let missing: Vec<&String> = expected.iter().filter(|c| !existing.contains(c)).collect();
            let extra: Vec<&String> = existing.iter().filter(|c| !expected.contains(c)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                let mut m = format!("table '{}' does not match schema.toml:", resource.name);
                if !missing.is_empty() {
                    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                    m.push_str(&format!(" missing columns {}", names.join(", ")));
                }
                if !extra.is_empty() {
                    let names: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
                    m.push_str(&format!(" undeclared columns {}", names.join(", ")));
                }
                mismatches.push(m);
            }
        }
    }
    if !mismatches.is_empty() {
        return Err(StoreError::Config(format!(
            "{}\nchanging existing tables needs a migration; this version creates new tables only",
            mismatches.join("\n")
        )));
    }
    for resource in &schema.resources {
        for stmt in create_indexes(resource) {
            tx.execute(&stmt, [])?;
        }
    }
    tx.execute_batch(crate::auth::SQLITE_DDL)?;
    tx.execute_batch(crate::jobs::SQLITE_DDL)?;
    tx.commit()?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blog_tables_have_constraints_and_indexes() {
        let schema = ferrobase_schema::schema_from_str(
            "schema.toml",
            ferrobase_schema::templates::BLOG_SCHEMA,
        )
        .expect("blog schema");
        let posts = schema.resource("posts").expect("posts");
        let ddl = create_table(posts);
        assert!(ddl.contains("\"slug\" TEXT NOT NULL UNIQUE"), "{ddl}");
        assert!(
            ddl.contains("\"author\" TEXT NOT NULL REFERENCES \"users\"(\"id\") ON DELETE CASCADE"),
            "{ddl}"
        );
        let idx = create_indexes(posts);
        assert!(
            idx.iter().any(|s| s.contains(
                "\"ix__posts__by_status\" ON \"posts\" (\"status\", \"created_at\" DESC, \"id\" DESC)"
            )),
            "{idx:?}"
        );
        let users = create_table(schema.resource("users").expect("users"));
        assert!(
            users.contains("\"email\" TEXT COLLATE NOCASE NOT NULL UNIQUE"),
            "{users}"
        );

        let mut conn = Connection::open_in_memory().expect("memory db");
        let created = apply(&mut conn, &schema).expect("applies");
        assert_eq!(created, vec!["users", "posts"]);
        assert!(apply(&mut conn, &schema).expect("idempotent").is_empty());
    }
}
