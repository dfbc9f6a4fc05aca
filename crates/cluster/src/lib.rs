//! State that every node of a deployment must agree on. With `REDIS_URL` it lives in
//! Redis (one connection that reconnects by itself); without it, in this process's
//! memory. The login throttle uses it now; rate limits, caches and realtime fan-out
//! will use the same connection.
#![forbid(unsafe_code)]

pub mod cache;

use ferrobase_auth::throttle::Throttle;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A connection to the shared Redis, with the key prefix of this deployment.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    prefix: String,
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
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| format!("cannot set up Redis: {e}"))?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
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
            },
            None => Self::Memory(Throttle::new(limit, window)),
        }
    }

    /// Counts an attempt for `key` at `now` (unix seconds); `Err(seconds to wait)` when
    /// over the limit. If Redis cannot be reached the attempt is let through and logged:
    /// a broken cache must not lock everyone out.
    pub async fn hit(&self, key: &str, now: i64) -> Result<(), i64> {
        match self {
            Self::Memory(t) => t.hit(key, now),
            Self::Shared {
                redis,
                limit,
                window,
                name,
            } => {
                let mut conn = redis.conn.clone();
                let result: redis::RedisResult<i64> = redis::Script::new(HIT)
                    .key(redis.key(&format!("{name}:{key}"), now.div_euclid((*window).max(1))))
                    .arg(*window)
                    .arg(*limit)
                    .invoke_async(&mut conn)
                    .await;
                match result {
                    Ok(n) if n < 0 => Err(-n),
                    Ok(_) => Ok(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis unavailable; the throttle lets this attempt through");
                        Ok(())
                    }
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
                ..
            } => {
                let mut conn = redis.conn.clone();
                let result: redis::RedisResult<i64> = redis::Script::new(FORGIVE)
                    .key(redis.key(&format!("{name}:{key}"), now.div_euclid((*window).max(1))))
                    .invoke_async(&mut conn)
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "Redis unavailable; could not forgive an attempt");
                }
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
