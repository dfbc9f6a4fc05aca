//! `write_integrity.rs` on PostgreSQL: the same test bodies, another store.

use ferrobase_testkit::Backend;

fn backend() -> Backend {
    Backend::Postgres
}

#[path = "write_integrity.rs"]
mod cases;
