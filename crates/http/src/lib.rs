//! The HTTP face of ferrobase: routes, extractors, the request boundary and the error
//! shape. The only crate (with GraphQL later) that knows about axum.

mod boundary;
pub mod error;
mod extract;
mod ops;
mod records;
pub mod redact;
mod router;
mod state;

pub use boundary::RequestId;
pub use error::ApiError;
pub use router::router;
pub use state::{App, AppState, Clock, SystemClock};
