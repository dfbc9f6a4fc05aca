//! Tables, constraints, indexes and join tables for a schema, on PostgreSQL.
//!
//! Text columns use the "C" collation so that ordering is byte order, as on SQLite:
//! the same list, sorted the same way, on either store.

use ferrobase_schema::{FieldType, OnDelete, Resource, Schema};
use tokio_postgres::Client;

use crate::StoreError;
use crate::common::expected_columns;
use crate::common::join_table;

/// Quotes an identifier.
pub(crate) fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The PostgreSQL type of a field's column.
pub(crate) fn column_type(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::Integer => "bigint",
        FieldType::Number => "double precision",
        FieldType::Boolean => "boolean",
        FieldType::Datetime => "timestamptz",
        FieldType::Date => "date",
        FieldType::Uuid | FieldType::Relation(_) => "uuid",
        FieldType::Json => "jsonb",
        _ => "text COLLATE \"C\"",
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
        "\"id\" uuid PRIMARY KEY".to_owned(),
        "\"version\" bigint NOT NULL DEFAULT 1".to_owned(),
    ];
    if resource.timestamps {
        cols.push("\"created_at\" timestamptz NOT NULL".into());
        cols.push("\"updated_at\" timestamptz NOT NULL".into());
    }
    for field in resource.fields.iter().filter(|f| !f.is_many()) {
        let mut col = format!("{} {}", q(&field.name), column_type(&field.ty));
        if field.required {
            col.push_str(" NOT NULL");
        }
        if field.unique && !field.case_insensitive {
            col.push_str(&format!(
                " CONSTRAINT {} UNIQUE",
                q(&format!("uq__{}__{}", resource.name, field.name))
            ));
        }
        cols.push(col);
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
        q(&resource.name),
        cols.join(",\n  ")
    )
}

/// Foreign keys are added after every table exists (relations may point forward).
pub(crate) fn foreign_keys(resource: &Resource) -> Vec<String> {
    let table = &resource.name;
    let mut stmts = Vec::new();
    for field in &resource.fields {
        let Some(rel) = field.relation() else {
            continue;
        };
        if rel.many {
            continue;
        }
        let name = format!("fk__{table}__{}", field.name);
        stmts.push(format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{name}') THEN \
             ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {}(\"id\") ON DELETE {}; END IF; END $$",
            q(table),
            q(&name),
            q(&field.name),
            q(&rel.resource),
            on_delete(rel.on_delete)
        ));
    }
    stmts
}

pub(crate) fn indexes(resource: &Resource) -> Vec<String> {
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
        if field.case_insensitive && field.unique {
            stmts.push(format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (lower({}))",
                q(&format!("uq__{table}__{}", field.name)),
                q(table),
                q(&field.name)
            ));
        }
        let Some(rel) = field.relation() else {
            continue;
        };
        if rel.many {
            let jt = join_table(table, &field.name);
            stmts.push(format!(
                "CREATE TABLE IF NOT EXISTS {} (\n  \"source\" uuid NOT NULL REFERENCES {}(\"id\") ON DELETE CASCADE,\n  \"target\" uuid NOT NULL REFERENCES {}(\"id\") ON DELETE CASCADE,\n  \"position\" bigint NOT NULL,\n  PRIMARY KEY (\"source\", \"target\")\n)",
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

/// Identity tables and the event log on PostgreSQL. The event log's sequence is its own
/// object so that followers can read how far it has been handed out (see
/// [`crate::events::EventFollower`]).
pub(crate) const AUTH_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS "_ferrobase_refresh_tokens" (
  "id" uuid PRIMARY KEY,
  "family" uuid NOT NULL,
  "user_id" uuid NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "token_hash" text NOT NULL UNIQUE,
  "created_at" timestamptz NOT NULL,
  "expires_at" timestamptz NOT NULL,
  "used_at" timestamptz,
  "revoked_at" timestamptz
);
CREATE INDEX IF NOT EXISTS "fk___ferrobase_refresh_tokens__family" ON "_ferrobase_refresh_tokens" ("family");
CREATE INDEX IF NOT EXISTS "fk___ferrobase_refresh_tokens__user_id" ON "_ferrobase_refresh_tokens" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_sessions" (
  "id" uuid PRIMARY KEY,
  "user_id" uuid NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "token_hash" text NOT NULL UNIQUE,
  "created_at" timestamptz NOT NULL,
  "expires_at" timestamptz NOT NULL,
  "revoked_at" timestamptz
);
CREATE INDEX IF NOT EXISTS "fk___ferrobase_sessions__user_id" ON "_ferrobase_sessions" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_api_keys" (
  "id" uuid PRIMARY KEY,
  "user_id" uuid NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "name" text NOT NULL,
  "key_hash" text NOT NULL UNIQUE,
  "scopes" jsonb NOT NULL,
  "created_at" timestamptz NOT NULL,
  "expires_at" timestamptz,
  "last_used_at" timestamptz,
  "revoked_at" timestamptz
);
CREATE INDEX IF NOT EXISTS "fk___ferrobase_api_keys__user_id" ON "_ferrobase_api_keys" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_tickets" (
  "kind" text NOT NULL,
  "id" text NOT NULL,
  "user_id" uuid REFERENCES "users"("id") ON DELETE CASCADE,
  "payload" text NOT NULL,
  "expires_at" text NOT NULL,
  PRIMARY KEY ("kind", "id")
);
CREATE INDEX IF NOT EXISTS "ix___ferrobase_tickets__expires_at" ON "_ferrobase_tickets" ("expires_at");
CREATE TABLE IF NOT EXISTS "_ferrobase_identities" (
  "provider" text NOT NULL,
  "subject" text NOT NULL,
  "user_id" uuid NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "email" text,
  "created_at" text NOT NULL,
  PRIMARY KEY ("provider", "subject")
);
CREATE INDEX IF NOT EXISTS "fk___ferrobase_identities__user_id" ON "_ferrobase_identities" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_passkeys" (
  "id" text PRIMARY KEY,
  "user_id" uuid NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "user_handle" text NOT NULL,
  "name" text NOT NULL,
  "credential" text NOT NULL,
  "counter" bigint NOT NULL,
  "created_at" text NOT NULL,
  "last_used_at" text
);
CREATE INDEX IF NOT EXISTS "fk___ferrobase_passkeys__user_id" ON "_ferrobase_passkeys" ("user_id");
CREATE INDEX IF NOT EXISTS "ix___ferrobase_passkeys__user_handle" ON "_ferrobase_passkeys" ("user_handle");
CREATE TABLE IF NOT EXISTS "_ferrobase_mfa" (
  "user_id" uuid PRIMARY KEY REFERENCES "users"("id") ON DELETE CASCADE,
  "secret" text NOT NULL,
  "confirmed" boolean NOT NULL,
  "last_step" bigint NOT NULL,
  "created_at" timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS "_ferrobase_recovery_codes" (
  "user_id" uuid NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "code_hash" text NOT NULL,
  "used_at" timestamptz,
  PRIMARY KEY ("user_id", "code_hash")
);
CREATE TABLE IF NOT EXISTS "_ferrobase_email_tokens" (
  "token_hash" text PRIMARY KEY,
  "user_id" uuid NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "purpose" text NOT NULL,
  "created_at" text NOT NULL,
  "expires_at" text NOT NULL,
  "used_at" text
);
CREATE INDEX IF NOT EXISTS "fk___ferrobase_email_tokens__user_id" ON "_ferrobase_email_tokens" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_idempotency" (
  "key" text PRIMARY KEY,
  "request_hash" text NOT NULL,
  "created_at" timestamptz NOT NULL,
  "status" integer,
  "headers" text,
  "body" bytea
);
CREATE INDEX IF NOT EXISTS "ix___ferrobase_idempotency__created_at" ON "_ferrobase_idempotency" ("created_at");
CREATE SEQUENCE IF NOT EXISTS "_ferrobase_event_seq";
CREATE TABLE IF NOT EXISTS "_ferrobase_events" (
  "seq" bigint PRIMARY KEY DEFAULT nextval('"_ferrobase_event_seq"'),
  "resource" text NOT NULL,
  "op" text NOT NULL,
  "record_id" uuid NOT NULL,
  "version" bigint NOT NULL,
  "actor" text,
  "at" timestamptz NOT NULL,
  "record" jsonb NOT NULL,
  "previous" jsonb
);
CREATE INDEX IF NOT EXISTS "ix___ferrobase_events__at" ON "_ferrobase_events" ("at");
"#;

/// Creates what is missing (in one transaction, under an advisory lock so that nodes
/// starting together do not race); refuses tables whose columns differ from the schema.
pub(crate) async fn apply(client: &mut Client, schema: &Schema) -> Result<Vec<String>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7220418370)", &[])
        .await?;
    let mut created = Vec::new();
    let mut mismatches = Vec::new();
    for resource in &schema.resources {
        let existing: Vec<String> = tx
            .query(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&resource.name],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if existing.is_empty() {
            tx.batch_execute(&create_table(resource)).await?;
            created.push(resource.name.clone());
            continue;
        }
        let expected = expected_columns(resource);
        let missing: Vec<&String> = expected.iter().filter(|c| !existing.contains(c)).collect();
        let extra: Vec<&String> = existing.iter().filter(|c| !expected.contains(c)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            mismatches.push(format!(
                "table '{}' does not match schema.toml: missing {:?}, undeclared {:?}",
                resource.name, missing, extra
            ));
        }
    }
    if !mismatches.is_empty() {
        return Err(StoreError::Config(format!(
            "{}\nchanging existing tables needs a migration; this version creates new tables only",
            mismatches.join("\n")
        )));
    }
    for resource in &schema.resources {
        for stmt in foreign_keys(resource).into_iter().chain(indexes(resource)) {
            tx.batch_execute(&stmt).await?;
        }
    }
    tx.batch_execute(AUTH_DDL).await?;
    tx.batch_execute(crate::jobs::POSTGRES_DDL).await?;
    tx.commit().await?;
    Ok(created)
}
