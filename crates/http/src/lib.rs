//! The HTTP face of ferrobase: routes, extractors, the request boundary and the error
//! shape. The only crate (with GraphQL later) that knows about axum.

mod auth;
mod boundary;
pub mod error;
mod extract;
pub mod identity;
mod ops;
pub mod policy;
mod records;
pub mod redact;
mod router;
mod state;

pub use boundary::RequestId;
pub use error::ApiError;
pub use router::router;
pub use state::{App, AppState, Clock, SystemClock};
