//! Discovery of the real PostgreSQL and Redis servers tests run against.
//!
//! `FERROBASE_TEST_DATABASE_URL` and `FERROBASE_TEST_REDIS_URL` name them (defaulting to
//! the local servers). When one cannot be reached the test is skipped loudly, unless
//! `FERROBASE_REQUIRE_SERVICES=1`, which turns that into a failure.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Default PostgreSQL URL for tests.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Default Redis URL for tests.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Whether missing services and tools fail tests (`FERROBASE_REQUIRE_SERVICES=1`).
pub fn required() -> bool {
    std::env::var("FERROBASE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// `host:port` of a `scheme://[user@]host[:port][/...]` URL.
fn host_port(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return None;
    }
    Some(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    })
}

fn reachable(url: &str, default_port: u16) -> bool {
    host_port(url, default_port)
        .and_then(|hp| hp.to_socket_addrs().ok())
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

fn discover(var: &str, default: &str, port: u16, what: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    if reachable(&url, port) {
        return Some(url);
    }
    let message = format!("{what} at {url} ({var}) is unreachable");
    assert!(!required(), "{message}, and FERROBASE_REQUIRE_SERVICES=1");
    eprintln!("SKIPPED: {message}; this test did not run");
    None
}

/// The PostgreSQL URL, or `None` (after a loud message) when it is unreachable.
pub fn postgres() -> Option<String> {
    discover(
        "FERROBASE_TEST_DATABASE_URL",
        DEFAULT_DATABASE_URL,
        5432,
        "PostgreSQL",
    )
}

/// The Redis URL, or `None` (after a loud message) when it is unreachable.
pub fn redis() -> Option<String> {
    discover("FERROBASE_TEST_REDIS_URL", DEFAULT_REDIS_URL, 6379, "Redis")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_from_urls() {
        assert_eq!(
            host_port("postgres://u:p@db.local/app", 5432).as_deref(),
            Some("db.local:5432")
        );
        assert_eq!(
            host_port("redis://127.0.0.1:6380/0", 6379).as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(host_port("nonsense", 1), None);
    }
}

#[cfg(test)]
mod discovery {
    use super::*;

    /// With `FERROBASE_REQUIRE_SERVICES=1` (as in CI) an unreachable server fails here;
    /// otherwise it is skipped loudly.
    #[test]
    fn configured_services_are_reachable_or_skipped_loudly() {
        if let Some(url) = postgres() {
            assert!(reachable(&url, 5432), "{url}");
        }
        if let Some(url) = redis() {
            assert!(reachable(&url, 6379), "{url}");
        }
    }
}

/// A database of its own for one test, on the test PostgreSQL server; dropped with it.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database, or `None` (after a loud message) when PostgreSQL
    /// is unreachable and not required.
    pub fn create() -> Option<Self> {
        let admin_url = postgres()?;
        let name = format!("fb_{}", uuid::Uuid::new_v4().simple());
        let mut client = postgres::Client::connect(&admin_url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}
