//! Shared state of the HTTP layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrobase_auth::{JwtKeys, Passwords};
use ferrobase_query::cursor::CursorCodec;
use ferrobase_schema::settings::Secret;
use ferrobase_schema::settings::ServerCache;
use ferrobase_schema::{Resource, Schema, Settings, USERS};
use ferrobase_shared::cache::ReadCache;
use ferrobase_shared::{Counter, Redis};
use ferrobase_store::{ResourceId, Store};
use time::OffsetDateTime;

use ferrobase_access::Policy;

/// Where the current time comes from, so tests can control it.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Everything a request handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

/// Login attempts allowed in one window: per account and address, per account (from
/// anywhere), per address.
const LOGIN_FAILURES_PER_PAIR: u32 = 10;
const LOGIN_FAILURES_PER_ACCOUNT: u32 = 100;
const LOGIN_FAILURES_PER_IP: u32 = 50;
const REGISTRATIONS_PER_IP: u32 = 20;
const THROTTLE_WINDOW_SECS: i64 = 15 * 60;

/// The application behind [`AppState`].
pub struct App {
    /// The loaded data model.
    pub schema: Arc<Schema>,
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// The data store.
    pub store: Store,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Set when shutdown begins: `/ready` answers 503 from then on.
    pub shutting_down: AtomicBool,
    /// Signs and verifies list cursors (keys derived from the secret).
    pub cursors: CursorCodec,
    /// Signs and verifies access tokens.
    pub jwt: JwtKeys,
    /// Password hashing.
    pub passwords: Passwords,
    /// Key of session CSRF tokens.
    pub csrf_key: [u8; 32],
    /// Compiled rules, per resource in schema order.
    pub policies: Vec<Policy>,
    /// Failed logins per account and client address.
    pub pair_throttle: Counter,
    /// Failed logins per account.
    pub account_throttle: Counter,
    /// Failed logins and registrations per client address.
    pub ip_throttle: Counter,
    /// Registrations per client address.
    pub register_throttle: Counter,
    /// The shared Redis, when configured.
    pub redis: Option<Redis>,
    /// Bounds concurrent password hashing (19 MiB each).
    pub hashing: tokio::sync::Semaphore,
    /// Whether any rule needs user fields beyond id and role (then they are loaded).
    pub rules_need_user: bool,
    /// The rate limiter, unless rate limiting is off.
    pub limits: Option<crate::ratelimit::Limits>,
    /// The server-side cache of public reads, when configured.
    pub read_cache: Option<ferrobase_shared::cache::ReadCache>,
    /// `Cache-Control` of public reads, per resource in schema order.
    pub public_cache_control: Vec<axum::http::HeaderValue>,
    /// Prometheus metrics of this node.
    pub metrics: crate::metrics::Metrics,
    /// The OpenAPI document, serialized once.
    pub openapi: axum::body::Bytes,
}

impl AppState {
    /// Builds the state; keys are derived from the settings' secret.
    pub fn new(
        schema: Arc<Schema>,
        settings: Arc<Settings>,
        store: Store,
        redis: Option<Redis>,
    ) -> Self {
        let secret = settings.secret.clone().unwrap_or_else(|| Secret::new(""));
        let previous = settings.secret_previous.as_ref();
        let cursors = CursorCodec::new(
            secret.derive("cursor"),
            previous.map(|s| s.derive("cursor")),
        );
        let dialect = if store.is_postgres() {
            ferrobase_query::sql::Dialect::Postgres
        } else {
            ferrobase_query::sql::Dialect::Sqlite
        };
        let policies = Policy::compile_all(&schema, dialect);
        let limits = crate::ratelimit::Limits::new(&settings.rate_limit, redis.as_ref());
        let cache = &settings.cache;
        let read_cache = match (cache.server, redis.as_ref()) {
            (ServerCache::Off, _) => None,
            (ServerCache::Redis, Some(redis)) => Some(ReadCache::redis(redis, cache.server_ttl)),
            (ServerCache::Memory | ServerCache::Redis, _) => {
                if redis.is_some() {
                    tracing::warn!(
                        "[cache] server = \"memory\" with Redis configured: other nodes' writes will not invalidate this node's cache; use \"redis\""
                    );
                }
                Some(ReadCache::memory(cache.server_capacity, cache.server_ttl))
            }
        };
        let openapi = axum::body::Bytes::from(
            serde_json::to_vec(&crate::openapi_document(&schema, &settings)).unwrap_or_default(),
        );
        let public_cache_control = schema
            .resources
            .iter()
            .map(|r| {
                let age = cache
                    .resource_max_age
                    .iter()
                    .find(|(name, _)| *name == r.name)
                    .map_or(cache.public_max_age, |(_, age)| *age);
                crate::cache::public_cache_control(age)
            })
            .collect();
        let rules_need_user = policies.iter().any(Policy::needs_user_record);
        Self(Arc::new(App {
            jwt: JwtKeys::derive(&secret, previous),
            csrf_key: secret.derive("csrf"),
            passwords: Passwords::default(),
            cursors,
            policies,
            pair_throttle: Counter::new(
                redis.as_ref(),
                "login-pair",
                LOGIN_FAILURES_PER_PAIR,
                THROTTLE_WINDOW_SECS,
            ),
            account_throttle: Counter::new(
                redis.as_ref(),
                "login-account",
                LOGIN_FAILURES_PER_ACCOUNT,
                THROTTLE_WINDOW_SECS,
            ),
            hashing: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            ),
            rules_need_user,
            limits,
            read_cache,
            public_cache_control,
            metrics: crate::metrics::Metrics::new(),
            openapi,
            ip_throttle: Counter::new(
                redis.as_ref(),
                "login-ip",
                LOGIN_FAILURES_PER_IP,
                THROTTLE_WINDOW_SECS,
            ),
            register_throttle: Counter::new(
                redis.as_ref(),
                "register-ip",
                REGISTRATIONS_PER_IP,
                THROTTLE_WINDOW_SECS,
            ),
            redis,
            schema,
            settings,
            store,
            clock: Arc::new(SystemClock),
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
    }

    /// The built-in users resource.
    pub fn users(&self) -> (ResourceId, &Resource) {
        self.schema
            .resources
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == USERS)
            .map(|(i, r)| (ResourceId(i), r))
            .unwrap_or((ResourceId(0), &self.schema.resources[0]))
    }

    /// The compiled rules of a resource.
    pub fn policy(&self, res: ResourceId) -> &Policy {
        &self.policies[res.0]
    }
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
