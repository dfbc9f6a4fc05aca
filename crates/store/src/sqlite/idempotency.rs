//! Idempotency keys on SQLite: claimed, completed or released in writer transactions.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Claim, IdempotencyClaim, StoreError, StoredResponse};

/// `(request hash, abandoned, status, headers, body)` of a stored key.
type Row = (String, bool, Option<u16>, Option<String>, Option<Vec<u8>>);

pub(crate) fn claim(conn: &Connection, c: &IdempotencyClaim) -> Result<Claim, StoreError> {
    conn.prepare_cached("DELETE FROM \"_ferrobase_idempotency\" WHERE \"created_at\" < ?")?
        .execute([&c.expired_before])?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO \"_ferrobase_idempotency\" (\"key\", \"request_hash\", \"created_at\") VALUES (?, ?, ?) ON CONFLICT (\"key\") DO NOTHING",
        )?
        .execute(params![c.key, c.request_hash, c.now])?;
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT \"request_hash\", \"created_at\" < ?, \"status\", \"headers\", \"body\" FROM \"_ferrobase_idempotency\" WHERE \"key\" = ?",
        )?
        .query_row(params![c.abandoned_before, c.key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some(row) = row else {
        return Ok(Claim::InFlight);
    };
    let outcome = crate::common::judge_claim(&c.request_hash, row);
    if outcome == Claim::Fresh {
        conn.prepare_cached(
            "UPDATE \"_ferrobase_idempotency\" SET \"created_at\" = ? WHERE \"key\" = ?",
        )?
        .execute(params![c.now, c.key])?;
    }
    Ok(outcome)
}

pub(crate) fn complete(
    conn: &Connection,
    key: &str,
    response: &StoredResponse,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE \"_ferrobase_idempotency\" SET \"status\" = ?, \"headers\" = ?, \"body\" = ? WHERE \"key\" = ?",
    )?
    .execute(params![
        response.status,
        response.headers,
        response.body,
        key
    ])?;
    Ok(())
}

pub(crate) fn release(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM \"_ferrobase_idempotency\" WHERE \"key\" = ? AND \"status\" IS NULL",
    )?
    .execute([key])?;
    Ok(())
}
