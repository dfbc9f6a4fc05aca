//! Sign-in tickets, linked provider accounts and passkeys on SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;
use crate::auth::{IdentityRow, PasskeyRow, Ticket};

pub(crate) fn put_ticket(conn: &Connection, t: &Ticket, now: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM \"_ferrobase_tickets\" WHERE \"expires_at\" <= ?")?
        .execute(params![now])?;
    conn.prepare_cached(
        "INSERT INTO \"_ferrobase_tickets\" (\"kind\", \"id\", \"user_id\", \"payload\", \"expires_at\") VALUES (?, ?, ?, ?, ?)",
    )?
    .execute(params![t.kind, t.id, t.user_id, t.payload, t.expires_at])?;
    Ok(())
}

pub(crate) fn take_ticket(
    conn: &Connection,
    kind: &str,
    id: &str,
    now: &str,
) -> Result<Option<Ticket>, StoreError> {
    let taken = conn
        .prepare_cached(
            "DELETE FROM \"_ferrobase_tickets\" WHERE \"kind\" = ? AND \"id\" = ? RETURNING \"user_id\", \"payload\", \"expires_at\"",
        )?
        .query_row(params![kind, id], |r| {
            Ok(Ticket {
                kind: kind.to_owned(),
                id: id.to_owned(),
                user_id: r.get(0)?,
                payload: r.get(1)?,
                expires_at: r.get(2)?,
            })
        })
        .optional()?;
    Ok(taken.filter(|t| t.expires_at.as_str() > now))
}

pub(crate) fn identity_user(
    conn: &Connection,
    provider: &str,
    subject: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT \"user_id\" FROM \"_ferrobase_identities\" WHERE \"provider\" = ? AND \"subject\" = ?",
        )?
        .query_row(params![provider, subject], |r| r.get(0))
        .optional()?)
}

pub(crate) fn link_identity(conn: &Connection, row: &IdentityRow) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO \"_ferrobase_identities\" (\"provider\", \"subject\", \"user_id\", \"email\", \"created_at\") VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )?
        .execute(params![row.provider, row.subject, row.user_id, row.email, row.created_at])?
        > 0)
}

pub(crate) fn identities(conn: &Connection, user_id: &str) -> Result<Vec<IdentityRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT \"provider\", \"subject\", \"email\", \"created_at\" FROM \"_ferrobase_identities\" WHERE \"user_id\" = ? ORDER BY \"created_at\", \"provider\"",
    )?;
    let rows = stmt.query_map(params![user_id], |r| {
        Ok(IdentityRow {
            provider: r.get(0)?,
            subject: r.get(1)?,
            user_id: user_id.to_owned(),
            email: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn unlink_identity(
    conn: &Connection,
    user_id: &str,
    provider: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM \"_ferrobase_identities\" WHERE \"user_id\" = ? AND \"provider\" = ?",
        )?
        .execute(params![user_id, provider])?
        > 0)
}

pub(crate) fn add_passkey(conn: &Connection, p: &PasskeyRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO \"_ferrobase_passkeys\" (\"id\", \"user_id\", \"user_handle\", \"name\", \"credential\", \"counter\", \"created_at\", \"last_used_at\") VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
    )?
    .execute(params![p.id, p.user_id, p.user_handle, p.name, p.credential, p.counter, p.created_at])?;
    Ok(())
}

/// The passkeys whose `column` (`user_id` or `user_handle`) is `value`.
pub(crate) fn passkeys(
    conn: &Connection,
    column: &'static str,
    value: &str,
) -> Result<Vec<PasskeyRow>, StoreError> {
    let sql = format!(
        "SELECT \"id\", \"user_id\", \"user_handle\", \"name\", \"credential\", \"counter\", \"created_at\", \"last_used_at\" FROM \"_ferrobase_passkeys\" WHERE \"{column}\" = ? ORDER BY \"created_at\", \"id\""
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![value], |r| {
        Ok(PasskeyRow {
            id: r.get(0)?,
            user_id: r.get(1)?,
            user_handle: r.get(2)?,
            name: r.get(3)?,
            credential: r.get(4)?,
            counter: r.get(5)?,
            created_at: r.get(6)?,
            last_used_at: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn use_passkey(
    conn: &Connection,
    id: &str,
    credential: &str,
    counter: i64,
    now: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE \"_ferrobase_passkeys\" SET \"credential\" = ?, \"counter\" = ?2, \"last_used_at\" = ? WHERE \"id\" = ? AND (\"counter\" < ?2 OR (\"counter\" = 0 AND ?2 = 0))",
        )?
        .execute(params![credential, counter, now, id])?
        > 0)
}

pub(crate) fn delete_passkey(
    conn: &Connection,
    user_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM \"_ferrobase_passkeys\" WHERE \"user_id\" = ? AND \"id\" = ?")?
        .execute(params![user_id, id])?
        > 0)
}
