//! State that every node of a deployment must agree on. With `REDIS_URL` it lives in
//! Redis (one connection that reconnects by itself); without it, in this process's
//! memory. The login throttle uses it now; rate limits, caches and realtime fan-out
//! will use the same connection.
#![forbid(unsafe_code)]

pub mod cache;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrobase_auth::throttle::Throttle;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Longest one Redis call may take before it counts as failed: a Redis outage costs a
/// request at most this much, never the client's reconnect back-off (seconds).
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// How long calls fail at once after a failure before one call probes Redis again.
pub const OPEN_FOR: Duration = Duration::from_millis(1_000);

/// A circuit breaker shared by every user of one connection: after a failure, calls fail
/// at once for [`OPEN_FOR`], then one call at a time probes; a success closes it.
#[derive(Debug)]
struct Breaker {
    /// 0 while closed; else milliseconds since `epoch` until which calls fail at once.
    open_until: AtomicU64,
    /// Times Redis came back after an outage (users that missed writes react to it).
    recoveries: AtomicU64,
    /// Failed calls since the last success. One error alone (a connection the server
    /// dropped, which the client replaces at once) does not open the breaker; a second in
    /// a row, or a call that timed out, does.
    failures: AtomicU64,
    epoch: Instant,
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn open_for_ms() -> u64 {
        u64::try_from(OPEN_FOR.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go to Redis now (closed, or this caller won the probe).
    fn allow(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + Self::open_for_ms(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    fn succeeded(&self) {
        let was_open = self.open_until.swap(0, Ordering::AcqRel) != 0;
        // Any failure since the last success may have lost a write's effect (a cache
        // generation bump): a recovery, whether or not the breaker opened.
        if self.failures.swap(0, Ordering::AcqRel) != 0 {
            self.recoveries.fetch_add(1, Ordering::AcqRel);
            if was_open {
                tracing::info!("Redis answers again");
            }
        }
    }

    fn failed(&self, what: &str, error: &str, timed_out: bool) {
        let before = self.failures.fetch_add(1, Ordering::AcqRel);
        if before == 0 && !timed_out {
            return;
        }
        let until = (self.now_ms() + Self::open_for_ms()).max(1);
        if self.open_until.swap(until, Ordering::AcqRel) == 0 {
            tracing::warn!(%error, call = what, "Redis unavailable; falling back until it answers again");
        }
    }
}

/// Why a Redis call did not happen or did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisDown(pub String);

impl std::fmt::Display for RedisDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection to the shared Redis, with the key prefix of this deployment. Every call
/// goes through [`Redis::call`]: bounded in time and behind a shared circuit breaker.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    prefix: String,
    breaker: Arc<Breaker>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis(prefix={})", self.prefix)
    }
}

impl Redis {
    /// A connection to `url`, made on first use and remade whenever it breaks.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| format!("cannot set up Redis: {e}"))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            breaker: Arc::new(Breaker {
                failures: AtomicU64::new(0),
                open_until: AtomicU64::new(0),
                recoveries: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        })
    }

    /// Runs one call (`what` names it in logs) within [`CALL_TIMEOUT`], unless the
    /// breaker is open: then it fails at once, without touching the network.
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, RedisDown>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allow() {
            return Err(RedisDown(
                "Redis is unavailable (waiting to try again)".into(),
            ));
        }
        match tokio::time::timeout(CALL_TIMEOUT, f(self.conn.clone())).await {
            Ok(Ok(value)) => {
                self.breaker.succeeded();
                Ok(value)
            }
            Ok(Err(e)) => {
                self.breaker.failed(what, &e.to_string(), e.is_timeout());
                Err(RedisDown(e.to_string()))
            }
            Err(_) => {
                let why = format!("no answer within {CALL_TIMEOUT:?}");
                self.breaker.failed(what, &why, true);
                Err(RedisDown(why))
            }
        }
    }

    /// How many times Redis came back after an outage (users that may have missed writes
    /// meanwhile, such as the read cache, compare it with what they saw last).
    pub fn recoveries(&self) -> u64 {
        self.breaker.recoveries.load(Ordering::Acquire)
    }

    /// Checks that Redis answers, within [`CALL_TIMEOUT`].
    pub async fn ping(&self) -> Result<(), String> {
        self.call("PING", |mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(drop)
        .map_err(|e| e.0)
    }

    /// The connection (cheap to clone; reconnects by itself).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The prefix of every key of this deployment.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, name: &str, window: i64) -> String {
        format!("{}throttle:{name}:{window}", self.prefix)
    }
}

/// Counts attempts in fixed windows, per key: in memory, or in Redis across nodes.
pub enum Counter {
    /// This process only.
    Memory(Throttle),
    /// Every node of the deployment.
    Shared {
        /// The connection.
        redis: Redis,
        /// Attempts allowed per window.
        limit: u32,
        /// Window length in seconds.
        window: i64,
        /// Counter name (part of every key).
        name: &'static str,
        /// Counts on this node while Redis is unavailable: throttling per node rather
        /// than none, and never everyone refused.
        fallback: Throttle,
    },
}

/// Increments the window's counter unless it is at the limit; returns the count, or
/// minus the seconds until the window ends when the limit is reached.
const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return -ttl
end
return n
";

/// Takes one count back, never below zero.
const FORGIVE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

impl Counter {
    /// A counter of `limit` attempts per `window` seconds, shared when `redis` is given.
    pub fn new(redis: Option<&Redis>, name: &'static str, limit: u32, window: i64) -> Self {
        match redis {
            Some(redis) => Self::Shared {
                redis: redis.clone(),
                limit,
                window,
                name,
                fallback: Throttle::new(limit, window),
            },
            None => Self::Memory(Throttle::new(limit, window)),
        }
    }

    /// Counts an attempt for `key` at `now` (unix seconds); `Err(seconds to wait)` when
    /// over the limit. While Redis cannot be reached (within [`CALL_TIMEOUT`], or its
    /// breaker is open) this node counts alone: per node rather than not at all.
    pub async fn hit(&self, key: &str, now: i64) -> Result<(), i64> {
        match self {
            Self::Memory(t) => t.hit(key, now),
            Self::Shared {
                redis,
                limit,
                window,
                name,
                fallback,
            } => {
                let redis_key =
                    redis.key(&format!("{name}:{key}"), now.div_euclid((*window).max(1)));
                let result = redis
                    .call("throttle", |mut conn| async move {
                        redis::Script::new(HIT)
                            .key(redis_key)
                            .arg(*window)
                            .arg(*limit)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
                match result {
                    Ok(n) if n < 0 => Err(-n),
                    Ok(_) => Ok(()),
                    Err(_) => fallback.hit(key, now),
                }
            }
        }
    }

    /// Takes back one counted attempt of `key` at `now` (it succeeded).
    pub async fn forgive(&self, key: &str, now: i64) {
        match self {
            Self::Memory(t) => t.forgive(key),
            Self::Shared {
                redis,
                window,
                name,
                fallback,
                ..
            } => {
                fallback.forgive(key);
                let redis_key =
                    redis.key(&format!("{name}:{key}"), now.div_euclid((*window).max(1)));
                let _ = redis
                    .call("throttle", |mut conn| async move {
                        redis::Script::new(FORGIVE)
                            .key(redis_key)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_counters_hold_across_connections() {
        let Some(url) = ferrobase_testkit::services::redis() else {
            return;
        };
        let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
        let one = Counter::new(
            Some(&Redis::connect(&url, &prefix).expect("redis")),
            "t",
            3,
            60,
        );
        let two = Counter::new(
            Some(&Redis::connect(&url, &prefix).expect("redis")),
            "t",
            3,
            60,
        );
        assert_eq!(one.hit("k", 120).await, Ok(()));
        assert_eq!(two.hit("k", 121).await, Ok(()));
        assert_eq!(one.hit("k", 122).await, Ok(()));
        let blocked = two.hit("k", 123).await;
        assert!(
            matches!(blocked, Err(wait) if (1..=60).contains(&wait)),
            "{blocked:?}"
        );
        one.forgive("k", 124).await;
        assert_eq!(
            two.hit("k", 125).await,
            Ok(()),
            "a forgiven attempt frees a slot"
        );
        assert_eq!(one.hit("other", 125).await, Ok(()), "keys are separate");
    }

    #[tokio::test]
    async fn the_connection_comes_back_by_itself() {
        let Some(url) = ferrobase_testkit::services::redis() else {
            return;
        };
        let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
        let redis = Redis::connect(&url, &prefix).expect("redis");
        redis.ping().await.expect("first ping");
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut redis.conn.clone())
            .await
            .expect("client id");
        // Cut our connection from the server side.
        let mut admin = redis::Client::open(url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("admin connection");
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut admin)
            .await
            .expect("kill");
        // The next use may still see the broken connection; the one after must not.
        let _ = redis.ping().await;
        redis.ping().await.expect("reconnected without help");
        let again: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut redis.conn.clone())
            .await
            .expect("client id");
        assert_ne!(again, id, "a new connection");
    }
}
