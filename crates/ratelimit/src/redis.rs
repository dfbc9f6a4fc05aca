//! [`RedisLimiter`]: the rate-limit state of every node, in Redis, decided by Lua scripts
//! that mirror `step`; with a [`MemoryLimiter`] to fall back on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::{
    Algorithm, Decision, Limits, MemoryLimiter, Quota, RateLimiter, State, clamp_now, refuse_all,
    report,
};

/// `le(a, b, c, d)`: whether a × b <= c × d, exactly, for a and c below 2^33 and b and d at
/// most 2^40. Each product is split at 2^20 so that no partial result leaves the doubles'
/// exact-integer range (2^53).
pub(super) const LUA_LE: &str = r"
local function product(a, b)
  local high = math.floor(b / 1048576)
  local low = a * (b - high * 1048576)
  local carry = math.floor(low / 1048576)
  return a * high + carry, low - carry * 1048576
end
local function le(a, b, c, d)
  local h1, l1 = product(a, b)
  local h2, l2 = product(c, d)
  return h1 < h2 or (h1 == h2 and l1 <= l2)
end
";

/// Arguments every script takes; numbers are written back with `int`, as `tostring` could
/// use an exponent.
const LUA_ARGS: &str = r"
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function int(x) return string.format('%.0f', x) end
";

/// `step` for [`Algorithm::FixedWindow`]; returns {admitted, window, count}.
const LUA_FIXED_WINDOW: &str = r"
local now_window = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'w', 'n')
local w, n = tonumber(s[1]), tonumber(s[2])
if not (w and n) or w < now_window then w, n = now_window, 0 end
if n >= limit then return {0, w, n} end
n = n + 1
redis.call('HSET', KEYS[1], 'w', int(w), 'n', int(n))
redis.call('PEXPIRE', KEYS[1], int((w + 1) * window - now))
return {1, w, n}
";

/// `step` for [`Algorithm::SlidingWindow`]; returns {admitted, window, previous, current}.
const LUA_SLIDING_WINDOW: &str = r"
local now_window = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'w', 'p', 'c')
local w, p, c = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
if not (w and p and c) then w, p, c = now_window, 0, 0
elseif w == now_window - 1 then w, p, c = now_window, c, 0
elseif w < now_window then w, p, c = now_window, 0, 0 end
local elapsed = now - w * window
if elapsed < 0 then elapsed = 0 end
if c >= limit or not le(p, window - elapsed, limit - c - 1, window) then return {0, w, p, c} end
c = c + 1
redis.call('HSET', KEYS[1], 'w', int(w), 'p', int(p), 'c', int(c))
redis.call('PEXPIRE', KEYS[1], int((w + 2) * window - now))
return {1, w, p, c}
";

/// `step` for [`Algorithm::TokenBucket`]; returns {admitted, full_ms, full_frac}.
const LUA_TOKEN_BUCKET: &str = r"
local s = redis.call('HMGET', KEYS[1], 't', 'f')
local t, f = tonumber(s[1]), tonumber(s[2])
if not (t and f) then t, f = now, 0 end
if f >= limit then t, f = t + math.floor(f / limit), f % limit end
if t < now then t, f = now, 0 end
local nt, nf = t + math.floor(window / limit), f + window % limit
if nf >= limit then nt, nf = nt + 1, nf - limit end
local ahead = nt - now
if ahead > window or (ahead == window and nf > 0) then return {0, t, f} end
redis.call('HSET', KEYS[1], 't', int(nt), 'f', int(nf))
redis.call('PEXPIRE', KEYS[1], int(ahead + 1))
return {1, nt, nf}
";

/// How long a decision waits for Redis before deciding in memory. Redis answers in well under
/// a millisecond; without this bound an outage would hold every request for the connection
/// manager's reconnection attempts (seconds).
pub(super) const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// While Redis is failing, one request per this many milliseconds (of the caller's clock)
/// tries it again; the others decide in memory at once.
pub(super) const PROBE_EVERY_MS: i64 = 1_000;

/// `RedisLimiter::probe_at` while Redis answers.
const HEALTHY: i64 = i64::MIN;

/// Every node: the state lives in Redis under `{prefix}rl:{fw|sw|tb}:{key}` (a hash that
/// expires once it says nothing any more), and each decision is one atomic Lua script
/// (EVALSHA), so concurrent callers on any number of nodes are counted exactly.
///
/// When Redis fails or takes longer than 250 ms, the limiter warns once and decides with its
/// own [`MemoryLimiter`]: per-node limits are better than none, and better than refusing
/// everyone. Until Redis answers again, one request a second tries it and the rest do not
/// wait for it. Needs a Tokio runtime with timers enabled (as `#[tokio::main]` builds).
pub struct RedisLimiter {
    redis: ferrobase_cluster::Redis,
    algorithm: Algorithm,
    script: redis::Script,
    fallback: MemoryLimiter,
    /// `HEALTHY`, or after a failure the caller's time from which the next request tries Redis
    /// again. Also makes an outage log one warning, not one per request.
    pub(super) probe_at: AtomicI64,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("redis", &self.redis)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter keeping its state in `redis`, under that connection's key prefix.
    pub fn new(redis: &ferrobase_cluster::Redis, algorithm: Algorithm) -> Self {
        let code = match algorithm {
            Algorithm::FixedWindow => format!("{LUA_ARGS}{LUA_FIXED_WINDOW}"),
            Algorithm::SlidingWindow => format!("{LUA_LE}{LUA_ARGS}{LUA_SLIDING_WINDOW}"),
            Algorithm::TokenBucket => format!("{LUA_ARGS}{LUA_TOKEN_BUCKET}"),
        };
        Self {
            redis: redis.clone(),
            algorithm,
            script: redis::Script::new(&code),
            fallback: MemoryLimiter::new(algorithm),
            probe_at: AtomicI64::new(HEALTHY),
        }
    }

    async fn decide(&self, key: &str, quota: Quota, now_ms: i64) -> Decision {
        let Some(limits) = Limits::of(quota) else {
            return refuse_all(quota);
        };
        let now = clamp_now(now_ms);
        let probe_at = self.probe_at.load(Ordering::Relaxed);
        if probe_at != HEALTHY {
            // Redis failed lately. Not yet time to try again (a clock that jumped back counts
            // as time), or another request won this probe: decide here, without waiting.
            let waiting = (probe_at - PROBE_EVERY_MS..probe_at).contains(&now);
            if waiting
                || self
                    .probe_at
                    .compare_exchange(
                        probe_at,
                        now + PROBE_EVERY_MS,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                return self.fallback.decide(key, quota, now);
            }
        }
        let result = match tokio::time::timeout(REDIS_TIMEOUT, self.step(key, limits, now)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
        };
        match result {
            Ok((state, allowed)) => {
                if self.probe_at.swap(HEALTHY, Ordering::Relaxed) != HEALTHY {
                    tracing::info!(
                        "Redis answers again; rate limits are shared across nodes again"
                    );
                }
                report(state, allowed, quota, limits, now)
            }
            Err(error) => {
                if self.probe_at.swap(now + PROBE_EVERY_MS, Ordering::Relaxed) == HEALTHY {
                    tracing::warn!(%error, "Redis unavailable; rate limits fall back to this node's memory");
                }
                self.fallback.decide(key, quota, now)
            }
        }
    }

    #[cfg(test)]
    pub(super) fn healthy(&self) -> bool {
        self.probe_at.load(Ordering::Relaxed) == HEALTHY
    }

    async fn step(&self, key: &str, limits: Limits, now: i64) -> Result<(State, bool), String> {
        let mut invocation = self.script.key(format!(
            "{}rl:{}:{key}",
            self.redis.prefix(),
            self.algorithm.tag()
        ));
        invocation.arg(now).arg(limits.window).arg(limits.requests);
        let reply: Vec<i64> = invocation
            .invoke_async(&mut self.redis.connection())
            .await
            .map_err(|e| e.to_string())?;
        parse_reply(self.algorithm, &reply)
            .ok_or_else(|| format!("unexpected script reply {reply:?}"))
    }
}

/// The state and admission a script returned.
fn parse_reply(algorithm: Algorithm, reply: &[i64]) -> Option<(State, bool)> {
    let allowed = match reply.first()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let state = match (algorithm, reply) {
        (Algorithm::FixedWindow, &[_, window, count]) if count >= 0 => {
            State::Fixed { window, count }
        }
        (Algorithm::SlidingWindow, &[_, window, previous, current])
            if previous >= 0 && current >= 0 =>
        {
            State::Sliding {
                window,
                previous,
                current,
            }
        }
        (Algorithm::TokenBucket, &[_, full_ms, full_frac]) if full_frac >= 0 => {
            State::Bucket { full_ms, full_frac }
        }
        _ => return None,
    };
    Some((state, allowed))
}

impl RateLimiter for RedisLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
        now_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>> {
        Box::pin(self.decide(key, quota, now_ms))
    }
}
