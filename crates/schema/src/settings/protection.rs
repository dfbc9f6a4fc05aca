//! Settings of the protection layer: rate limits, HTTP and server-side caching, CORS and
//! metrics (SPEC §7, §11).

use std::time::Duration;

use super::{Loader, parse_duration, positive};

/// Counting algorithm of the rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAlgorithm {
    /// Counts per fixed window.
    FixedWindow,
    /// Weighs the previous window by how much of it still overlaps (smooth at edges).
    SlidingWindow,
    /// A bucket refilled at a steady rate (allows bursts up to its size).
    TokenBucket,
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStore {
    /// Redis when configured, otherwise memory.
    Auto,
    /// This node's memory (limits are per node).
    Memory,
    /// Redis (limits hold across nodes); requires `[redis] url`.
    Redis,
}

/// `requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests admitted per window (the token bucket's size).
    pub requests: u32,
    /// Length of the window (the time the bucket takes to refill).
    pub window: Duration,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.requests, self.window.as_secs())
    }
}

/// A limit for a class of routes: a resource, a method, or a resource and a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    /// The resource it applies to (`None`: every resource).
    pub resource: Option<String>,
    /// The method it applies to (`None`: every method).
    pub method: Option<String>,
    /// The limit.
    pub limit: Limit,
}

/// `[rate_limit]` settings.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Whether requests are rate limited.
    pub enabled: bool,
    /// The counting algorithm.
    pub algorithm: RateAlgorithm,
    /// Where counters live.
    pub store: LimitStore,
    /// Each client's limit on the API (client: signed-in user, API key or address).
    pub default: Limit,
    /// Each address's limit on `/api/v1/auth/*` (stricter: credentials are guessed there).
    pub auth: Limit,
    /// Limits for particular resources and methods, most specific first when matched.
    pub routes: Vec<RouteLimit>,
}

impl RateLimitSettings {
    /// The limit for `method` on `resource` (`None` for routes outside the record API),
    /// and a name for its counter: the most specific of `resource:METHOD`, `resource`,
    /// `METHOD`, then the default.
    pub fn limit_for(&self, resource: Option<&str>, method: &str) -> (Limit, usize) {
        let score = |r: &RouteLimit| -> Option<u8> {
            let res_ok = match (&r.resource, resource) {
                (None, _) => Some(0),
                (Some(want), Some(have)) if want == have => Some(2),
                _ => None,
            }?;
            let method_ok = match &r.method {
                None => Some(0),
                Some(m) if m.eq_ignore_ascii_case(method) => Some(1),
                _ => None,
            }?;
            Some(res_ok + method_ok)
        };
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| score(r).map(|s| (s, i)))
            .max_by_key(|(s, i)| (*s, std::cmp::Reverse(*i)))
            .map_or((self.default, 0), |(_, i)| (self.routes[i].limit, i + 1))
    }
}

/// `[cache]` settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `Cache-Control: public, max-age` of reads anyone may make (zero: `public, no-cache`).
    pub public_max_age: Duration,
    /// The same per resource (`"notes=5m"`), overriding `public_max_age`.
    pub resource_max_age: Vec<(String, Duration)>,
    /// The server-side cache of public reads.
    pub server: ServerCache,
    /// Longest a server-side entry lives (writes invalidate it sooner).
    pub server_ttl: Duration,
    /// Most entries the memory cache keeps.
    pub server_capacity: usize,
}

/// Where the server-side read cache lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCache {
    /// No server-side cache.
    Off,
    /// This node's memory (single-node deployments).
    Memory,
    /// Redis, shared and invalidated across nodes; requires `[redis] url`.
    Redis,
}

/// `[cors]` settings.
#[derive(Debug, Clone)]
pub struct CorsSettings {
    /// Origins allowed to call the API from a browser.
    pub allowed_origins: Vec<String>,
    /// Whether browsers may send cookies and credentials cross-origin.
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    pub max_age: Duration,
}

/// `[metrics]` settings.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Whether `/metrics` is served.
    pub enabled: bool,
    /// A bearer token `/metrics` requires, when set.
    pub token: Option<super::Secret>,
    /// A separate listen address for `/metrics` (then it is not on the main port).
    pub addr: Option<std::net::SocketAddr>,
}

/// Parses `"100/1m"`: requests per window.
pub fn parse_limit(s: &str) -> Result<Limit, String> {
    let bad = || format!("'{s}' is not a limit; write it like 100/1m (requests per window)");
    let (n, window) = s.trim().split_once('/').ok_or_else(bad)?;
    let requests = n
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(bad)?;
    let window = positive(parse_duration(window).map_err(|_| bad())?)?;
    if window < Duration::from_secs(1) {
        return Err(format!("'{s}': the window must be at least 1s"));
    }
    Ok(Limit { requests, window })
}

/// Parses a route limit: `"posts=100/1m"`, `"posts:POST=10/1m"` or `"POST=200/1m"`.
fn parse_route_limit(s: &str) -> Result<RouteLimit, String> {
    let (target, limit) = s.split_once('=').ok_or_else(|| {
        format!("'{s}' must look like posts=100/1m, posts:POST=10/1m or POST=200/1m")
    })?;
    let limit = parse_limit(limit)?;
    let methods = ["GET", "POST", "PATCH", "DELETE"];
    let is_method = |m: &str| methods.contains(&m);
    let target = target.trim();
    let (resource, method) = match target.split_once(':') {
        Some((r, m)) if is_method(m) && !r.is_empty() => (Some(r.to_owned()), Some(m.to_owned())),
        Some(_) => {
            return Err(format!(
                "'{target}': write RESOURCE:METHOD with one of {}",
                methods.join(", ")
            ));
        }
        None if is_method(target) => (None, Some(target.to_owned())),
        None if !target.is_empty() => (Some(target.to_owned()), None),
        None => return Err(format!("'{s}' names no resource or method")),
    };
    Ok(RouteLimit {
        resource,
        method,
        limit,
    })
}

fn limit_default(requests: u32, secs: u64) -> Limit {
    Limit {
        requests,
        window: Duration::from_secs(secs),
    }
}

impl Loader<'_> {
    pub(super) fn rate_limit(&mut self, has_redis: bool) -> RateLimitSettings {
        let settings = RateLimitSettings {
            enabled: self.get("rate_limit", "enabled", true, |v| v.bool()),
            algorithm: self.get(
                "rate_limit",
                "algorithm",
                RateAlgorithm::SlidingWindow,
                |v| match v.string()?.as_str() {
                    "fixed_window" => Ok(RateAlgorithm::FixedWindow),
                    "sliding_window" => Ok(RateAlgorithm::SlidingWindow),
                    "token_bucket" => Ok(RateAlgorithm::TokenBucket),
                    _ => Err("must be fixed_window, sliding_window or token_bucket".into()),
                },
            ),
            store: self.get("rate_limit", "store", LimitStore::Auto, |v| {
                match v.string()?.as_str() {
                    "auto" => Ok(LimitStore::Auto),
                    "memory" => Ok(LimitStore::Memory),
                    "redis" => Ok(LimitStore::Redis),
                    _ => Err("must be auto, memory or redis".into()),
                }
            }),
            default: self.get("rate_limit", "default", limit_default(600, 60), |v| {
                parse_limit(&v.string()?)
            }),
            auth: self.get("rate_limit", "auth", limit_default(60, 60), |v| {
                parse_limit(&v.string()?)
            }),
            routes: self.get("rate_limit", "routes", Vec::new(), |v| {
                v.list()?.iter().map(|s| parse_route_limit(s)).collect()
            }),
        };
        if settings.store == LimitStore::Redis && !has_redis {
            self.problem(
                "rate_limit",
                "store",
                "\"redis\" needs [redis] url (or REDIS_URL)",
            );
        }
        settings
    }

    pub(super) fn cache(&mut self, has_redis: bool) -> CacheSettings {
        let settings = CacheSettings {
            public_max_age: self.get("cache", "public_max_age", Duration::ZERO, |v| {
                parse_duration(&v.string()?)
            }),
            resource_max_age: self.get("cache", "resource_max_age", Vec::new(), |v| {
                v.list()?
                    .iter()
                    .map(|item| {
                        let (name, age) = item.split_once('=').ok_or_else(|| {
                            format!("'{item}' must look like notes=5m (resource=max-age)")
                        })?;
                        Ok((name.trim().to_owned(), parse_duration(age)?))
                    })
                    .collect()
            }),
            server: self.get("cache", "server", ServerCache::Off, |v| {
                match v.string()?.as_str() {
                    "off" => Ok(ServerCache::Off),
                    "memory" => Ok(ServerCache::Memory),
                    "redis" => Ok(ServerCache::Redis),
                    _ => Err("must be off, memory or redis".into()),
                }
            }),
            server_ttl: self.get("cache", "server_ttl", Duration::from_secs(300), |v| {
                positive(parse_duration(&v.string()?)?)
            }),
            server_capacity: self.get("cache", "server_capacity", 10_000, |v| {
                usize::try_from(v.integer()?)
                    .ok()
                    .filter(|n| (1..=10_000_000).contains(n))
                    .ok_or_else(|| "must be between 1 and 10000000".into())
            }),
        };
        if settings.server == ServerCache::Redis && !has_redis {
            self.problem(
                "cache",
                "server",
                "\"redis\" needs [redis] url (or REDIS_URL)",
            );
        }
        settings
    }

    pub(super) fn cors(&mut self) -> CorsSettings {
        let settings = CorsSettings {
            allowed_origins: self.get("cors", "allowed_origins", Vec::new(), |v| {
                let origins = v.list()?;
                for o in &origins {
                    let plain = o == "*"
                        || ((o.starts_with("https://") || o.starts_with("http://"))
                            && !o.ends_with('/')
                            && o.bytes().all(|b| b.is_ascii_graphic()));
                    if !plain {
                        return Err(format!(
                            "'{o}' is not an origin; write scheme://host[:port], like https://app.example.com"
                        ));
                    }
                }
                Ok(origins)
            }),
            allow_credentials: self.get("cors", "allow_credentials", false, |v| v.bool()),
            max_age: self.get("cors", "max_age", Duration::from_secs(600), |v| {
                parse_duration(&v.string()?)
            }),
        };
        if settings.allow_credentials && settings.allowed_origins.iter().any(|o| o == "*") {
            self.problem(
                "cors",
                "allowed_origins",
                "'*' cannot be combined with allow_credentials = true; list the origins",
            );
        }
        settings
    }

    pub(super) fn metrics(&mut self) -> MetricsSettings {
        MetricsSettings {
            enabled: self.get("metrics", "enabled", true, |v| v.bool()),
            token: self.get("metrics", "token", None, |v| {
                let token = v.string()?;
                match token.len() {
                    0 => Ok(None),
                    1..16 => Err("must be at least 16 characters (or empty for none)".into()),
                    _ => Ok(Some(super::Secret::new(token))),
                }
            }),
            addr: self.get("metrics", "addr", None, |v| {
                let addr = v.string()?;
                if addr.is_empty() {
                    return Ok(None);
                }
                addr.parse()
                    .map(Some)
                    .map_err(|_| "must be host:port, such as 127.0.0.1:9100".into())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_explain_mistakes() {
        assert_eq!(parse_limit("100/1m"), Ok(limit_default(100, 60)));
        assert_eq!(parse_limit(" 5 / 10s "), Ok(limit_default(5, 10)));
        assert!(parse_limit("100").is_err());
        assert!(parse_limit("0/1m").is_err());
        assert!(parse_limit("10/soon").is_err());
        assert!(parse_limit("10/10ms").is_err());
        let r = parse_route_limit("posts:POST=10/1m").expect("valid");
        assert_eq!(
            (r.resource.as_deref(), r.method.as_deref()),
            (Some("posts"), Some("POST"))
        );
        assert!(parse_route_limit("posts:FETCH=10/1m").is_err());
        assert!(parse_route_limit("=10/1m").is_err());
    }

    #[test]
    fn the_most_specific_route_limit_wins() {
        let settings = RateLimitSettings {
            enabled: true,
            algorithm: RateAlgorithm::FixedWindow,
            store: LimitStore::Memory,
            default: limit_default(600, 60),
            auth: limit_default(60, 60),
            routes: ["POST=100/1m", "posts=50/1m", "posts:POST=5/1m"]
                .iter()
                .map(|s| parse_route_limit(s).expect("valid"))
                .collect(),
        };
        assert_eq!(settings.limit_for(Some("posts"), "POST").0.requests, 5);
        assert_eq!(settings.limit_for(Some("posts"), "GET").0.requests, 50);
        assert_eq!(settings.limit_for(Some("notes"), "POST").0.requests, 100);
        assert_eq!(settings.limit_for(Some("notes"), "GET").0.requests, 600);
        assert_eq!(settings.limit_for(None, "GET"), (limit_default(600, 60), 0));
        assert_ne!(
            settings.limit_for(Some("posts"), "POST").1,
            settings.limit_for(Some("posts"), "GET").1,
            "separate counters"
        );
    }
}
