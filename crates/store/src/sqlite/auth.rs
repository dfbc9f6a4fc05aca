//! Identity tables on SQLite. Every operation that must be atomic (rotation with reuse
//! detection, revocation) runs in one writer transaction.

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::auth::{ApiKeyRow, MfaRow, RefreshGrant, Rotation};

pub(crate) fn insert_refresh(conn: &Connection, g: &RefreshGrant) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO \"_ferrobase_refresh_tokens\" (\"id\", \"family\", \"user_id\", \"token_hash\", \"created_at\", \"expires_at\") VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![g.id, g.family, g.user_id, g.token_hash, g.created_at, g.expires_at])?;
    Ok(())
}

fn revoke_family(conn: &Connection, family: &str, now: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE \"_ferrobase_refresh_tokens\" SET \"revoked_at\" = ? WHERE \"family\" = ? AND \"revoked_at\" IS NULL",
    )?
    .execute(params![now, family])?;
    Ok(())
}

/// `(id, family, user id, expires at, used at, revoked at)` of a stored refresh token.
type StoredRefresh = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

/// Presents a refresh token: rotates it into `next` (same family), or, when it was used
/// or revoked before, revokes its family.
pub(crate) fn rotate_refresh(
    conn: &Connection,
    presented_hash: &str,
    mut next: RefreshGrant,
    now: &str,
) -> Result<Rotation, StoreError> {
    let row: Option<StoredRefresh> = conn
        .prepare_cached(
            "SELECT \"id\", \"family\", \"user_id\", \"expires_at\", \"used_at\", \"revoked_at\" FROM \"_ferrobase_refresh_tokens\" WHERE \"token_hash\" = ?",
        )?
        .query_row([presented_hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .optional()?;
    let Some((id, family, user_id, expires_at, used_at, revoked_at)) = row else {
        return Ok(Rotation::Unknown);
    };
    if used_at.is_some() || revoked_at.is_some() {
        revoke_family(conn, &family, now)?;
        return Ok(Rotation::Reused { user_id });
    }
    if expires_at.as_str() <= now {
        return Ok(Rotation::Expired);
    }
    conn.prepare_cached(
        "UPDATE \"_ferrobase_refresh_tokens\" SET \"used_at\" = ? WHERE \"id\" = ?",
    )?
    .execute(params![now, id])?;
    next.family = family;
    next.user_id = user_id.clone();
    insert_refresh(conn, &next)?;
    Ok(Rotation::Rotated { user_id })
}

/// Revokes the family of a refresh token; whether the token was known.
pub(crate) fn revoke_refresh(
    conn: &Connection,
    token_hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    let family: Option<String> = conn
        .prepare_cached(
            "SELECT \"family\" FROM \"_ferrobase_refresh_tokens\" WHERE \"token_hash\" = ?",
        )?
        .query_row([token_hash], |r| r.get(0))
        .optional()?;
    match family {
        Some(f) => {
            revoke_family(conn, &f, now)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Revokes every refresh token and session of a user (password change, role change).
pub(crate) fn revoke_user(conn: &Connection, user_id: &str, now: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE \"_ferrobase_refresh_tokens\" SET \"revoked_at\" = ? WHERE \"user_id\" = ? AND \"revoked_at\" IS NULL")?
        .execute(params![now, user_id])?;
    conn.prepare_cached("UPDATE \"_ferrobase_sessions\" SET \"revoked_at\" = ? WHERE \"user_id\" = ? AND \"revoked_at\" IS NULL")?
        .execute(params![now, user_id])?;
    Ok(())
}

pub(crate) fn insert_session(
    conn: &Connection,
    (id, user_id, token_hash, now, expires_at): (&str, &str, &str, &str, &str),
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO \"_ferrobase_sessions\" (\"id\", \"user_id\", \"token_hash\", \"created_at\", \"expires_at\") VALUES (?, ?, ?, ?, ?)",
    )?
    .execute(params![id, user_id, token_hash, now, expires_at])?;
    Ok(())
}

/// The live session with this token hash: `(session id, user id)`.
pub(crate) fn session(
    conn: &Connection,
    token_hash: &str,
    now: &str,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT \"id\", \"user_id\" FROM \"_ferrobase_sessions\" WHERE \"token_hash\" = ? AND \"revoked_at\" IS NULL AND \"expires_at\" > ?",
        )?
        .query_row(params![token_hash, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

pub(crate) fn revoke_session(
    conn: &Connection,
    token_hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE \"_ferrobase_sessions\" SET \"revoked_at\" = ? WHERE \"token_hash\" = ? AND \"revoked_at\" IS NULL")?
        .execute(params![now, token_hash])?
        > 0)
}

const API_KEY_COLUMNS: &str = "\"id\", \"user_id\", \"name\", \"key_hash\", \"scopes\", \"created_at\", \"expires_at\", \"last_used_at\", \"revoked_at\"";

fn api_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    let scopes: String = r.get(4)?;
    Ok(ApiKeyRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        key_hash: r.get(3)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        last_used_at: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

pub(crate) fn insert_api_key(conn: &Connection, k: &ApiKeyRow) -> Result<(), StoreError> {
    let scopes = serde_json::to_string(&k.scopes).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(&format!("INSERT INTO \"_ferrobase_api_keys\" ({API_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)"))?
        .execute(params![k.id, k.user_id, k.name, k.key_hash, scopes, k.created_at, k.expires_at])
        .map_err(super::records::relation_error)?;
    Ok(())
}

pub(crate) fn api_key(conn: &Connection, id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {API_KEY_COLUMNS} FROM \"_ferrobase_api_keys\" WHERE \"id\" = ?"
        ))?
        .query_row([id], api_key_row)
        .optional()?)
}

pub(crate) fn api_keys_of(conn: &Connection, user_id: &str) -> Result<Vec<ApiKeyRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {API_KEY_COLUMNS} FROM \"_ferrobase_api_keys\" WHERE \"user_id\" = ? ORDER BY \"created_at\", \"id\""
    ))?;
    let rows = stmt.query_map([user_id], api_key_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn revoke_api_key(
    conn: &Connection,
    user_id: &str,
    id: &str,
    now: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE \"_ferrobase_api_keys\" SET \"revoked_at\" = COALESCE(\"revoked_at\", ?) WHERE \"id\" = ? AND \"user_id\" = ?")?
        .execute(params![now, id, user_id])?
        > 0)
}

/// Records use, at most once a minute per key (not a write per request).
pub(crate) fn touch_api_key(
    conn: &Connection,
    id: &str,
    now: &str,
    stale_before: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE \"_ferrobase_api_keys\" SET \"last_used_at\" = ? WHERE \"id\" = ? AND (\"last_used_at\" IS NULL OR \"last_used_at\" < ?)",
    )?
    .execute(params![now, id, stale_before])?;
    Ok(())
}

/// The users row with this email (case-insensitively), as a record id.
pub(crate) fn user_id_by_email(
    conn: &Connection,
    email: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT \"id\" FROM \"users\" WHERE \"email\" = ? COLLATE NOCASE")?
        .query_row([email], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_password_hash(
    conn: &Connection,
    user_id: &str,
    hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE \"users\" SET \"password_hash\" = ?, \"version\" = \"version\" + 1, \"updated_at\" = ? WHERE \"id\" = ?",
        )?
        .execute(params![hash, now, user_id])?
        > 0)
}

pub(crate) fn mfa(conn: &Connection, user_id: &str) -> Result<Option<MfaRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT \"secret\", \"confirmed\", \"last_step\", (SELECT COUNT(*) FROM \"_ferrobase_recovery_codes\" r WHERE r.\"user_id\" = m.\"user_id\" AND r.\"used_at\" IS NULL) FROM \"_ferrobase_mfa\" m WHERE m.\"user_id\" = ?",
        )?
        .query_row(params![user_id], |r| {
            Ok(MfaRow {
                secret: r.get(0)?,
                confirmed: r.get::<_, i64>(1)? != 0,
                last_step: r.get(2)?,
                recovery_left: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            })
        })
        .optional()?)
}

pub(crate) fn begin_mfa(
    conn: &Connection,
    user_id: &str,
    secret: &str,
    now: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO \"_ferrobase_mfa\" (\"user_id\", \"secret\", \"confirmed\", \"last_step\", \"created_at\") VALUES (?, ?, 0, 0, ?) ON CONFLICT (\"user_id\") DO UPDATE SET \"secret\" = excluded.\"secret\", \"created_at\" = excluded.\"created_at\" WHERE \"_ferrobase_mfa\".\"confirmed\" = 0",
        )?
        .execute(params![user_id, secret, now])?
        > 0)
}

pub(crate) fn confirm_mfa(
    conn: &Connection,
    user_id: &str,
    secret: &str,
    step: i64,
    recovery: &[String],
) -> Result<bool, StoreError> {
    let confirmed = conn
        .prepare_cached(
            "UPDATE \"_ferrobase_mfa\" SET \"confirmed\" = 1, \"last_step\" = ? WHERE \"user_id\" = ? AND \"secret\" = ? AND \"confirmed\" = 0 AND \"last_step\" < ?",
        )?
        .execute(params![step, user_id, secret, step])?
        > 0;
    if confirmed {
        conn.prepare_cached("DELETE FROM \"_ferrobase_recovery_codes\" WHERE \"user_id\" = ?")?
            .execute(params![user_id])?;
        let mut insert = conn.prepare_cached(
            "INSERT INTO \"_ferrobase_recovery_codes\" (\"user_id\", \"code_hash\", \"used_at\") VALUES (?, ?, NULL)",
        )?;
        for hash in recovery {
            insert.execute(params![user_id, hash])?;
        }
    }
    Ok(confirmed)
}

pub(crate) fn use_mfa_step(
    conn: &Connection,
    user_id: &str,
    step: i64,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE \"_ferrobase_mfa\" SET \"last_step\" = ? WHERE \"user_id\" = ? AND \"confirmed\" = 1 AND \"last_step\" < ?",
        )?
        .execute(params![step, user_id, step])?
        > 0)
}

pub(crate) fn use_recovery_code(
    conn: &Connection,
    user_id: &str,
    hash: &str,
    now: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE \"_ferrobase_recovery_codes\" SET \"used_at\" = ? WHERE \"user_id\" = ? AND \"code_hash\" = ? AND \"used_at\" IS NULL",
        )?
        .execute(params![now, user_id, hash])?
        > 0)
}

pub(crate) fn delete_mfa(conn: &Connection, user_id: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("DELETE FROM \"_ferrobase_recovery_codes\" WHERE \"user_id\" = ?")?
        .execute(params![user_id])?;
    Ok(conn
        .prepare_cached("DELETE FROM \"_ferrobase_mfa\" WHERE \"user_id\" = ?")?
        .execute(params![user_id])?
        > 0)
}
