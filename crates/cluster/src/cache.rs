//! The server-side cache of public reads: responses to anonymous GETs, kept in this
//! node's memory or in Redis, and forgotten on every write.
//!
//! Invalidation is by generation: every write bumps one counter (in Redis, for every
//! node at once), and entries are stored under the generation that was current when the
//! read *began*. A read that raced a write therefore files its answer under a generation
//! nobody asks for any more, and can never serve stale data afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Redis;

/// One cached response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// Its `ETag`.
    pub etag: String,
    /// Its `Cache-Control`.
    pub cache_control: String,
    /// The JSON body.
    pub body: String,
}

/// A read cache, in memory or in Redis.
pub enum ReadCache {
    /// This node only.
    Memory(MemoryCache),
    /// Every node; invalidated everywhere at once.
    Redis(RedisCache),
}

/// Most bytes of bodies the memory cache keeps, whatever its entry capacity.
const MAX_MEMORY_BYTES: usize = 64 << 20;

/// The in-memory cache: bounded in entries and bytes, cleared on every write.
pub struct MemoryCache {
    state: Mutex<MemoryState>,
    capacity: usize,
    ttl: Duration,
}

struct MemoryState {
    generation: u64,
    entries: HashMap<String, (Instant, Arc<CachedResponse>)>,
    /// Bytes of the bodies in `entries`.
    bytes: usize,
}

impl MemoryState {
    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// The Redis cache.
pub struct RedisCache {
    redis: Redis,
    ttl: Duration,
    /// The connection's recovery count when this cache last reconciled: after an outage,
    /// writes may have happened that could not invalidate, so the generation is bumped
    /// before the cache is used again.
    reconciled: std::sync::atomic::AtomicU64,
}

/// Looks the generation up and the entry filed under it, in one round trip.
const LOOKUP: &str = r"
local g = redis.call('GET', KEYS[1]) or '0'
local v = redis.call('GET', ARGV[1] .. g .. ':' .. ARGV[2])
return {g, v}
";

impl ReadCache {
    /// A cache in this node's memory.
    pub fn memory(capacity: usize, ttl: Duration) -> Self {
        Self::Memory(MemoryCache {
            state: Mutex::new(MemoryState {
                generation: 0,
                entries: HashMap::new(),
                bytes: 0,
            }),
            capacity: capacity.max(1),
            ttl,
        })
    }

    /// A cache in Redis, shared by every node.
    pub fn redis(redis: &Redis, ttl: Duration) -> Self {
        Self::Redis(RedisCache {
            redis: redis.clone(),
            ttl,
            reconciled: std::sync::atomic::AtomicU64::new(redis.recoveries()),
        })
    }

    /// The current generation and the entry for `key` in it, if any. `None` when the
    /// cache cannot be reached (the caller then neither reads nor fills it).
    pub async fn get(&self, key: &str) -> Option<(u64, Option<Arc<CachedResponse>>)> {
        match self {
            Self::Memory(m) => {
                let state = m.state.lock().ok()?;
                let entry = state
                    .entries
                    .get(key)
                    .filter(|(expires, _)| *expires > Instant::now())
                    .map(|(_, e)| e.clone());
                Some((state.generation, entry))
            }
            Self::Redis(r) => {
                if !r.reconcile().await {
                    return None;
                }
                let (generation_key, prefix) = (r.generation_key(), r.entry_prefix());
                let result = r
                    .redis
                    .call("cache lookup", |mut conn| async move {
                        redis::Script::new(LOOKUP)
                            .key(generation_key)
                            .arg(prefix)
                            .arg(key)
                            .invoke_async::<(String, Option<String>)>(&mut conn)
                            .await
                    })
                    .await;
                // Unreachable: the read is neither served from nor filed into the cache.
                let (generation, entry) = result.ok()?;
                if r.redis.recoveries() != r.reconciled.load(std::sync::atomic::Ordering::Acquire) {
                    // This very call found Redis back after an outage: what it read may
                    // predate writes that could not invalidate. Forget first.
                    r.reconcile().await;
                    return None;
                }
                Some((
                    generation.parse().unwrap_or(0),
                    entry
                        .and_then(|e| serde_json::from_str::<CachedResponse>(&e).ok())
                        .map(Arc::new),
                ))
            }
        }
    }

    /// Files a response under `generation` (the one current when the read began).
    pub async fn put(&self, generation: u64, key: &str, entry: CachedResponse) {
        match self {
            Self::Memory(m) => {
                let Ok(mut state) = m.state.lock() else {
                    return;
                };
                if state.generation != generation {
                    return;
                }
                let now = Instant::now();
                let size = entry.body.len();
                if size > MAX_MEMORY_BYTES {
                    return;
                }
                let full = |s: &MemoryState| {
                    s.entries.len() >= m.capacity || s.bytes + size > MAX_MEMORY_BYTES
                };
                if full(&state) {
                    state.entries.retain(|_, (expires, _)| *expires > now);
                    state.bytes = state.entries.values().map(|(_, e)| e.body.len()).sum();
                }
                if full(&state) {
                    // Still full of live entries: start over rather than grow.
                    state.clear();
                }
                let old = state
                    .entries
                    .insert(key.to_owned(), (now + m.ttl, Arc::new(entry)));
                state.bytes = state.bytes + size - old.map_or(0, |(_, e)| e.body.len());
            }
            Self::Redis(r) => {
                let Ok(value) = serde_json::to_string(&entry) else {
                    return;
                };
                let key = format!("{}{generation}:{key}", r.entry_prefix());
                let ttl_ms = u64::try_from(r.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                let _ = r
                    .redis
                    .call("cache fill", |mut conn| async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut conn)
                            .await
                    })
                    .await;
            }
        }
    }

    /// Forgets every entry (a write happened), on every node sharing the cache.
    pub async fn invalidate(&self) {
        match self {
            Self::Memory(m) => {
                if let Ok(mut state) = m.state.lock() {
                    state.generation += 1;
                    state.clear();
                }
            }
            Self::Redis(r) => {
                if r.bump().await.is_err() {
                    tracing::error!(
                        "Redis unavailable; the read cache is not used until it answers again, then it forgets everything"
                    );
                }
            }
        }
    }
}

impl RedisCache {
    /// Starts a new generation: every entry filed before is forgotten, on every node.
    async fn bump(&self) -> Result<(), crate::RedisDown> {
        let key = self.generation_key();
        self.redis
            .call("cache invalidation", |mut conn| async move {
                redis::cmd("INCR")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
            .map(drop)
    }

    /// After an outage, forgets everything before the cache is used again (writes made
    /// meanwhile could not invalidate it); `false` while that cannot be done.
    async fn reconcile(&self) -> bool {
        use std::sync::atomic::Ordering;
        let recoveries = self.redis.recoveries();
        if self.reconciled.load(Ordering::Acquire) == recoveries {
            return true;
        }
        if self.bump().await.is_err() {
            return false;
        }
        self.reconciled.store(recoveries, Ordering::Release);
        true
    }

    fn generation_key(&self) -> String {
        format!("{}cache:generation", self.redis.prefix())
    }

    fn entry_prefix(&self) -> String {
        format!("{}cache:entry:", self.redis.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str) -> CachedResponse {
        CachedResponse {
            etag: "W/\"1\"".into(),
            cache_control: "public, no-cache".into(),
            body: body.into(),
        }
    }

    async fn invalidation_and_races(one: &ReadCache, two: &ReadCache) {
        let (generation, hit) = one.get("k").await.expect("reachable");
        assert_eq!(hit, None);
        one.put(generation, "k", entry("first")).await;
        let (_, hit) = two.get("k").await.expect("reachable");
        let shared = matches!(two, ReadCache::Redis(_));
        if shared {
            assert_eq!(hit.as_deref(), Some(&entry("first")), "shared across nodes");
        }
        let (_, hit) = one.get("k").await.expect("reachable");
        assert_eq!(hit.as_deref(), Some(&entry("first")));

        // A write anywhere forgets it.
        two.invalidate().await;
        let (_, hit) = one.get("k").await.expect("reachable");
        if shared {
            assert_eq!(hit, None, "invalidated on the other node too");
        }

        // A read that began before a write cannot file its (stale) answer after it.
        let (before, _) = one.get("race").await.expect("reachable");
        one.invalidate().await;
        one.put(before, "race", entry("stale")).await;
        let (_, hit) = one.get("race").await.expect("reachable");
        assert_eq!(hit, None, "stale answer was not served");
    }

    #[tokio::test]
    async fn memory_cache_forgets_on_write_and_stays_bounded() {
        let cache = ReadCache::memory(3, Duration::from_secs(60));
        invalidation_and_races(&cache, &cache).await;
        let (generation, _) = cache.get("x").await.expect("memory");
        for i in 0..10 {
            cache.put(generation, &format!("k{i}"), entry("b")).await;
        }
        let ReadCache::Memory(m) = &cache else {
            unreachable!("built as memory")
        };
        assert!(m.state.lock().expect("lock").entries.len() <= 3);
    }

    #[tokio::test]
    async fn redis_cache_is_shared_and_invalidated_across_nodes() {
        let Some(url) = ferrobase_testkit::services::redis() else {
            return;
        };
        let prefix = format!("test-{}:", uuid::Uuid::new_v4().simple());
        let one = ReadCache::redis(
            &Redis::connect(&url, &prefix).expect("redis"),
            Duration::from_secs(60),
        );
        let two = ReadCache::redis(
            &Redis::connect(&url, &prefix).expect("redis"),
            Duration::from_secs(60),
        );
        invalidation_and_races(&one, &two).await;
    }
}
