//! The HTTP face of ferrobase: routes, extractors, the request boundary and the error
//! shape. The only crate (with GraphQL later) that knows about axum.

mod auth;
mod boundary;
mod cache;
pub mod error;
mod extract;
mod idempotency;
pub mod identity;
pub mod metrics;
mod ops;
pub mod policy;
pub mod ratelimit;
mod records;
pub mod redact;
mod router;
mod state;

pub use boundary::RequestId;
pub use error::ApiError;
pub use router::{metrics_router, router};
pub use state::{App, AppState, Clock, SystemClock};
