//! The caller as rules see it: who, in which role, through which credential.

use serde_json::{Map, Value};

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Via {
    /// `Authorization: Bearer <access token>`.
    Bearer,
    /// A session cookie; its id keys the CSRF token.
    Cookie {
        /// The session's id.
        session_id: String,
    },
    /// `Authorization: Bearer fbk_...`, limited to its scopes.
    ApiKey {
        /// Key id.
        id: String,
        /// `posts:read`, `posts:write`, `*`.
        scopes: Vec<String>,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// User id.
    pub id: String,
    /// Role (from the token, or the database for keys and sessions).
    pub role: String,
    /// The user's record, when loaded (API keys and sessions load it; tokens do not).
    pub user: Option<Map<String, Value>>,
    /// The credential used.
    pub via: Via,
}

impl Caller {
    /// Whether the credential may perform a read or a write on `resource`.
    pub fn scope_allows(&self, resource: &str, write: bool) -> bool {
        match &self.via {
            Via::ApiKey { scopes, .. } => scopes.iter().any(|s| {
                s == "*" || *s == format!("{resource}:{}", if write { "write" } else { "read" })
            }),
            _ => true,
        }
    }
}

/// The request's identity, set by [`authenticate`] for every API request.
#[derive(Debug, Clone, Default)]
pub struct Identity(pub Option<Caller>);

impl Identity {
    /// The caller, unless anonymous.
    pub fn caller(&self) -> Option<&Caller> {
        self.0.as_ref()
    }
}
