//! Sign-in tickets, linked provider accounts and passkeys on PostgreSQL.

use sea_query::Values;

use super::conn::Conn;
use crate::StoreError;
use crate::auth::{IdentityRow, PasskeyRow, Ticket};

fn v(items: &[Option<&str>]) -> Values {
    Values(items.iter().map(|s| s.map(str::to_owned).into()).collect())
}

fn uuid(row: &tokio_postgres::Row, i: usize) -> String {
    row.get::<_, uuid::Uuid>(i).hyphenated().to_string()
}

pub(crate) async fn put_ticket(conn: &impl Conn, t: &Ticket, now: &str) -> Result<(), StoreError> {
    conn.rows((
        "DELETE FROM \"_ferrobase_tickets\" WHERE \"expires_at\" <= $1".into(),
        v(&[Some(now)]),
    ))
    .await?;
    conn.rows((
        "INSERT INTO \"_ferrobase_tickets\" (\"kind\", \"id\", \"user_id\", \"payload\", \"expires_at\") VALUES ($1, $2, CAST($3 AS uuid), $4, $5)".into(),
        v(&[Some(&t.kind), Some(&t.id), t.user_id.as_deref(), Some(&t.payload), Some(&t.expires_at)]),
    ))
    .await?;
    Ok(())
}

pub(crate) async fn take_ticket(
    conn: &impl Conn,
    kind: &str,
    id: &str,
    now: &str,
) -> Result<Option<Ticket>, StoreError> {
    let rows = conn
        .rows((
            "DELETE FROM \"_ferrobase_tickets\" WHERE \"kind\" = $1 AND \"id\" = $2 RETURNING \"user_id\", \"payload\", \"expires_at\"".into(),
            v(&[Some(kind), Some(id)]),
        ))
        .await?;
    Ok(rows
        .first()
        .map(|r| Ticket {
            kind: kind.to_owned(),
            id: id.to_owned(),
            user_id: r
                .get::<_, Option<uuid::Uuid>>(0)
                .map(|u| u.hyphenated().to_string()),
            payload: r.get(1),
            expires_at: r.get(2),
        })
        .filter(|t| t.expires_at.as_str() > now))
}

pub(crate) async fn identity_user(
    conn: &impl Conn,
    provider: &str,
    subject: &str,
) -> Result<Option<String>, StoreError> {
    let rows = conn
        .rows((
            "SELECT \"user_id\" FROM \"_ferrobase_identities\" WHERE \"provider\" = $1 AND \"subject\" = $2".into(),
            v(&[Some(provider), Some(subject)]),
        ))
        .await?;
    Ok(rows.first().map(|r| uuid(r, 0)))
}

pub(crate) async fn link_identity(conn: &impl Conn, row: &IdentityRow) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "INSERT INTO \"_ferrobase_identities\" (\"provider\", \"subject\", \"user_id\", \"email\", \"created_at\") VALUES ($1, $2, CAST($3 AS uuid), $4, $5) ON CONFLICT DO NOTHING RETURNING 1".into(),
            v(&[
                Some(&row.provider),
                Some(&row.subject),
                Some(&row.user_id),
                row.email.as_deref(),
                Some(&row.created_at),
            ]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn identities(
    conn: &impl Conn,
    user_id: &str,
) -> Result<Vec<IdentityRow>, StoreError> {
    let rows = conn
        .rows((
            "SELECT \"provider\", \"subject\", \"email\", \"created_at\" FROM \"_ferrobase_identities\" WHERE \"user_id\" = CAST($1 AS uuid) ORDER BY \"created_at\", \"provider\"".into(),
            v(&[Some(user_id)]),
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|r| IdentityRow {
            provider: r.get(0),
            subject: r.get(1),
            user_id: user_id.to_owned(),
            email: r.get(2),
            created_at: r.get(3),
        })
        .collect())
}

pub(crate) async fn unlink_identity(
    conn: &impl Conn,
    user_id: &str,
    provider: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "DELETE FROM \"_ferrobase_identities\" WHERE \"user_id\" = CAST($1 AS uuid) AND \"provider\" = $2 RETURNING 1".into(),
            v(&[Some(user_id), Some(provider)]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn add_passkey(conn: &impl Conn, p: &PasskeyRow) -> Result<(), StoreError> {
    let counter = p.counter.to_string();
    conn.rows((
        "INSERT INTO \"_ferrobase_passkeys\" (\"id\", \"user_id\", \"user_handle\", \"name\", \"credential\", \"counter\", \"created_at\", \"last_used_at\") VALUES ($1, CAST($2 AS uuid), $3, $4, $5, CAST($6 AS bigint), $7, NULL)".into(),
        v(&[
            Some(&p.id),
            Some(&p.user_id),
            Some(&p.user_handle),
            Some(&p.name),
            Some(&p.credential),
            Some(&counter),
            Some(&p.created_at),
        ]),
    ))
    .await?;
    Ok(())
}

/// The passkeys whose `column` (`user_id` or `user_handle`) is `value`.
pub(crate) async fn passkeys(
    conn: &impl Conn,
    column: &'static str,
    value: &str,
) -> Result<Vec<PasskeyRow>, StoreError> {
    let cond = if column == "user_id" {
        "\"user_id\" = CAST($1 AS uuid)"
    } else {
        "\"user_handle\" = $1"
    };
    let rows = conn
        .rows((
            format!("SELECT \"id\", \"user_id\", \"user_handle\", \"name\", \"credential\", \"counter\", \"created_at\", \"last_used_at\" FROM \"_ferrobase_passkeys\" WHERE {cond} ORDER BY \"created_at\", \"id\""),
            v(&[Some(value)]),
        ))
        .await?;
    Ok(rows
        .iter()
        .map(|r| PasskeyRow {
            id: r.get(0),
            user_id: uuid(r, 1),
            user_handle: r.get(2),
            name: r.get(3),
            credential: r.get(4),
            counter: r.get(5),
            created_at: r.get(6),
            last_used_at: r.get(7),
        })
        .collect())
}

pub(crate) async fn use_passkey(
    conn: &impl Conn,
    id: &str,
    credential: &str,
    counter: i64,
    now: &str,
) -> Result<bool, StoreError> {
    let counter = counter.to_string();
    let rows = conn
        .rows((
            "UPDATE \"_ferrobase_passkeys\" SET \"credential\" = $1, \"counter\" = CAST($2 AS bigint), \"last_used_at\" = $3 WHERE \"id\" = $4 AND (\"counter\" < CAST($2 AS bigint) OR (\"counter\" = 0 AND CAST($2 AS bigint) = 0)) RETURNING 1".into(),
            v(&[Some(credential), Some(&counter), Some(now), Some(id)]),
        ))
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn delete_passkey(
    conn: &impl Conn,
    user_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let rows = conn
        .rows((
            "DELETE FROM \"_ferrobase_passkeys\" WHERE \"user_id\" = CAST($1 AS uuid) AND \"id\" = $2 RETURNING 1".into(),
            v(&[Some(user_id), Some(id)]),
        ))
        .await?;
    Ok(!rows.is_empty())
}
