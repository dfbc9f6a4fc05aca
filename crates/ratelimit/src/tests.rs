//! The algorithms' behaviour, the same on both stores; the stores' own properties are tested
//! in `tests/stores.rs`.

use super::*;
use ferrobase_cluster::Redis;

mod stores;

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
