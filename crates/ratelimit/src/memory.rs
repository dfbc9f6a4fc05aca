//! [`MemoryLimiter`]: the rate-limit state of this process only, in sharded maps.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use super::{
    Algorithm, Decision, Limits, Quota, RateLimiter, State, clamp_now, expires_at, refuse_all,
    report, step,
};

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

    /// The decision for one request of `key` at `now_ms`, counted if allowed (what
    /// [`RateLimiter::check`] answers, without a future: memory never waits).
    pub fn decide(&self, key: &str, quota: Quota, now_ms: i64) -> Decision {
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
    pub(super) fn keys(&self) -> usize {
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
