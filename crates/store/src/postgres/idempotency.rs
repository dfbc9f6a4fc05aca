//! Idempotency keys on PostgreSQL: the claim is an `INSERT ... ON CONFLICT DO NOTHING`,
//! so two nodes racing for one key serialise on it and only one runs the request.

use sea_query::{Value as SqlValue, Values};

use super::conn::Conn;
use crate::{Claim, IdempotencyClaim, StoreError, StoredResponse};

fn text(items: &[&str]) -> Values {
    Values(items.iter().map(|s| (*s).to_owned().into()).collect())
}

pub(crate) async fn claim(conn: &impl Conn, c: &IdempotencyClaim) -> Result<Claim, StoreError> {
    conn.rows((
        "DELETE FROM \"_ferrobase_idempotency\" WHERE \"created_at\" < CAST($1 AS timestamptz)"
            .into(),
        text(&[&c.expired_before]),
    ))
    .await?;
    let inserted = conn
        .rows((
            "INSERT INTO \"_ferrobase_idempotency\" (\"key\", \"request_hash\", \"created_at\") VALUES ($1, $2, CAST($3 AS timestamptz)) ON CONFLICT (\"key\") DO NOTHING RETURNING \"key\"".into(),
            text(&[&c.key, &c.request_hash, &c.now]),
        ))
        .await?;
    if !inserted.is_empty() {
        return Ok(Claim::Fresh);
    }
    let rows = conn
        .rows((
            "SELECT \"request_hash\", \"created_at\" < CAST($2 AS timestamptz), \"status\", \"headers\", \"body\" FROM \"_ferrobase_idempotency\" WHERE \"key\" = $1 FOR UPDATE".into(),
            text(&[&c.key, &c.abandoned_before]),
        ))
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Claim::InFlight);
    };
    let status: Option<i32> = row.get(2);
    let outcome = crate::common::judge_claim(
        &c.request_hash,
        (
            row.get(0),
            row.get(1),
            status.and_then(|s| u16::try_from(s).ok()),
            row.get(3),
            row.get(4),
        ),
    );
    if outcome == Claim::Fresh {
        conn.rows((
            "UPDATE \"_ferrobase_idempotency\" SET \"created_at\" = CAST($1 AS timestamptz) WHERE \"key\" = $2".into(),
            text(&[&c.now, &c.key]),
        ))
        .await?;
    }
    Ok(outcome)
}

pub(crate) async fn complete(
    conn: &impl Conn,
    key: &str,
    response: StoredResponse,
) -> Result<(), StoreError> {
    let values = Values(vec![
        SqlValue::BigInt(Some(i64::from(response.status))),
        response.headers.into(),
        SqlValue::Bytes(Some(response.body)),
        key.to_owned().into(),
    ]);
    conn.rows((
        "UPDATE \"_ferrobase_idempotency\" SET \"status\" = CAST($1 AS integer), \"headers\" = $2, \"body\" = $3 WHERE \"key\" = $4".into(),
        values,
    ))
    .await?;
    Ok(())
}

pub(crate) async fn release(conn: &impl Conn, key: &str) -> Result<(), StoreError> {
    conn.rows((
        "DELETE FROM \"_ferrobase_idempotency\" WHERE \"key\" = $1 AND \"status\" IS NULL".into(),
        text(&[key]),
    ))
    .await?;
    Ok(())
}
