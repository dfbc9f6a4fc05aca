//! Request rate limits. A [`RateLimiter`] counts requests per key and decides with one of
//! three [`Algorithm`]s, either in this process's memory ([`MemoryLimiter`]) or in Redis for
//! every node of a deployment ([`RedisLimiter`]).
//!
//! Both stores run one state machine. The transition (`step`) exists twice, in Rust and in
//! the Lua scripts, written to agree exactly (a test feeds both the same sequence); the
//! numbers a client sees (`report`) are computed once, in Rust, from the state the transition
//! left, so Redis does only the part that must be atomic.
//!
//! All arithmetic is on integers, so no rounding can admit an extra request: the token bucket
//! is kept as the time at which it is full again (GCRA), in milliseconds plus a fraction in
//! units of 1/requests ms, and the sliding window compares cross-multiplied products.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Which counting algorithm a limiter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// A counter per calendar window. Cheapest; a client can get twice the quota across a
    /// window boundary.
    FixedWindow,
    /// The current window's count plus the previous window's, weighted by how much of it the
    /// sliding window still covers. Smooths the boundary burst.
    SlidingWindow,
    /// A bucket of `requests` tokens refilled continuously: bursts up to the capacity, then a
    /// steady rate.
    TokenBucket,
}

impl Algorithm {
    /// Part of the Redis key, so that no algorithm ever reads another's state.
    fn tag(self) -> &'static str {
        match self {
            Self::FixedWindow => "fw",
            Self::SlidingWindow => "sw",
            Self::TokenBucket => "tb",
        }
    }
}

/// `requests` per `window_ms` milliseconds (token bucket: capacity `requests`, refilled at
/// requests/window). A window of 0 counts as 1 ms and one longer than 2^40 ms (about 35 years)
/// as 2^40 ms, which keeps every product exact in the Redis scripts. A quota of zero requests
/// refuses everything. A key should keep its quota: a changed one is safe (nothing panics,
/// nothing runs away) but reinterprets the key's stored counts until they expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests admitted per window; the bucket's capacity.
    pub requests: u32,
    /// The window length in milliseconds; the time the bucket takes to refill completely.
    pub window_ms: u64,
}

/// The answer for one request, with what the rate-limit response headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted (and was counted).
    pub allowed: bool,
    /// The quota's `requests`.
    pub limit: u32,
    /// Requests still admitted now; 0 when refused.
    pub remaining: u32,
    /// Seconds, rounded up, until the quota is whole again: the end of the window (fixed),
    /// the end of the window in which the current count stops weighing (sliding), or the time
    /// until the bucket is full (token bucket).
    pub reset_secs: u64,
    /// When refused, seconds (at least 1, rounded up) until one request would be admitted;
    /// 0 when allowed. Exact for every algorithm; for the sliding window it can exceed one
    /// window (at most two) when the current window is already full.
    pub retry_after_secs: u64,
}

/// Counts requests per key and decides. `now_ms` is unix time in milliseconds from the
/// caller's injected clock (tests never sleep); times before 1970 count as 1970. Time going
/// backwards is tolerated: it never panics and never admits more than the quota.
pub trait RateLimiter: Send + Sync {
    /// Counts one request for `key` under `quota` at `now_ms` if it is admitted, and says so.
    /// Never fails: a store that cannot answer falls back rather than refusing everyone.
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
        now_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>>;
}

/// Longest window honoured. Counts stay below 2^33, so every count × duration product split at
/// 2^20 keeps its parts below 2^53, the exact-integer range of the doubles Redis's Lua uses.
const MAX_WINDOW_MS: i64 = 1 << 40;

/// Latest time honoured (about the year 37,600); with `MAX_WINDOW_MS` it keeps every time in
/// the scripts below 2^53 and every sum in Rust far from overflow.
const MAX_NOW_MS: i64 = 1 << 50;

/// A quota in the units the algorithms compute with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// At least 1.
    requests: i64,
    /// In 1..=MAX_WINDOW_MS.
    window: i64,
}

impl Limits {
    /// `None` for a quota of zero requests, which needs no state to refuse.
    fn of(quota: Quota) -> Option<Self> {
        (quota.requests > 0).then(|| Self {
            requests: i64::from(quota.requests),
            window: window_ms(quota),
        })
    }
}

fn window_ms(quota: Quota) -> i64 {
    i64::try_from(quota.window_ms)
        .unwrap_or(MAX_WINDOW_MS)
        .clamp(1, MAX_WINDOW_MS)
}

fn clamp_now(now_ms: i64) -> i64 {
    now_ms.clamp(0, MAX_NOW_MS)
}

/// What a limiter remembers about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `count` requests admitted in window number `window` (time / window length).
    Fixed { window: i64, count: i64 },
    /// Requests admitted in window number `window` (`current`) and the one before (`previous`).
    Sliding {
        window: i64,
        previous: i64,
        current: i64,
    },
    /// The bucket is full again at `full_ms + full_frac / requests` ms; each admitted request
    /// moves that a token's refill time (window / requests) later.
    Bucket { full_ms: i64, full_frac: i64 },
}

/// The state after a request at `now` and whether it is admitted; refused requests change
/// nothing. Mirrored by the Lua scripts below, line for line.
fn step(algorithm: Algorithm, stored: Option<State>, limits: Limits, now: i64) -> (State, bool) {
    let Limits { requests, window } = limits;
    let now_window = now.div_euclid(window);
    match algorithm {
        Algorithm::FixedWindow => {
            let (w, count) = match stored {
                // A stored window later than now's means the clock went back: keep counting
                // there, so that going back never opens a fresh window.
                Some(State::Fixed { window: w, count }) if w >= now_window => (w, count),
                _ => (now_window, 0),
            };
            let allowed = count < requests;
            let count = count + i64::from(allowed);
            (State::Fixed { window: w, count }, allowed)
        }
        Algorithm::SlidingWindow => {
            let (w, previous, current) = match stored {
                Some(State::Sliding {
                    window: w,
                    previous,
                    current,
                }) if w >= now_window => (w, previous, current),
                Some(State::Sliding {
                    window: w, current, ..
                }) if w == now_window - 1 => (now_window, current, 0),
                _ => (now_window, 0, 0),
            };
            // The part of the previous window the sliding window still covers, as a fraction
            // of `window`; all of it when the clock went back before window `w`.
            let rest =
                i128::from(window) - (i128::from(now) - i128::from(w) * i128::from(window)).max(0);
            // previous × rest / window + current + 1 <= requests, multiplied out.
            let allowed = current < requests
                && i128::from(previous) * rest
                    <= i128::from(requests - current - 1) * i128::from(window);
            let current = current + i64::from(allowed);
            let state = State::Sliding {
                window: w,
                previous,
                current,
            };
            (state, allowed)
        }
        Algorithm::TokenBucket => {
            let (mut full_ms, mut full_frac) = match stored {
                Some(State::Bucket { full_ms, full_frac }) => {
                    (full_ms + full_frac / requests, full_frac % requests)
                }
                _ => (now, 0),
            };
            if full_ms < now {
                // Full already; a bucket does not fill beyond its capacity.
                (full_ms, full_frac) = (now, 0);
            }
            let mut next_ms = full_ms + window / requests;
            let mut next_frac = full_frac + window % requests;
            if next_frac >= requests {
                next_ms += 1;
                next_frac -= requests;
            }
            // Admitted while taking a token leaves the bucket at most empty: full again no
            // later than a whole window from now.
            let ahead = next_ms - now;
            if ahead < window || (ahead == window && next_frac == 0) {
                let state = State::Bucket {
                    full_ms: next_ms,
                    full_frac: next_frac,
                };
                (state, true)
            } else {
                (State::Bucket { full_ms, full_frac }, false)
            }
        }
    }
}

/// When the state says nothing any more (it is as if the key had never been seen).
fn expires_at(state: State, window: i64) -> i64 {
    let at = match state {
        State::Fixed { window: w, .. } => (i128::from(w) + 1) * i128::from(window),
        State::Sliding { window: w, .. } => (i128::from(w) + 2) * i128::from(window),
        State::Bucket { full_ms, full_frac } => i128::from(full_ms) + i128::from(full_frac > 0),
    };
    i64::try_from(at).unwrap_or(i64::MAX)
}

/// The decision for a request at `now` given the state `step` left.
fn report(state: State, allowed: bool, quota: Quota, limits: Limits, now: i64) -> Decision {
    let requests = i128::from(limits.requests);
    let window = i128::from(limits.window);
    let now = i128::from(now);
    // Requests still admitted, ms until whole again, ms until one more would be admitted
    // (the last is meaningful only when refused).
    let (remaining, reset_ms, retry_ms) = match state {
        State::Fixed { window: w, count } => {
            let end = (i128::from(w) + 1) * window - now;
            (requests - i128::from(count), end, end)
        }
        State::Sliding {
            window: w,
            previous,
            current,
        } => {
            let start = i128::from(w) * window;
            // When the clock went back before window `w`, it first has to get there.
            let lag = (start - now).max(0);
            let rest = window - (now - start).max(0);
            let (previous, current) = (i128::from(previous), i128::from(current));
            let used = current + ceil_div(previous * rest, window);
            let reset = if current > 0 {
                start + 2 * window - now
            } else if previous > 0 {
                start + window - now
            } else {
                0
            };
            let retry = if current < requests {
                // The previous window's weight refuses: wait until it has decayed to where
                // previous × rest' <= (requests - current - 1) × window.
                let rest_then = ((requests - current - 1) * window)
                    .checked_div(previous)
                    .unwrap_or(rest);
                lag + rest - rest_then.min(rest)
            } else {
                // This window is full: into the next, where it is the previous one, until
                // current × rest' <= (requests - 1) × window.
                let rest_then = ((requests - 1) * window)
                    .checked_div(current)
                    .unwrap_or(window);
                lag + rest + window - rest_then.min(window)
            };
            (requests - used, reset, retry)
        }
        State::Bucket { full_ms, full_frac } => {
            // In units of 1/requests ms, in which one token takes `window` units to refill.
            let full = i128::from(full_ms) * requests + i128::from(full_frac);
            let ahead = (full - now * requests).max(0);
            let tokens = (window * requests - ahead).div_euclid(window);
            let retry = full + window - window * requests - now * requests;
            (tokens, ceil_div(ahead, requests), ceil_div(retry, requests))
        }
    };
    Decision {
        allowed,
        limit: quota.requests,
        remaining: if allowed {
            u32::try_from(remaining.clamp(0, requests)).unwrap_or(quota.requests)
        } else {
            0
        },
        reset_secs: secs(reset_ms),
        retry_after_secs: if allowed { 0 } else { secs(retry_ms).max(1) },
    }
}

/// The refusal of a quota of zero requests: nothing will ever be admitted, so clients are
/// told to come back after a window.
fn refuse_all(quota: Quota) -> Decision {
    let wait = secs(i128::from(window_ms(quota)));
    Decision {
        allowed: false,
        limit: 0,
        remaining: 0,
        reset_secs: wait,
        retry_after_secs: wait.max(1),
    }
}

/// `a / b` rounded up, for `b > 0`.
fn ceil_div(a: i128, b: i128) -> i128 {
    -((-a).div_euclid(b))
}

/// Milliseconds as whole seconds, rounded up; negative counts as zero.
fn secs(ms: i128) -> u64 {
    u64::try_from(ceil_div(ms.max(0), 1000)).unwrap_or(u64::MAX)
}

/// Keys a [`MemoryLimiter::new`] remembers at most.
const DEFAULT_MAX_KEYS: usize = 100_000;
/// Shards are added per this many keys of capacity, up to `MAX_SHARDS`.
const KEYS_PER_SHARD: usize = 4096;
const MAX_SHARDS: usize = 16;

/// One key's state in memory.
#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    /// From `expires_at`: forgetting the entry then changes no decision.
    expires_at: i64,
    /// The last time the key was checked, to evict the entries idle longest.
    last_seen: i64,
}

/// This process only. Keys are spread over mutex-protected shards so that callers of
/// different keys rarely wait for each other; each decision holds its shard's lock, so
/// concurrent callers of one key are counted exactly. Memory is bounded: a full shard first
/// forgets entries that have expired, then the quarter of its entries idle longest (those
/// keys get a fresh quota: the price of a bound under a flood of distinct keys).
pub struct MemoryLimiter {
    algorithm: Algorithm,
    shards: Box<[Mutex<HashMap<String, Entry>>]>,
    keys_per_shard: usize,
    hasher: RandomState,
}

impl std::fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("algorithm", &self.algorithm)
            .field("max_keys", &(self.shards.len() * self.keys_per_shard))
            .finish_non_exhaustive()
    }
}

impl MemoryLimiter {
    /// A limiter remembering up to 100,000 keys.
    pub fn new(algorithm: Algorithm) -> Self {
        Self::with_capacity(algorithm, DEFAULT_MAX_KEYS)
    }

    /// A limiter remembering at most `max_keys` keys (at least one).
    pub fn with_capacity(algorithm: Algorithm, max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let shards = (max_keys / KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        Self {
            algorithm,
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            // Rounded down, so that all shards together stay within `max_keys`.
            keys_per_shard: max_keys / shards,
            hasher: RandomState::new(),
        }
    }

    fn decide(&self, key: &str, quota: Quota, now_ms: i64) -> Decision {
        let Some(limits) = Limits::of(quota) else {
            return refuse_all(quota);
        };
        let now = clamp_now(now_ms);
        let shard = self.hasher.hash_one(key) as usize % self.shards.len();
        let (state, allowed) = {
            let mut map = self.shards[shard]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (state, allowed) = step(self.algorithm, map.get(key).map(|e| e.state), limits, now);
            let entry = Entry {
                state,
                expires_at: expires_at(state, limits.window),
                last_seen: now,
            };
            if let Some(slot) = map.get_mut(key) {
                *slot = entry;
            } else {
                make_room(&mut map, self.keys_per_shard, now);
                map.insert(key.to_owned(), entry);
            }
            (state, allowed)
        };
        report(state, allowed, quota, limits, now)
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// Frees at least one place in a shard holding `cap` entries or more.
fn make_room(map: &mut HashMap<String, Entry>, cap: usize, now: i64) {
    if map.len() < cap {
        return;
    }
    map.retain(|_, entry| entry.expires_at > now);
    if map.len() < cap {
        return;
    }
    // Still full of live keys. Evicting a quarter at once keeps the cost of this pass
    // amortised over many inserts.
    let evict = (cap / 4).clamp(1, map.len());
    let mut idle: Vec<(i64, &String)> = map.iter().map(|(k, e)| (e.last_seen, k)).collect();
    idle.select_nth_unstable_by_key(evict - 1, |(seen, _)| *seen);
    let gone: Vec<String> = idle[..evict].iter().map(|(_, k)| (*k).clone()).collect();
    for key in &gone {
        map.remove(key);
    }
    tracing::debug!(
        evicted = gone.len(),
        "rate limiter full; forgot the keys idle longest"
    );
}

impl RateLimiter for MemoryLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
        now_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Decision> + Send + 'a>> {
        Box::pin(std::future::ready(self.decide(key, quota, now_ms)))
    }
}

/// `le(a, b, c, d)`: whether a × b <= c × d, exactly, for a and c below 2^33 and b and d at
/// most 2^40. Each product is split at 2^20 so that no partial result leaves the doubles'
/// exact-integer range (2^53).
const LUA_LE: &str = r"
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
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// While Redis is failing, one request per this many milliseconds (of the caller's clock)
/// tries it again; the others decide in memory at once.
const PROBE_EVERY_MS: i64 = 1_000;

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
    redis: crate::Redis,
    algorithm: Algorithm,
    script: redis::Script,
    fallback: MemoryLimiter,
    /// `HEALTHY`, or after a failure the caller's time from which the next request tries Redis
    /// again. Also makes an outage log one warning, not one per request.
    probe_at: AtomicI64,
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
    pub fn new(redis: &crate::Redis, algorithm: Algorithm) -> Self {
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
    fn healthy(&self) -> bool {
        self.probe_at.load(Ordering::Relaxed) == HEALTHY
    }

    async fn step(&self, key: &str, limits: Limits, now: i64) -> Result<(State, bool), String> {
        let mut invocation = self.script.key(format!(
            "{}rl:{}:{key}",
            self.redis.prefix,
            self.algorithm.tag()
        ));
        invocation.arg(now).arg(limits.window).arg(limits.requests);
        let reply: Vec<i64> = invocation
            .invoke_async(&mut self.redis.conn.clone())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Redis;
    use std::sync::Arc;

    const ALGORITHMS: [Algorithm; 3] = [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ];

    /// A minute boundary near the present.
    const T0: i64 = 1_700_000_000_000 / 60_000 * 60_000;

    fn per_minute(requests: u32) -> Quota {
        Quota {
            requests,
            window_ms: 60_000,
        }
    }

    fn admitted(allowed: bool, remaining: u32, reset_secs: u64, limit: u32) -> Decision {
        Decision {
            allowed,
            limit,
            remaining,
            reset_secs,
            retry_after_secs: 0,
        }
    }

    fn refused(limit: u32, reset_secs: u64, retry_after_secs: u64) -> Decision {
        Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs,
            retry_after_secs,
        }
    }

    /// A Redis connection with a key prefix of its own, or `None` when Redis is unreachable.
    fn redis() -> Option<Redis> {
        let url = ferrobase_testkit::services::redis()?;
        let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
        Some(Redis::connect(&url, &prefix).expect("redis"))
    }

    /// Runs `body` on a [`MemoryLimiter`].
    async fn on_memory<F>(algorithm: Algorithm, body: F)
    where
        F: AsyncFnOnce(&dyn RateLimiter),
    {
        body(&MemoryLimiter::new(algorithm)).await;
    }

    /// Runs `body` on a [`RedisLimiter`], and checks that Redis, not the fallback, answered.
    async fn on_redis<F>(algorithm: Algorithm, body: F)
    where
        F: AsyncFnOnce(&dyn RateLimiter),
    {
        let Some(redis) = redis() else {
            return;
        };
        let limiter = RedisLimiter::new(&redis, algorithm);
        body(&limiter).await;
        assert!(limiter.healthy(), "Redis failed; the fallback answered");
    }

    async fn fixed_window_counts_per_window(limiter: &dyn RateLimiter) {
        let quota = per_minute(5);
        for remaining in (0..5).rev() {
            let decision = limiter.check("k", quota, T0 + 10_000).await;
            assert_eq!(decision, admitted(true, remaining, 50, 5));
        }
        assert_eq!(
            limiter.check("k", quota, T0 + 10_000).await,
            refused(5, 50, 50)
        );
        assert_eq!(
            limiter.check("k", quota, T0 + 59_999).await,
            refused(5, 1, 1),
            "a millisecond before the window ends"
        );
        assert_eq!(
            limiter.check("other", quota, T0 + 10_000).await,
            admitted(true, 4, 50, 5),
            "keys are separate"
        );
        assert_eq!(
            limiter.check("k", quota, T0 + 60_000).await,
            admitted(true, 4, 60, 5),
            "a new window"
        );
    }

    async fn sliding_window_weighs_the_previous_window(limiter: &dyn RateLimiter) {
        let quota = per_minute(10);
        for key in ["a", "b"] {
            for remaining in (0..10).rev() {
                let decision = limiter.check(key, quota, T0 + 1_000).await;
                // Whole again once this window's count stops weighing: the end of the next.
                assert_eq!(decision, admitted(true, remaining, 119, 10));
            }
        }
        // Window 0 is full: into window 1, until 10 × (1 - elapsed / 60 s) + 1 <= 10, that
        // is 6 s in; 65 s from now.
        assert_eq!(
            limiter.check("a", quota, T0 + 1_000).await,
            refused(10, 119, 65)
        );
        let almost = limiter.check("a", quota, T0 + 65_999).await;
        assert_eq!(almost, refused(10, 55, 1), "{almost:?}");
        assert_eq!(
            limiter.check("a", quota, T0 + 66_000).await,
            admitted(true, 0, 114, 10),
            "the previous window weighs 9"
        );

        // Halfway into window 1 the previous window's 10 weigh 5: exactly 5 more.
        for remaining in (0..5).rev() {
            let decision = limiter.check("b", quota, T0 + 90_000).await;
            assert_eq!(decision, admitted(true, remaining, 90, 10));
        }
        // 5 + 10 × (1 - elapsed / 60 s) + 1 <= 10 at 36 s into window 1.
        assert_eq!(
            limiter.check("b", quota, T0 + 90_000).await,
            refused(10, 90, 6)
        );
        assert!(limiter.check("b", quota, T0 + 96_000).await.allowed);
        assert!(!limiter.check("b", quota, T0 + 96_000).await.allowed);

        // Two windows later nothing weighs any more.
        assert_eq!(
            limiter.check("b", quota, T0 + 240_000).await,
            admitted(true, 9, 120, 10)
        );
    }

    async fn token_bucket_refills_gradually(limiter: &dyn RateLimiter) {
        // One token every 6 s.
        let quota = per_minute(10);
        for taken in 1..=10 {
            let decision = limiter.check("k", quota, T0).await;
            assert_eq!(
                decision,
                admitted(true, 10 - taken, 6 * u64::from(taken), 10)
            );
        }
        assert_eq!(limiter.check("k", quota, T0).await, refused(10, 60, 6));
        // 15 s later 2.5 tokens are back: two admitted, then half a token is 3 s from whole.
        assert_eq!(
            limiter.check("k", quota, T0 + 15_000).await,
            admitted(true, 1, 51, 10)
        );
        assert_eq!(
            limiter.check("k", quota, T0 + 15_000).await,
            admitted(true, 0, 57, 10)
        );
        assert_eq!(
            limiter.check("k", quota, T0 + 15_000).await,
            refused(10, 57, 3)
        );
        // Full a window after it was last emptied.
        assert_eq!(
            limiter.check("k", quota, T0 + 72_000).await,
            admitted(true, 9, 6, 10)
        );

        // 3 per 10 s: a token every 3333⅓ ms, kept exactly.
        let quota = Quota {
            requests: 3,
            window_ms: 10_000,
        };
        for _ in 0..3 {
            assert!(limiter.check("thirds", quota, T0).await.allowed);
        }
        assert_eq!(limiter.check("thirds", quota, T0).await, refused(3, 10, 4));
        assert_eq!(
            limiter.check("thirds", quota, T0 + 3_333).await,
            refused(3, 7, 1)
        );
        assert_eq!(
            limiter.check("thirds", quota, T0 + 3_334).await,
            admitted(true, 0, 10, 3)
        );
    }

    /// The same for every algorithm: going back in time neither panics nor admits extra.
    async fn time_going_back_admits_nothing_extra(limiter: &dyn RateLimiter) {
        let quota = per_minute(5);
        for _ in 0..5 {
            assert!(limiter.check("k", quota, T0 + 70_000).await.allowed);
        }
        for now in [T0 + 69_999, T0 + 10_000, T0 - 3_600_000, 0, -1, i64::MIN] {
            let decision = limiter.check("k", quota, now).await;
            assert!(!decision.allowed, "at {now}: {decision:?}");
            assert!(decision.retry_after_secs >= 1, "at {now}: {decision:?}");
        }
        assert!(!limiter.check("k", quota, T0 + 70_000).await.allowed);
        // Far in the future everything has refilled; i64::MAX is clamped, not overflowed.
        assert!(limiter.check("k", quota, i64::MAX).await.allowed);
    }

    async fn a_zero_quota_refuses_everything(limiter: &dyn RateLimiter) {
        let quota = per_minute(0);
        assert_eq!(limiter.check("k", quota, T0).await, refused(0, 60, 60));
        let odd = Quota {
            requests: 0,
            window_ms: 0,
        };
        assert_eq!(limiter.check("k", odd, T0).await, refused(0, 1, 1));
    }

    #[tokio::test]
    async fn fixed_window_in_memory() {
        on_memory(Algorithm::FixedWindow, fixed_window_counts_per_window).await;
    }

    #[tokio::test]
    async fn fixed_window_in_redis() {
        on_redis(Algorithm::FixedWindow, fixed_window_counts_per_window).await;
    }

    #[tokio::test]
    async fn sliding_window_in_memory() {
        on_memory(
            Algorithm::SlidingWindow,
            sliding_window_weighs_the_previous_window,
        )
        .await;
    }

    #[tokio::test]
    async fn sliding_window_in_redis() {
        on_redis(
            Algorithm::SlidingWindow,
            sliding_window_weighs_the_previous_window,
        )
        .await;
    }

    #[tokio::test]
    async fn token_bucket_in_memory() {
        on_memory(Algorithm::TokenBucket, token_bucket_refills_gradually).await;
    }

    #[tokio::test]
    async fn token_bucket_in_redis() {
        on_redis(Algorithm::TokenBucket, token_bucket_refills_gradually).await;
    }

    #[tokio::test]
    async fn time_going_back_in_memory() {
        for algorithm in ALGORITHMS {
            on_memory(algorithm, time_going_back_admits_nothing_extra).await;
            on_memory(algorithm, a_zero_quota_refuses_everything).await;
        }
    }

    #[tokio::test]
    async fn time_going_back_in_redis() {
        for algorithm in ALGORITHMS {
            on_redis(algorithm, time_going_back_admits_nothing_extra).await;
            on_redis(algorithm, a_zero_quota_refuses_everything).await;
        }
    }

    /// 200 callers of one key at one instant, spread over `limiters`; returns how many got in.
    async fn burst(limiters: &[Arc<dyn RateLimiter>]) -> usize {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let limiter = Arc::clone(&limiters[i % limiters.len()]);
                tokio::spawn(async move { limiter.check("burst", per_minute(50), T0).await })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += usize::from(task.await.expect("task").allowed);
        }
        admitted
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_in_memory_get_exactly_the_quota() {
        for algorithm in ALGORITHMS {
            let limiter: Arc<dyn RateLimiter> = Arc::new(MemoryLimiter::new(algorithm));
            assert_eq!(burst(&[limiter]).await, 50, "{algorithm:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_in_redis_get_exactly_the_quota() {
        for algorithm in ALGORITHMS {
            let Some(redis) = redis() else {
                return;
            };
            let limiter = Arc::new(RedisLimiter::new(&redis, algorithm));
            let shared: Arc<dyn RateLimiter> = limiter.clone();
            assert_eq!(burst(&[shared]).await, 50, "{algorithm:?}");
            assert!(limiter.healthy());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_nodes_share_one_limit() {
        for algorithm in ALGORITHMS {
            let Some(one) = redis() else {
                return;
            };
            // A second connection with the same prefix: another node of the deployment.
            let url = ferrobase_testkit::services::redis().expect("redis");
            let two = Redis::connect(&url, &one.prefix).expect("redis");
            let nodes = [
                Arc::new(RedisLimiter::new(&one, algorithm)),
                Arc::new(RedisLimiter::new(&two, algorithm)),
            ];
            let limiters: Vec<Arc<dyn RateLimiter>> =
                nodes.iter().map(|n| Arc::clone(n) as _).collect();
            assert_eq!(burst(&limiters).await, 50, "{algorithm:?}");
            assert!(nodes.iter().all(|n| n.healthy()));
        }
    }

    /// A pseudo-random sequence of requests (several keys, time mostly forward, sometimes back)
    /// gets the same decisions from Redis as from memory: the scripts mirror `step`.
    #[tokio::test]
    async fn redis_and_memory_decide_alike() {
        let Some(redis) = redis() else {
            return;
        };
        // Neither divides the other, so the bucket's fractions are exercised.
        let quota = Quota {
            requests: 7,
            window_ms: 10_007,
        };
        for algorithm in ALGORITHMS {
            let memory = MemoryLimiter::new(algorithm);
            let shared = RedisLimiter::new(&redis, algorithm);
            let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
            let mut random = move |n: u64| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                i64::try_from((seed >> 33) % n).expect("small")
            };
            let (mut now, mut allowed, mut refused) = (T0, 0, 0);
            for i in 0..600 {
                now += if random(20) == 0 {
                    -random(3_000)
                } else {
                    random(1_000)
                };
                let key = ["a", "b"][usize::try_from(random(2)).expect("small")];
                let expected = memory.check(key, quota, now).await;
                let got = shared.check(key, quota, now).await;
                assert_eq!(got, expected, "{algorithm:?} step {i} at {now} for {key}");
                if expected.allowed {
                    allowed += 1;
                } else {
                    refused += 1;
                }
            }
            assert!(
                allowed > 100 && refused > 100,
                "{algorithm:?}: {allowed}/{refused}"
            );
            assert!(shared.healthy());
        }
    }

    /// `b` and `d` near 2^39 with a × b = c × d + 1, for coprime `a < c`: products around 2^71
    /// that doubles cannot tell apart.
    fn off_by_one(a: u64, c: u64) -> Option<(u64, u64)> {
        let (a, c) = (i128::from(a), i128::from(c));
        // The inverse of a modulo c, by the extended Euclidean algorithm.
        let (mut r0, mut r1, mut s0, mut s1) = (a, c, 1, 0);
        while r1 != 0 {
            let q = r0 / r1;
            (r0, r1) = (r1, r0 - q * r1);
            (s0, s1) = (s1, s0 - q * s1);
        }
        if r0 != 1 || a >= c {
            return None;
        }
        let b = s0.rem_euclid(c);
        let b = b + ((1 << 39) - b) / c * c;
        let d = (a * b - 1) / c;
        Some((u64::try_from(b).ok()?, u64::try_from(d).ok()?))
    }

    /// The script's exact product comparison agrees with 128-bit integers where doubles alone
    /// would round (products up to 2^72).
    #[tokio::test]
    async fn the_scripts_compare_large_products_exactly() {
        let Some(redis) = redis() else {
            return;
        };
        let script = redis::Script::new(&format!(
            "{LUA_LE}return le(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])) and 1 or 0"
        ));
        let mut seed: u64 = 7;
        let mut random = move |bits: u32| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) & ((1 << bits) - 1)
        };
        let mut cases = vec![
            (u64::from(u32::MAX), 1 << 40, u64::from(u32::MAX), 1 << 40),
            (
                u64::from(u32::MAX),
                (1 << 40) - 1,
                u64::from(u32::MAX),
                1 << 40,
            ),
            (
                u64::from(u32::MAX),
                1 << 40,
                u64::from(u32::MAX),
                (1 << 40) - 1,
            ),
            (0, 1 << 40, 0, 0),
        ];
        for _ in 0..100 {
            let (a, b) = (random(32), random(40));
            cases.push((a, b, random(32), random(40)));
            cases.push((a, b, a, b + 1));
            cases.push((a, b + 1, a, b));
            cases.push((a, b, a + 1, b));
            cases.push((a + 1, b, a, b));
            let (a, c) = (random(32), random(32));
            if let Some((b, d)) = off_by_one(a.min(c), a.max(c)) {
                cases.push((a.min(c), b, a.max(c), d));
                cases.push((a.max(c), d, a.min(c), b));
            }
        }
        assert!(cases.len() > 550, "off_by_one found too few cases");
        let mut conn = redis.conn.clone();
        for (a, b, c, d) in cases {
            let got: i64 = script
                .arg(a)
                .arg(b)
                .arg(c)
                .arg(d)
                .invoke_async(&mut conn)
                .await
                .expect("script");
            let expected = u128::from(a) * u128::from(b) <= u128::from(c) * u128::from(d);
            assert_eq!(got == 1, expected, "{a} × {b} <= {c} × {d}");
        }
    }

    #[tokio::test]
    async fn redis_keys_are_prefixed_and_expire() {
        let Some(redis) = redis() else {
            return;
        };
        let now = T0 + 10_000;
        for (algorithm, tag, longest) in [
            (Algorithm::FixedWindow, "fw", 50_000),
            (Algorithm::SlidingWindow, "sw", 110_000),
            (Algorithm::TokenBucket, "tb", 6_001),
        ] {
            let limiter = RedisLimiter::new(&redis, algorithm);
            assert!(limiter.check("ip:1", per_minute(10), now).await.allowed);
            let ttl: i64 = redis::cmd("PTTL")
                .arg(format!("{}rl:{tag}:ip:1", redis.prefix))
                .query_async(&mut redis.conn.clone())
                .await
                .expect("pttl");
            assert!((1..=longest).contains(&ttl), "{algorithm:?}: {ttl} ms");
        }
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_to_memory_without_stalling() {
        // Nothing listens on port 1; the connection manager would keep retrying for seconds.
        let redis = Redis::connect("redis://127.0.0.1:1", "test:").expect("client");
        let limiter = RedisLimiter::new(&redis, Algorithm::FixedWindow);
        let quota = per_minute(3);
        let started = std::time::Instant::now();
        for remaining in (0..3).rev() {
            let decision = limiter.check("k", quota, T0).await;
            assert_eq!(decision, admitted(true, remaining, 60, 3));
        }
        assert_eq!(limiter.check("k", quota, T0).await, refused(3, 60, 60));
        assert!(!limiter.healthy());
        // One probe timed out; the other calls did not wait for Redis.
        let waited = started.elapsed();
        assert!(waited < REDIS_TIMEOUT * 3, "{waited:?}");
        // A second later (caller's clock) it is tried again, and still fails over.
        assert_eq!(
            limiter.check("k", quota, T0 + 60_000).await,
            admitted(true, 2, 60, 3)
        );
        assert!(!limiter.healthy());
    }

    #[tokio::test]
    async fn after_a_failure_redis_is_tried_again_a_second_later() {
        let Some(redis) = redis() else {
            return;
        };
        let limiter = RedisLimiter::new(&redis, Algorithm::FixedWindow);
        // As if Redis had failed at T0.
        limiter
            .probe_at
            .store(T0 + PROBE_EVERY_MS, Ordering::Relaxed);
        let key = format!("{}rl:fw:k", redis.prefix);
        let exists = async || -> bool {
            redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut redis.conn.clone())
                .await
                .expect("exists")
        };
        assert!(limiter.check("k", per_minute(3), T0 + 500).await.allowed);
        assert!(!exists().await, "decided in memory, without trying Redis");
        assert!(!limiter.healthy());
        assert!(limiter.check("k", per_minute(3), T0 + 1_000).await.allowed);
        assert!(exists().await, "decided in Redis again");
        assert!(limiter.healthy());
    }

    #[test]
    fn memory_stays_within_its_cap() {
        for algorithm in ALGORITHMS {
            for cap in [1, 64, 10_000] {
                let limiter = MemoryLimiter::with_capacity(algorithm, cap);
                for i in 0..30_000 {
                    let decision = limiter.decide(&format!("client-{i}"), per_minute(5), T0 + i);
                    assert!(decision.allowed);
                    assert!(limiter.keys() <= cap, "{algorithm:?} cap {cap}");
                }
                assert!(
                    limiter.keys() > cap / 2,
                    "{algorithm:?} cap {cap}: not emptied"
                );
            }
        }
    }

    #[test]
    fn a_full_limiter_forgets_expired_keys_before_live_ones() {
        let limiter = MemoryLimiter::with_capacity(Algorithm::FixedWindow, 8);
        // Idle longest, but its hour-long window is still running.
        let hourly = Quota {
            requests: 1,
            window_ms: 3_600_000,
        };
        assert!(limiter.decide("hourly", hourly, T0).allowed);
        let second = Quota {
            requests: 1,
            window_ms: 1_000,
        };
        for i in 0..7 {
            assert!(
                limiter
                    .decide(&format!("brief-{i}"), second, T0 + 1)
                    .allowed
            );
        }
        assert_eq!(limiter.keys(), 8);
        // Full; the one-second windows are over, the hour is not.
        assert!(limiter.decide("new", second, T0 + 5_000).allowed);
        assert_eq!(limiter.keys(), 2);
        assert!(
            !limiter.decide("hourly", hourly, T0 + 5_000).allowed,
            "still counted"
        );

        // Full of live keys: the ones idle longest go.
        let limiter = MemoryLimiter::with_capacity(Algorithm::FixedWindow, 8);
        for i in 0..8 {
            assert!(limiter.decide(&format!("k{i}"), hourly, T0 + i).allowed);
        }
        assert!(
            !limiter.decide("k0", hourly, T0 + 100).allowed,
            "k0 seen again"
        );
        assert!(limiter.decide("k8", hourly, T0 + 101).allowed);
        assert_eq!(limiter.keys(), 7, "a quarter evicted, one added");
        assert!(!limiter.decide("k0", hourly, T0 + 102).allowed, "k0 kept");
        assert!(
            limiter.decide("k1", hourly, T0 + 103).allowed,
            "k1 forgotten"
        );
    }
}
