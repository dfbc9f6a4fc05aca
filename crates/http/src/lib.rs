//! The HTTP face of ferrobase: routes, extractors, the request boundary and the error
//! shape. The only crate that knows about axum.
#![forbid(unsafe_code)]

mod auth;
mod boundary;
mod cache;
mod docs;
pub mod error;
mod extract;
mod graphql;
mod graphql_page;
mod idempotency;
pub mod identity;
mod jobs;
pub mod metrics;
mod ops;

pub mod ratelimit;
mod realtime;
mod records;
pub mod redact;
mod router;
mod state;
pub mod wire;

pub use boundary::{LoggedOperation, RequestId};
pub use error::ApiError;
pub use router::{metrics_router, router};
pub use state::{App, AppState, Clock, SystemClock, graphql_options};

/// The OpenAPI 3.1 document of a schema as this server serves it.
pub fn openapi_document(
    schema: &ferrobase_schema::Schema,
    settings: &ferrobase_schema::Settings,
) -> serde_json::Value {
    ferrobase_openapi::document(
        schema,
        &ferrobase_openapi::Options {
            cookie_name: identity::cookie_name(settings.auth.cookie_secure).to_owned(),
            metrics: settings.metrics.enabled && settings.metrics.addr.is_none(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            oauth_providers: settings.auth.oauth.iter().map(|p| p.name.clone()).collect(),
            passkeys: settings.auth.passkeys.is_some(),
        },
    )
}
