//! What can go wrong in the store, in terms the HTTP boundary maps to status codes.

use std::collections::BTreeMap;

/// A store failure. Each variant says which response it becomes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint would be violated (409 `CONFLICT`); the fields involved.
    #[error("a record with the same {} already exists", .fields.join(", "))]
    Unique {
        /// Fields of the violated constraint.
        fields: Vec<String>,
    },
    /// Relation values point at records that do not exist (400 `VALIDATION_FAILED`).
    #[error("relations point at records that do not exist")]
    BrokenRelation {
        /// Messages per field.
        fields: BTreeMap<String, Vec<String>>,
    },
    /// The record is still referenced by others that restrict its deletion (409 `CONFLICT`).
    #[error("the record is still referenced by other records")]
    Referenced,
    /// Deleting would cascade through more levels than SQLite follows (422 `UNPROCESSABLE`).
    #[error("the delete cascades too deep")]
    CascadeTooDeep,
    /// Text the database cannot store, such as NUL characters (400 `VALIDATION_FAILED`).
    #[error("text contains characters that cannot be stored")]
    InvalidText,
    /// A cursor's values do not fit the sort they claim (400 `VALIDATION_FAILED`).
    #[error("the cursor does not fit this list")]
    BadCursor,
    /// The rule does not allow the caller this write (403 `FORBIDDEN`).
    #[error("the rule does not allow this")]
    Forbidden,
    /// A write in a batch names a record that does not exist for the caller (404
    /// `NOT_FOUND`); single writes answer `None`/`false` instead.
    #[error("no such record")]
    NotFound,
    /// The caller's own check (a [`crate::WriteGuard`]) refused the write; the refusal is
    /// carried back unchanged for the caller to render.
    #[error("the write was refused by its guard")]
    Rejected(std::sync::Arc<dyn std::any::Any + Send + Sync>),
    /// The stored version differs from the expected one (412 `PRECONDITION_FAILED`).
    #[error("the record has changed since it was read")]
    VersionMismatch,
    /// The database is unreachable, busy or out of space (503 `UNAVAILABLE`).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The SQLite file was deleted or replaced under the running server: writes would
    /// land in a file nobody opens again, so they are refused until a restart (503
    /// `UNAVAILABLE`, and `/ready` says 503).
    #[error("the database file {0} was deleted or replaced while the server runs")]
    FileGone(String),
    /// The database does not match the schema, or cannot be opened as configured
    /// (start-up failure).
    #[error("{0}")]
    Config(String),
    /// Anything else (500 `INTERNAL`; the detail is logged, never sent).
    #[error("internal store error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, msg) => match f.code {
                ErrorCode::ConstraintViolation if matches!(f.extended_code, 2067 | 1555) => {
                    let fields = msg
                        .as_deref()
                        .and_then(|m| m.split_once(": "))
                        .map(|(_, cols)| {
                            cols.split(", ")
                                .filter_map(|c| c.rsplit_once('.').map(|(_, col)| col.to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    Self::Unique { fields }
                }
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::ReadOnly => Self::Unavailable(e.to_string()),
                _ if msg
                    .as_deref()
                    .is_some_and(|m| m.contains("triggers nested too deep")) =>
                {
                    Self::CascadeTooDeep
                }
                _ => Self::Internal(e.to_string()),
            },
            _ => Self::Internal(e.to_string()),
        }
    }
}

/// The field and message of a foreign key's refusal, from its detail
/// (`Key (author)=(01…) is not present in table "users".`), worded as the store's own
/// relation checks word it.
fn missing_target(detail: &str) -> Option<(String, Vec<String>)> {
    let (column, rest) = detail.strip_prefix("Key (")?.split_once(")=(")?;
    let (id, rest) = rest.split_once(") is not present in table ")?;
    let table = rest.trim_end_matches('.').trim_matches('"');
    Some((
        column.trim_matches('"').to_owned(),
        vec![format!("no {table} record has id {id}")],
    ))
}

/// Columns named in PostgreSQL's "Key (a, b)=(...) already exists." detail.
fn key_columns(detail: &str) -> Vec<String> {
    detail
        .strip_prefix("Key (")
        .and_then(|rest| rest.split_once(")=("))
        .map(|(cols, _)| {
            cols.split(", ")
                .map(|c| {
                    // `lower(email)` names the column `email`.
                    c.rsplit_once('(')
                        .map_or(c, |(_, inner)| inner.trim_end_matches(')'))
                        .trim_matches('"')
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            // No answer from the server: the connection is gone or broken.
            return Self::Unavailable(e.to_string());
        };
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION {
            Self::Unique {
                fields: key_columns(db.detail().unwrap_or_default()),
            }
        } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
            if db.message().contains("update or delete") {
                Self::Referenced
            } else {
                Self::BrokenRelation {
                    fields: missing_target(db.detail().unwrap_or_default())
                        .into_iter()
                        .collect(),
                }
            }
        } else if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER
        {
            Self::InvalidText
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || code.code().starts_with("08")
        {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        // Whatever stops us getting a connection (refused, not accepting connections,
        // timed out), the database is unavailable to us.
        Self::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_columns_from_details() {
        assert_eq!(
            key_columns("Key (slug)=(hello) already exists."),
            vec!["slug"]
        );
        assert_eq!(
            key_columns("Key (title, kind)=(a, b) already exists."),
            vec!["title", "kind"]
        );
        assert_eq!(
            key_columns("Key (lower(email))=(a@b.c) already exists."),
            vec!["email"]
        );
        assert!(key_columns("nonsense").is_empty());
    }

    #[test]
    fn missing_targets_from_details() {
        assert_eq!(
            missing_target(
                "Key (author)=(01900000-0000-7000-8000-000000000001) is not present in table \"users\"."
            ),
            Some((
                "author".to_owned(),
                vec!["no users record has id 01900000-0000-7000-8000-000000000001".to_owned()]
            ))
        );
        assert_eq!(missing_target("nonsense"), None);
    }
}
