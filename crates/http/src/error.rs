//! The one error shape of the API (SPEC §5), and the boundary that renders it.
//!
//! Handlers return [`ApiError`]. Turning it into a response only records the error; the
//! request boundary renders the body, because only the boundary knows the request id.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferrobase_store::StoreError;
use serde::Serialize;

/// A failure as the client sees it: a status, a stable code, a message, optional details.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (SPEC §5).
    pub code: &'static str,
    /// Human-readable explanation, safe to show.
    pub message: String,
    /// Structured details, such as per-field messages.
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// 400 `BAD_REQUEST`: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// 400 `VALIDATION_FAILED` with messages per field (or query parameter).
    pub fn validation(fields: BTreeMap<String, Vec<String>>) -> Self {
        let n = fields.len();
        let message = if n == 1 {
            "1 field is invalid".to_owned()
        } else {
            format!("{n} fields are invalid")
        };
        Self {
            details: Some(serde_json::json!({ "fields": fields })),
            ..Self::new(StatusCode::BAD_REQUEST, "VALIDATION_FAILED", message)
        }
    }

    /// 401 `UNAUTHORIZED`: credentials are missing or not accepted.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication is required",
        )
    }

    /// 403 `FORBIDDEN`: the caller is known but the rule refuses.
    pub fn forbidden() -> Self {
        Self::forbidden_with("the access rules do not allow this")
    }

    /// 403 `FORBIDDEN` with a specific message.
    pub fn forbidden_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 500 `INTERNAL`: the detail is logged, never sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "an internal error occurred",
        )
    }

    /// 503 `UNAVAILABLE`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
    }
}

/// The record service's answers: 404 for an unknown resource or a record the caller may
/// not see, 401/403 for refusals, 400 for invalid bodies, and the store's own mapping.
impl From<ferrobase_records::RecordError> for ApiError {
    fn from(error: ferrobase_records::RecordError) -> Self {
        use ferrobase_records::RecordError;
        match error {
            RecordError::UnknownResource(name) => {
                Self::not_found(format!("unknown resource '{name}'"))
            }
            RecordError::NotFound { resource } => {
                Self::not_found(format!("no such record in {resource}"))
            }
            RecordError::Refused(refusal) => refusal.into(),
            RecordError::Invalid(fields) => Self::validation(fields),
            RecordError::InvalidFilter {
                message,
                position,
                hint,
                allowed,
            } => {
                let mut e = Self::new(StatusCode::BAD_REQUEST, "INVALID_FILTER", message);
                if position.is_some() || !allowed.is_empty() {
                    e.details = Some(serde_json::json!({
                        "position": position,
                        "hint": hint,
                        "allowed": allowed,
                    }));
                }
                e
            }
            RecordError::Store(e) => e.into(),
        }
    }
}

/// Refusals of the rules: 401 without a caller, 403 with one.
impl From<ferrobase_access::Refusal> for ApiError {
    fn from(refusal: ferrobase_access::Refusal) -> Self {
        match refusal {
            ferrobase_access::Refusal::Unauthorized => Self::unauthorized(),
            ferrobase_access::Refusal::Forbidden(None) => Self::forbidden(),
            ferrobase_access::Refusal::Forbidden(Some(why)) => Self::forbidden_with(why),
        }
    }
}

impl From<StoreError> for ApiError {
    /// Explicit mapping of every store failure; new variants must be added here.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unique { fields } => {
                let details: BTreeMap<String, Vec<String>> = fields
                    .iter()
                    .map(|f| (f.clone(), vec!["is already taken".to_owned()]))
                    .collect();
                Self {
                    details: Some(serde_json::json!({ "fields": details })),
                    ..Self::new(
                        StatusCode::CONFLICT,
                        "CONFLICT",
                        format!(
                            "a record with the same {} already exists",
                            fields.join(", ")
                        ),
                    )
                }
            }
            StoreError::BrokenRelation { fields } if fields.is_empty() => {
                Self::bad_request("a relation points at a record that does not exist")
            }
            StoreError::BrokenRelation { fields } => Self::validation(fields),
            StoreError::Referenced => Self::new(
                StatusCode::CONFLICT,
                "CONFLICT",
                "the record is still referenced by other records",
            ),
            StoreError::Forbidden => Self::forbidden(),
            StoreError::NotFound => Self::not_found("no such record"),
            StoreError::Rejected(refusal) => {
                if let Some(refusal) = refusal.downcast_ref::<ferrobase_access::Refusal>() {
                    refusal.clone().into()
                } else if let Some(e) = refusal.downcast_ref::<ApiError>() {
                    e.clone()
                } else {
                    Self::internal("a write guard refused with an unknown error")
                }
            }
            StoreError::CascadeTooDeep => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE",
                "deleting this record would cascade through more than 1000 levels of related records; delete the deepest ones first",
            ),
            StoreError::InvalidText => Self::bad_request("text may not contain NUL characters"),
            StoreError::BadCursor => Self::validation(
                [(
                    "cursor".to_owned(),
                    vec!["does not fit this list".to_owned()],
                )]
                .into(),
            ),
            StoreError::VersionMismatch => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION_FAILED",
                "the record has changed since the version you sent",
            ),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                Self::unavailable("the database is unavailable; try again shortly")
            }
            StoreError::FileGone(path) => {
                tracing::error!(path = %path, "the database file is gone; refusing writes");
                Self::unavailable(
                    "the database file was removed while the server runs; nothing was written, and writes are refused until the server restarts",
                )
            }
            StoreError::Config(detail) | StoreError::Internal(detail) => Self::internal(detail),
        }
    }
}

/// Marker left in a response's extensions for the boundary to render.
#[derive(Debug, Clone)]
pub(crate) struct PendingError(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res.extensions_mut().insert(PendingError(self));
        res
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
    request_id: &'a str,
}

/// The JSON body of an error response.
pub(crate) fn render(error: &ApiError, request_id: &str) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorFields {
            code: error.code,
            message: &error.message,
            details: error.details.as_ref(),
            request_id,
        },
    };
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}
