//! `oauth.rs` on PostgreSQL: the same test bodies, another store.

use ferrobase_testkit::Backend;

fn backend() -> Backend {
    Backend::Postgres
}

#[path = "oauth.rs"]
mod cases;
