//! What the stores add: exact counts under concurrency, one limit across nodes, Redis
//! agreeing with memory, key expiry, falling back when Redis fails, and bounded memory.

use super::*;
use crate::redis::{LUA_LE, PROBE_EVERY_MS, REDIS_TIMEOUT};
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
        let two = Redis::connect(&url, one.prefix()).expect("redis");
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
    let script = ::redis::Script::new(&format!(
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
    let mut conn = redis.connection();
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
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(format!("{}rl:{tag}:ip:1", redis.prefix()))
            .query_async(&mut redis.connection())
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
    let key = format!("{}rl:fw:k", redis.prefix());
    let exists = async || -> bool {
        ::redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut redis.connection())
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
