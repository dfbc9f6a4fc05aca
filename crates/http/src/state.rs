//! Shared state of the HTTP layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrobase_auth::{JwtKeys, Passwords};
use ferrobase_cluster::cache::ReadCache;
use ferrobase_cluster::{Counter, Redis};
use ferrobase_query::cursor::CursorCodec;
use ferrobase_schema::settings::Secret;
use ferrobase_schema::settings::ServerCache;
use ferrobase_schema::{Resource, Schema, Settings, USERS};
use ferrobase_store::{ResourceId, Store};

use ferrobase_access::Policy;

pub use ferrobase_records::{Clock, SystemClock};

/// Everything a request handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

/// Login attempts allowed in one window: per account and address, per account (from
/// anywhere), per address.
const LOGIN_FAILURES_PER_PAIR: u32 = 10;
const LOGIN_FAILURES_PER_ACCOUNT: u32 = 100;
const LOGIN_FAILURES_PER_IP: u32 = 50;
const REGISTRATIONS_PER_IP: u32 = 20;
/// Verification and reset mails one client, or one address, may ask for per window.
const EMAIL_REQUESTS: u32 = 5;
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
    /// Signs and verifies the tokens of sign-ins waiting for their second factor.
    pub mfa_tokens: ferrobase_auth::mfa::MfaTokens,
    /// The OAuth / OpenID providers of `[auth.oauth]`.
    pub oauth: ferrobase_oauth::Providers,
    /// The WebAuthn relying party of `[auth.passkeys]` (`None`: passkeys off).
    pub passkeys: Option<webauthn_rs::Webauthn>,
    /// Signs the `state` of OAuth sign-ins.
    pub oauth_key: [u8; 32],
    /// Keys the stored hashes of recovery codes.
    pub recovery_key: [u8; 32],
    /// Seeds the hash of list ETags (derived from the secret, so every node agrees).
    pub etag_seed: u64,
    /// Password hashing.
    pub passwords: Passwords,
    /// Key of session CSRF tokens.
    /// Keys of the sessions' CSRF tokens: the current secret's, then the previous one's
    /// (`FERROBASE_SECRET_PREVIOUS`), so a rotation does not break live browser tabs.
    pub csrf_keys: Vec<[u8; 32]>,
    /// The record service: every read and write of records goes through it.
    pub records: ferrobase_records::Records,
    /// Realtime subscriptions (started by the binary: [`ferrobase_realtime::Realtime::start`]).
    pub realtime: ferrobase_realtime::Realtime,
    /// The job service (`None` until the binary hands one over).
    pub jobs: Option<ferrobase_jobs::Jobs>,
    /// The GraphQL API (`None` when `[graphql] enabled = false`).
    pub graphql: Option<ferrobase_graphql::Graphql>,
    /// The persisted GraphQL documents (`graphql/*.graphql`).
    pub graphql_documents: ferrobase_graphql::Persisted,
    /// Failed logins per account and client address.
    pub pair_throttle: Counter,
    /// Failed logins per account.
    pub account_throttle: Counter,
    /// Failed logins and registrations per client address.
    pub ip_throttle: Counter,
    /// Registrations per client address.
    pub register_throttle: Counter,
    /// Email flow requests per client and per address.
    pub email_throttle: Counter,
    /// The shared Redis, when configured.
    pub redis: Option<Redis>,
    /// Bounds concurrent password hashing (19 MiB each).
    pub hashing: tokio::sync::Semaphore,
    /// The rate limiter, unless rate limiting is off.
    pub limits: Option<crate::ratelimit::Limits>,
    /// The server-side cache of public reads, when configured.
    pub read_cache: Option<Arc<ReadCache>>,
    /// `Cache-Control` of public reads, per resource in schema order.
    pub public_cache_control: Vec<axum::http::HeaderValue>,
    /// Prometheus metrics of this node.
    pub metrics: crate::metrics::Metrics,
    /// The OpenAPI document, serialized once.
    pub openapi: axum::body::Bytes,
}

/// Builds an [`AppState`]: Redis and the clock are injected (tests control time without
/// sleeping).
pub struct AppStateBuilder {
    schema: Arc<Schema>,
    settings: Arc<Settings>,
    store: Store,
    redis: Option<Redis>,
    clock: Arc<dyn Clock>,
    jobs: Option<ferrobase_jobs::Jobs>,
    graphql_documents: ferrobase_graphql::Persisted,
}

impl AppStateBuilder {
    /// Serves these persisted GraphQL documents (`graphql/*.graphql`).
    pub fn graphql_documents(mut self, documents: ferrobase_graphql::Persisted) -> Self {
        self.graphql_documents = documents;
        self
    }

    /// Uses the shared Redis (rate limits, throttles, read cache across nodes).
    pub fn redis(mut self, redis: Option<Redis>) -> Self {
        self.redis = redis;
        self
    }

    /// Uses `clock` instead of the system's.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Serves the job API with this job service.
    pub fn jobs(mut self, jobs: ferrobase_jobs::Jobs) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Builds the state; keys are derived from the settings' secret.
    pub fn build(self) -> AppState {
        AppState::build(self)
    }
}

/// The GraphQL limits and switches of `settings`.
pub fn graphql_options(settings: &Settings) -> ferrobase_graphql::Options {
    let g = &settings.graphql;
    ferrobase_graphql::Options {
        max_depth: g.max_depth,
        max_complexity: g.max_complexity,
        max_records: g.max_records,
        introspection: g.introspection,
    }
}

/// Forgets every cached public read after a committed write, on every node sharing the
/// cache, before the writer hears back (so it reads its own write).
struct ForgetCachedReads(Arc<ReadCache>);

impl ferrobase_records::WriteEffect for ForgetCachedReads {
    fn after_commit(
        &self,
        _writes: Arc<[ferrobase_records::Written]>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let cache = self.0.clone();
        Box::pin(async move { cache.invalidate().await })
    }
}

impl AppState {
    /// A builder with the system clock and no Redis.
    pub fn builder(schema: Arc<Schema>, settings: Arc<Settings>, store: Store) -> AppStateBuilder {
        AppStateBuilder {
            schema,
            settings,
            store,
            redis: None,
            clock: Arc::new(SystemClock),
            jobs: None,
            graphql_documents: ferrobase_graphql::Persisted::default(),
        }
    }

    /// Builds the state with the system clock.
    pub fn new(
        schema: Arc<Schema>,
        settings: Arc<Settings>,
        store: Store,
        redis: Option<Redis>,
    ) -> Self {
        Self::builder(schema, settings, store).redis(redis).build()
    }

    fn build(
        AppStateBuilder {
            schema,
            settings,
            store,
            redis,
            clock,
            jobs,
            graphql_documents,
        }: AppStateBuilder,
    ) -> Self {
        let secret = settings.secret.clone().unwrap_or_else(|| Secret::new(""));
        let previous = settings.secret_previous.as_ref();
        let cursors = CursorCodec::new(
            secret.derive("cursor"),
            previous.map(|s| s.derive("cursor")),
        );
        let limits = crate::ratelimit::Limits::new(&settings.rate_limit, redis.as_ref());
        let cache = &settings.cache;
        let read_cache = match (cache.server, redis.as_ref()) {
            (ServerCache::Off, _) => None,
            (ServerCache::Redis, Some(redis)) => {
                Some(Arc::new(ReadCache::redis(redis, cache.server_ttl)))
            }
            (ServerCache::Memory | ServerCache::Redis, _) => {
                if redis.is_some() {
                    tracing::warn!(
                        "[cache] server = \"memory\" with Redis configured: other nodes' writes will not invalidate this node's cache; use \"redis\""
                    );
                }
                Some(Arc::new(ReadCache::memory(
                    cache.server_capacity,
                    cache.server_ttl,
                )))
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
        let mut records =
            ferrobase_records::Records::builder(schema.clone(), store.clone(), cursors.clone())
                .clock(clock.clone());
        if let Some(cache) = &read_cache {
            records = records.effect(Arc::new(ForgetCachedReads(cache.clone())));
        }
        let records = records.build();
        let realtime = ferrobase_realtime::Realtime::new(
            records.clone(),
            settings.realtime.clone(),
            settings.events.retention,
        );
        let metrics = crate::metrics::Metrics::new(jobs.as_ref(), Some(realtime.metrics()));
        let graphql = settings.graphql.enabled.then(|| {
            ferrobase_graphql::Graphql::build(
                &schema,
                &graphql_options(&settings),
                Some(ferrobase_graphql::Services {
                    records: records.clone(),
                    realtime: Some(realtime.clone()),
                    problems: crate::graphql::problems(),
                }),
            )
        });
        let graphql = match graphql {
            Some(Ok(graphql)) => Some(graphql),
            Some(Err(e)) => {
                // `serve` checks the schema's GraphQL names before it starts.
                tracing::error!(error = %e, "GraphQL is off: the schema's names conflict");
                None
            }
            None => None,
        };
        Self(Arc::new(App {
            jwt: JwtKeys::derive(&secret, previous),
            mfa_tokens: ferrobase_auth::mfa::MfaTokens::new(secret.derive("mfa")),
            recovery_key: secret.derive("recovery-codes"),
            etag_seed: {
                let key = secret.derive("list-etag");
                u64::from_le_bytes(key[..8].try_into().unwrap_or_default())
            },
            oauth: ferrobase_oauth::Providers::new(&settings.auth.oauth).unwrap_or_else(|e| {
                tracing::error!(error = %e, "OAuth sign-in is off");
                ferrobase_oauth::Providers::none()
            }),
            oauth_key: secret.derive("oauth-state"),
            passkeys: settings.auth.passkeys.as_ref().and_then(|p| {
                crate::auth::passkeys::relying_party(p)
                    .map_err(|e| tracing::error!(error = %e, "passkeys are off"))
                    .ok()
            }),
            csrf_keys: std::iter::once(secret.derive("csrf"))
                .chain(previous.map(|s| s.derive("csrf")))
                .collect(),
            passwords: Passwords::default(),
            cursors,
            records,
            realtime,
            jobs,
            graphql,
            graphql_documents,
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
            limits,
            read_cache,
            public_cache_control,
            metrics,
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
            email_throttle: Counter::new(
                redis.as_ref(),
                "email",
                EMAIL_REQUESTS,
                THROTTLE_WINDOW_SECS,
            ),
            redis,
            schema,
            settings,
            store,
            clock,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Marks the start of shutdown: `/ready` answers 503, realtime streams end with a
    /// final `shutdown` message.
    pub fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
        self.0.realtime.shutdown();
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
        self.records.policy(res)
    }

    /// Whether any rule needs user fields beyond id and role (then they are loaded).
    pub fn rules_need_user(&self) -> bool {
        self.records.rules_need_user()
    }
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
