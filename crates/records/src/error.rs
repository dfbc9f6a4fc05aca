//! What the record service can answer instead of a record.

use std::collections::BTreeMap;

use ferrobase_access::Refusal;
use ferrobase_store::StoreError;

/// Why a record operation did not happen. Transports map each variant to their own
/// answer (REST: see the status on each variant).
#[derive(Debug)]
pub enum RecordError {
    /// No resource has this name (404 `NOT_FOUND`).
    UnknownResource(String),
    /// No record the caller may see has this id in `resource` (404 `NOT_FOUND`; never
    /// says whether it exists).
    NotFound {
        /// The resource's name.
        resource: String,
    },
    /// The rules refuse the caller (401 `UNAUTHORIZED` or 403 `FORBIDDEN`).
    Refused(Refusal),
    /// The body or the parameters do not validate (400 `VALIDATION_FAILED`), per field.
    Invalid(BTreeMap<String, Vec<String>>),
    /// A filter expression is malformed or names what the caller may not use (400
    /// `INVALID_FILTER`).
    InvalidFilter {
        /// What is wrong, with the position.
        message: String,
        /// Where in the expression (characters), when known.
        position: Option<usize>,
        /// A suggestion.
        hint: Option<String>,
        /// The names a filter may use.
        allowed: Vec<String>,
    },
    /// The store refused or failed: conflicts, stale preconditions, broken relations,
    /// unavailability (mapped by the store's own mapping).
    Store(StoreError),
}

impl From<Refusal> for RecordError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<StoreError> for RecordError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownResource(name) => write!(f, "unknown resource '{name}'"),
            Self::NotFound { resource } => write!(f, "no such record in {resource}"),
            Self::Refused(Refusal::Unauthorized) => f.write_str("authentication is required"),
            Self::Refused(Refusal::Forbidden(why)) => f.write_str(
                why.as_deref()
                    .unwrap_or("the access rules do not allow this"),
            ),
            Self::Invalid(fields) => write!(f, "{} fields are invalid", fields.len()),
            Self::InvalidFilter { message, .. } => f.write_str(message),
            Self::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RecordError {}
