//! Identity tables on PostgreSQL; rotation and revocation in one transaction each.

use ferrobase_schema::validate::format_datetime;
use sea_query::Values;
use time::OffsetDateTime;

use super::conn::Conn;
use crate::StoreError;
use crate::auth::{ApiKeyRow, MfaRow, RefreshGrant, Rotation};

fn v(items: &[&str]) -> Values {
    Values(items.iter().map(|s| (*s).to_owned().into()).collect())
}

fn opt_time(row: &tokio_postgres::Row, i: usize) -> Option<String> {
    row.get::<_, Option<OffsetDateTime>>(i).map(format_datetime)
}

fn uuid(row: &tokio_postgres::Row, i: usize) -> String {
    row.get::<_, uuid::Uuid>(i).hyphenated().to_string()
}

pub(crate) async fn insert_refresh(conn: &impl Conn, g: &RefreshGrant) -> Result<(), StoreError> {
    conn.rows((
        "INSERT INTO \"_ferrobase_refresh_tokens\" (\"id\", \"family\", \"user_id\", \"token_hash\", \"created_at\", \"expires_at\") VALUES (CAST($1 AS uuid), CAST($2 AS uuid), CAST($3 AS uuid), $4, CAST($5 AS timestamptz), CAST($6 AS timestamptz))".into(),
        v(&[&g.id, &g.family, &g.user_id, &g.token_hash, &g.created_at, &g.expires_at]),
    ))
    .await?;
    Ok(())
}

async fn revoke_family(conn: &impl Conn, family: &str, now: &str) -> Result<(), StoreError> {
    conn.rows((
        "UPDATE \"_ferrobase_refresh_tokens\" SET \"revoked_at\" = CAST($1 AS timestamptz) WHERE \"family\" = CAST($2 AS uuid) AND \"revoked_at\" IS NULL".into(),
        v(&[now, family]),
    ))
    .await?;
    Ok(())
}

pub(crate) async fn rotate_refresh(
    conn: &impl Conn,
    presented_hash: &str,
    mut next: RefreshGrant,
) -> Result<Rotation, StoreError> {
    let now = next.created_at.clone();
    let rows = conn
        .rows((
            "SELECT \"id\", \"family\", \"user_id\", \"expires_at\" <= CAST($2 AS timestamptz), \"used_at\" IS NOT NULL OR \"revoked_at\" IS NOT NULL FROM \"_ferrobase_refresh_tokens\" WHERE \"token_hash\" = $1 FOR UPDATE".into(),
            v(&[presented_hash, &now]),
        ))
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Rotation::Unknown);
    };
    let (id, family, user_id) = (uuid(row, 0), uuid(row, 1), uuid(row, 2));
    let (expired, spent): (bool, bool) = (row.get(3), row.get(4));
    if spent {
        revoke_family(conn, &family, &now).await?;
        return Ok(Rotation::Reused { user_id });
    }
    if expired {
        return Ok(Rotation::Expired);
    }
    conn.rows((
        "UPDATE \"_ferrobase_refresh_tokens\" SET \"used_at\" = CAST($1 AS timestamptz) WHERE \"id\" = CAST($2 AS uuid)".into(),
        v(&[&now, &id]),
    ))
    .await?;
    next.family = family;
    next.user_id = user_id.clone();
    insert_refresh(conn, &next).await?;
    Ok(Rotation::Rotated { user_id })
}

pub(crate) async fn revoke_refresh(
    conn: &impl Conn,
    token_hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "SELECT \"family\" FROM \"_ferrobase_refresh_tokens\" WHERE \"token_hash\" = $1".into(),
            v(&[token_hash]),
        ))
        .await?;
    match rows.first() {
        Some(row) => {
            revoke_family(conn, &uuid(row, 0), now).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

pub(crate) async fn revoke_user(
    conn: &impl Conn,
    user_id: &str,
    now: &str,
) -> Result<(), StoreError> {
    for table in ["_ferrobase_refresh_tokens", "_ferrobase_sessions"] {
        conn.rows((
            format!("UPDATE \"{table}\" SET \"revoked_at\" = CAST($1 AS timestamptz) WHERE \"user_id\" = CAST($2 AS uuid) AND \"revoked_at\" IS NULL"),
            v(&[now, user_id]),
        ))
        .await?;
    }
    Ok(())
}

pub(crate) async fn insert_session(conn: &impl Conn, s: &[String; 5]) -> Result<(), StoreError> {
    conn.rows((
        "INSERT INTO \"_ferrobase_sessions\" (\"id\", \"user_id\", \"token_hash\", \"created_at\", \"expires_at\") VALUES (CAST($1 AS uuid), CAST($2 AS uuid), $3, CAST($4 AS timestamptz), CAST($5 AS timestamptz))".into(),
        v(&[&s[0], &s[1], &s[2], &s[3], &s[4]]),
    ))
    .await?;
    Ok(())
}

pub(crate) async fn session(
    conn: &impl Conn,
    token_hash: &str,
    now: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let rows = conn
        .rows((
            "SELECT \"id\", \"user_id\" FROM \"_ferrobase_sessions\" WHERE \"token_hash\" = $1 AND \"revoked_at\" IS NULL AND \"expires_at\" > CAST($2 AS timestamptz)".into(),
            v(&[token_hash, now]),
        ))
        .await?;
    Ok(rows.first().map(|r| (uuid(r, 0), uuid(r, 1))))
}

pub(crate) async fn revoke_session(
    conn: &impl Conn,
    token_hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "UPDATE \"_ferrobase_sessions\" SET \"revoked_at\" = CAST($1 AS timestamptz) WHERE \"token_hash\" = $2 AND \"revoked_at\" IS NULL RETURNING 1".into(),
            v(&[now, token_hash]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

const API_KEY_COLUMNS: &str = "\"id\", \"user_id\", \"name\", \"key_hash\", \"scopes\", \"created_at\", \"expires_at\", \"last_used_at\", \"revoked_at\"";

fn api_key_row(r: &tokio_postgres::Row) -> ApiKeyRow {
    ApiKeyRow {
        id: uuid(r, 0),
        user_id: uuid(r, 1),
        name: r.get(2),
        key_hash: r.get(3),
        scopes: serde_json::from_value(r.get::<_, serde_json::Value>(4)).unwrap_or_default(),
        created_at: opt_time(r, 5).unwrap_or_default(),
        expires_at: opt_time(r, 6),
        last_used_at: opt_time(r, 7),
        revoked_at: opt_time(r, 8),
    }
}

pub(crate) async fn insert_api_key(conn: &impl Conn, k: &ApiKeyRow) -> Result<(), StoreError> {
    let scopes = serde_json::to_string(&k.scopes).unwrap_or_else(|_| "[]".into());
    let mut values = v(&[
        &k.id,
        &k.user_id,
        &k.name,
        &k.key_hash,
        &scopes,
        &k.created_at,
    ]);
    values.0.push(k.expires_at.clone().into());
    conn.rows((
        format!("INSERT INTO \"_ferrobase_api_keys\" ({API_KEY_COLUMNS}) VALUES (CAST($1 AS uuid), CAST($2 AS uuid), $3, $4, CAST($5 AS jsonb), CAST($6 AS timestamptz), CAST($7 AS timestamptz), NULL, NULL)"),
        values,
    ))
    .await?;
    Ok(())
}

pub(crate) async fn api_key(conn: &impl Conn, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
    let rows = conn
        .rows((format!("SELECT {API_KEY_COLUMNS} FROM \"_ferrobase_api_keys\" WHERE \"id\" = CAST($1 AS uuid)"), v(&[id])))
        .await?;
    Ok(rows.first().map(api_key_row))
}

pub(crate) async fn api_keys_of(
    conn: &impl Conn,
    user_id: &str,
) -> Result<Vec<ApiKeyRow>, StoreError> {
    let rows = conn
        .rows((
            format!("SELECT {API_KEY_COLUMNS} FROM \"_ferrobase_api_keys\" WHERE \"user_id\" = CAST($1 AS uuid) ORDER BY \"created_at\", \"id\""),
            v(&[user_id]),
        ))
        .await?;
    Ok(rows.iter().map(api_key_row).collect())
}

pub(crate) async fn revoke_api_key(
    conn: &impl Conn,
    user_id: &str,
    id: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "UPDATE \"_ferrobase_api_keys\" SET \"revoked_at\" = COALESCE(\"revoked_at\", CAST($1 AS timestamptz)) WHERE \"id\" = CAST($2 AS uuid) AND \"user_id\" = CAST($3 AS uuid) RETURNING 1".into(),
            v(&[now, id, user_id]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn touch_api_key(
    conn: &impl Conn,
    id: &str,
    now: &str,
    stale_before: &str,
) -> Result<(), StoreError> {
    conn.rows((
        "UPDATE \"_ferrobase_api_keys\" SET \"last_used_at\" = CAST($1 AS timestamptz) WHERE \"id\" = CAST($2 AS uuid) AND (\"last_used_at\" IS NULL OR \"last_used_at\" < CAST($3 AS timestamptz))".into(),
        v(&[now, id, stale_before]),
    ))
    .await?;
    Ok(())
}

pub(crate) async fn user_id_by_email(
    conn: &impl Conn,
    email: &str,
) -> Result<Option<String>, StoreError> {
    let rows = conn
        .rows((
            "SELECT \"id\" FROM \"users\" WHERE lower(\"email\") = lower($1)".into(),
            v(&[email]),
        ))
        .await?;
    Ok(rows.first().map(|r| uuid(r, 0)))
}

pub(crate) async fn set_password_hash(
    conn: &impl Conn,
    user_id: &str,
    hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "UPDATE \"users\" SET \"password_hash\" = $1, \"version\" = \"version\" + 1, \"updated_at\" = CAST($2 AS timestamptz) WHERE \"id\" = CAST($3 AS uuid) RETURNING 1".into(),
            v(&[hash, now, user_id]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn mfa(conn: &impl Conn, user_id: &str) -> Result<Option<MfaRow>, StoreError> {
    let rows = conn
        .rows((
            "SELECT \"secret\", \"confirmed\", \"last_step\", (SELECT COUNT(*) FROM \"_ferrobase_recovery_codes\" r WHERE r.\"user_id\" = m.\"user_id\" AND r.\"used_at\" IS NULL) FROM \"_ferrobase_mfa\" m WHERE m.\"user_id\" = CAST($1 AS uuid)".into(),
            v(&[user_id]),
        ))
        .await?;
    Ok(rows.first().map(|r| MfaRow {
        secret: r.get(0),
        confirmed: r.get(1),
        last_step: r.get(2),
        recovery_left: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
    }))
}

pub(crate) async fn begin_mfa(
    conn: &impl Conn,
    user_id: &str,
    secret: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "INSERT INTO \"_ferrobase_mfa\" (\"user_id\", \"secret\", \"confirmed\", \"last_step\", \"created_at\") VALUES (CAST($1 AS uuid), $2, false, 0, CAST($3 AS timestamptz)) ON CONFLICT (\"user_id\") DO UPDATE SET \"secret\" = excluded.\"secret\", \"created_at\" = excluded.\"created_at\" WHERE NOT \"_ferrobase_mfa\".\"confirmed\" RETURNING 1".into(),
            v(&[user_id, secret, now]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn confirm_mfa(
    conn: &impl Conn,
    user_id: &str,
    secret: &str,
    step: i64,
    recovery: &[String],
) -> Result<bool, StoreError> {
    let step = step.to_string();
    let rows = conn
        .rows((
            "UPDATE \"_ferrobase_mfa\" SET \"confirmed\" = true, \"last_step\" = CAST($1 AS bigint) WHERE \"user_id\" = CAST($2 AS uuid) AND \"secret\" = $3 AND NOT \"confirmed\" AND \"last_step\" < CAST($1 AS bigint) RETURNING 1".into(),
            v(&[&step, user_id, secret]),
        ))
        .await?;
    if rows.is_empty() {
        return Ok(false);
    }
    conn.rows((
        "DELETE FROM \"_ferrobase_recovery_codes\" WHERE \"user_id\" = CAST($1 AS uuid)".into(),
        v(&[user_id]),
    ))
    .await?;
    let hashes = serde_json::Value::Array(
        recovery
            .iter()
            .cloned()
            .map(serde_json::Value::String)
            .collect(),
    )
    .to_string();
    conn.rows((
        "INSERT INTO \"_ferrobase_recovery_codes\" (\"user_id\", \"code_hash\", \"used_at\") SELECT CAST($1 AS uuid), h, NULL FROM jsonb_array_elements_text(CAST($2 AS jsonb)) AS h".into(),
        v(&[user_id, &hashes]),
    ))
    .await?;
    Ok(true)
}

pub(crate) async fn use_mfa_step(
    conn: &impl Conn,
    user_id: &str,
    step: i64,
) -> Result<bool, StoreError> {
    let step = step.to_string();
    let rows = conn
        .rows((
            "UPDATE \"_ferrobase_mfa\" SET \"last_step\" = CAST($1 AS bigint) WHERE \"user_id\" = CAST($2 AS uuid) AND \"confirmed\" AND \"last_step\" < CAST($1 AS bigint) RETURNING 1".into(),
            v(&[&step, user_id]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn use_recovery_code(
    conn: &impl Conn,
    user_id: &str,
    hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "UPDATE \"_ferrobase_recovery_codes\" SET \"used_at\" = CAST($1 AS timestamptz) WHERE \"user_id\" = CAST($2 AS uuid) AND \"code_hash\" = $3 AND \"used_at\" IS NULL RETURNING 1".into(),
            v(&[now, user_id, hash]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn delete_mfa(conn: &impl Conn, user_id: &str) -> Result<bool, StoreError> {
    conn.rows((
        "DELETE FROM \"_ferrobase_recovery_codes\" WHERE \"user_id\" = CAST($1 AS uuid)".into(),
        v(&[user_id]),
    ))
    .await?;
    let rows = conn
        .rows((
            "DELETE FROM \"_ferrobase_mfa\" WHERE \"user_id\" = CAST($1 AS uuid) RETURNING 1"
                .into(),
            v(&[user_id]),
        ))
        .await?;
    Ok(!rows.is_empty())
}
