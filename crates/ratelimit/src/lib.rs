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
//!
//! The shared arithmetic and state machine live here; [`MemoryLimiter`] is in `memory.rs`,
//! [`RedisLimiter`] and its Lua scripts in `redis.rs`.

mod memory;
mod redis;

pub use self::memory::MemoryLimiter;
pub use self::redis::RedisLimiter;

use std::future::Future;
use std::pin::Pin;

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
/// nothing. Mirrored by the Lua scripts in `redis.rs`, line for line.
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

#[cfg(test)]
mod tests;
