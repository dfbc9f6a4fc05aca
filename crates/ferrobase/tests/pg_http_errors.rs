//! `http_errors.rs` on PostgreSQL: the same test bodies, another store.

use ferrobase_testkit::Backend;

fn backend() -> Backend {
    Backend::Postgres
}

#[path = "http_errors.rs"]
mod cases;
