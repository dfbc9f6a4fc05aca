//! The rate-limit middleware (SPEC §7): every API request counts against its client's
//! quota for its route class; `RateLimit-*` headers on every answer, `429 RATE_LIMITED`
//! with `Retry-After` beyond the quota.
//!
//! The client is the signed-in user, else the API key, else the address (through
//! `trusted_proxies`). The route class is `auth` for `/api/v1/auth/*` (keyed by address:
//! credentials are guessed there, by callers who have none), otherwise the most specific
//! of `[rate_limit] routes` for the resource and method, else the default.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferrobase_cluster::Redis;
use ferrobase_ratelimit::{Algorithm, Decision, MemoryLimiter, Quota, RateLimiter, RedisLimiter};
use ferrobase_schema::settings::{Limit, LimitStore, RateAlgorithm, RateLimitSettings};

use crate::error::ApiError;
use crate::identity::{Identity, client_key};
use crate::state::AppState;

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The headers the boundary keeps when it renders an error body.
pub(crate) const HEADERS: [&HeaderName; 4] = [&LIMIT, &REMAINING, &RESET, &POLICY];

/// The limiter and its classes, built once from the settings.
pub struct Limits {
    limiter: Backend,
    settings: RateLimitSettings,
    /// Class names, indexed like `RateLimitSettings::limit_for`'s counter number.
    classes: Vec<String>,
    /// `RateLimit-Policy` of each class, indexed like `classes`.
    policies: Vec<HeaderValue>,
    /// `RateLimit-Policy` of the `auth` class.
    auth_policy: HeaderValue,
}

/// The memory limiter is called directly (no boxed future per request); Redis through
/// its trait.
enum Backend {
    Memory(MemoryLimiter),
    Redis(Arc<dyn RateLimiter>),
}

impl Limits {
    /// The configured limiter, or `None` when rate limiting is off.
    pub fn new(settings: &RateLimitSettings, redis: Option<&Redis>) -> Option<Self> {
        if !settings.enabled {
            return None;
        }
        let algorithm = match settings.algorithm {
            RateAlgorithm::FixedWindow => Algorithm::FixedWindow,
            RateAlgorithm::SlidingWindow => Algorithm::SlidingWindow,
            RateAlgorithm::TokenBucket => Algorithm::TokenBucket,
        };
        let limiter = match (settings.store, redis) {
            (LimitStore::Memory, _) | (LimitStore::Auto | LimitStore::Redis, None) => {
                Backend::Memory(MemoryLimiter::new(algorithm))
            }
            (LimitStore::Auto | LimitStore::Redis, Some(redis)) => {
                Backend::Redis(Arc::new(RedisLimiter::new(redis, algorithm)))
            }
        };
        let classes = std::iter::once("default".to_owned())
            .chain(
                settings
                    .routes
                    .iter()
                    .map(|r| match (&r.resource, &r.method) {
                        (Some(res), Some(m)) => format!("{res}:{m}"),
                        (Some(res), None) => res.clone(),
                        (None, Some(m)) => m.clone(),
                        (None, None) => "default".into(),
                    }),
            )
            .collect();
        let policies = std::iter::once(settings.default)
            .chain(settings.routes.iter().map(|r| r.limit))
            .map(policy)
            .collect();
        Some(Self {
            limiter,
            settings: settings.clone(),
            classes,
            policies,
            auth_policy: policy(settings.auth),
        })
    }
}

fn quota(limit: Limit) -> Quota {
    Quota {
        requests: limit.requests,
        window_ms: u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX),
    }
}

/// `RateLimit-Policy` of a limit: `100;w=60`.
fn policy(limit: Limit) -> HeaderValue {
    HeaderValue::from_str(&format!("{};w={}", limit.requests, limit.window.as_secs()))
        .unwrap_or(HeaderValue::from_static("0;w=0"))
}

fn annotate(headers: &mut HeaderMap, decision: &Decision, policy: &HeaderValue) {
    headers.insert(LIMIT.clone(), HeaderValue::from(decision.limit));
    headers.insert(REMAINING.clone(), HeaderValue::from(decision.remaining));
    headers.insert(RESET.clone(), HeaderValue::from(decision.reset_secs));
    headers.insert(POLICY.clone(), policy.clone());
}

/// Counts the request and refuses it beyond the quota, else runs it (called by
/// [`crate::identity::authenticate`] once the caller is known).
pub(crate) async fn rate_limit(state: &AppState, req: Request, next: Next) -> Response {
    let Some(limits) = state.limits.as_ref() else {
        return next.run(req).await;
    };
    let (class, key) = classify(state, limits, &req);
    let decision = match limits.refuse(state, class, &key).await {
        Ok(decision) => decision,
        Err(refused) => return refused,
    };
    let mut res = next.run(req).await;
    annotate(res.headers_mut(), &decision, class.policy);
    res
}

/// A route class: its name, limit and `RateLimit-Policy`.
#[derive(Clone, Copy)]
struct Class<'l> {
    name: &'l str,
    limit: Limit,
    policy: &'l HeaderValue,
}

/// The route class of a request and the counter key of its client.
fn classify<'l>(state: &AppState, limits: &'l Limits, req: &Request) -> (Class<'l>, String) {
    let path = req.uri().path();
    if path.starts_with("/api/v1/auth/") {
        let class = Class {
            name: "auth",
            limit: limits.settings.auth,
            policy: &limits.auth_policy,
        };
        return (class, format!("auth:{}", client_key(state, req)));
    }
    let resource = path
        .strip_prefix("/api/v1/")
        .and_then(|rest| rest.split('/').next())
        .filter(|name| state.schema.resource(name).is_some());
    let class = limits.class(resource, req.method().as_str());
    let mut key = format!("{}:", class.name);
    push_client(state, req, &mut key);
    (class, key)
}

/// Whose quota a request counts against: the signed-in user (whether by token, cookie or
/// any of their API keys: minting keys must not multiply a quota), or the address.
pub(crate) fn client(state: &AppState, req: &Request) -> String {
    let mut key = String::new();
    push_client(state, req, &mut key);
    key
}

/// Appends [`client`] to `key` (one string per request on the hot path).
fn push_client(state: &AppState, req: &Request, key: &mut String) {
    match req
        .extensions()
        .get::<Identity>()
        .and_then(Identity::caller)
    {
        Some(caller) => {
            key.push_str("user:");
            key.push_str(&caller.id);
        }
        None => key.push_str(&client_key(state, req)),
    }
}

impl Limits {
    fn class(&self, resource: Option<&str>, method: &str) -> Class<'_> {
        let (limit, n) = self.settings.limit_for(resource, method);
        Class {
            name: self.classes.get(n).map_or("default", String::as_str),
            limit,
            policy: self.policies.get(n).unwrap_or(&self.auth_policy),
        }
    }

    async fn refuse(
        &self,
        state: &AppState,
        class: Class<'_>,
        key: &str,
    ) -> Result<Decision, Response> {
        let limit = class.limit;
        let now_ms =
            i64::try_from(state.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let decision = match &self.limiter {
            Backend::Memory(memory) => memory.decide(key, quota(limit), now_ms),
            Backend::Redis(redis) => redis.check(key, quota(limit), now_ms).await,
        };
        if decision.allowed {
            return Ok(decision);
        }
        state.metrics.rate_limited(class.name);
        let mut res = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "too many requests; {} allowed per {}s, try again in {}s",
                limit.requests,
                limit.window.as_secs(),
                decision.retry_after_secs
            ),
        )
        .into_response();
        annotate(res.headers_mut(), &decision, class.policy);
        res.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(decision.retry_after_secs.max(1)),
        );
        Err(res)
    }
}

/// Charges each operation of a batch to its own route class, so that a batch of a
/// hundred writes cannot sidestep a resource's limit; the refusal answers the batch.
pub(crate) async fn charge_operations(
    state: &AppState,
    client: String,
    operations: &[(&str, &str)],
) -> Result<(), Response> {
    let Some(limits) = state.limits.as_ref() else {
        return Ok(());
    };
    for (resource, method) in operations {
        let class = limits.class(Some(resource), method);
        limits
            .refuse(state, class, &format!("{}:{client}", class.name))
            .await?;
    }
    Ok(())
}

/// Charges one GraphQL operation sent over a WebSocket to the default quota of `client`
/// (`user:<id>` or the address key), as a POST of it would be; the refusal's message
/// when the quota is spent.
pub(crate) async fn charge_operation(state: &AppState, client: &str) -> Result<(), String> {
    let Some(limits) = state.limits.as_ref() else {
        return Ok(());
    };
    let class = limits.class(None, "POST");
    match limits
        .refuse(state, class, &format!("{}:{client}", class.name))
        .await
    {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "too many requests; {} allowed per {}s",
            class.limit.requests,
            class.limit.window.as_secs()
        )),
    }
}

/// Counts a request whose credentials were refused against its address's `auth` quota,
/// so that guessing tokens or API keys is as limited as guessing passwords. `Some` is
/// the 429 once the quota is spent.
pub(crate) async fn charge_failed_authentication(
    state: &AppState,
    client_key: String,
) -> Option<Response> {
    let limits = state.limits.as_ref()?;
    let key = format!("auth:{client_key}");
    let class = Class {
        name: "auth",
        limit: limits.settings.auth,
        policy: &limits.auth_policy,
    };
    limits.refuse(state, class, &key).await.err()
}
