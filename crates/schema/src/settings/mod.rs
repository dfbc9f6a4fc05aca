//! `ferrobase.toml` + environment → one typed [`Settings`], validated as a whole.
//!
//! Every key can come from the file or from `FERROBASE_<SECTION>__<KEY>`; the environment
//! wins. `DATABASE_URL`, `REDIS_URL` and `PORT` are honoured as well. Every problem is
//! reported at once, with its location, and secrets are never echoed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use ipnet::IpNet;
use toml_edit::Item;

use crate::diag::{Diagnostic, Diagnostics, SourceFile};
use crate::parse::suggest;

mod identity;
mod protection;

pub use identity::{OAUTH_PRESETS, OAuthProvider, PasskeySettings, ProviderKind};

pub use protection::{
    CacheSettings, CorsSettings, Limit, LimitStore, MetricsSettings, RateAlgorithm,
    RateLimitSettings, RouteLimit, ServerCache, parse_limit,
};

/// Shortest `FERROBASE_SECRET` production accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Which kind of deployment this is; production turns unsafe settings into errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local work: pretty logs, a generated secret.
    Development,
    /// A real deployment: guards on.
    Production,
    /// Automated tests.
    Test,
}

/// How request logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// A secret value: compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret's bytes, for key derivation.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// A 256-bit key for one purpose (`"cursor"`, ...), derived with HKDF-SHA256, so every
    /// node with the same secret derives the same keys and purposes never share one.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"ferrobase"), self.expose());
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so this cannot fail.
        let _ = hk.expand(purpose.as_bytes(), &mut key);
        key
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// All settings of one deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `FERROBASE_ENV`.
    pub env: Environment,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[redis]`.
    pub redis: RedisSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[rate_limit]`.
    pub rate_limit: RateLimitSettings,
    /// `[cors]`.
    pub cors: CorsSettings,
    /// `[cache]`.
    pub cache: CacheSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[events]`.
    pub events: EventSettings,
    /// `[jobs]`.
    pub jobs: JobSettings,
    /// `[webhooks]`: outbound HTTP (webhooks and HTTP job types).
    pub webhooks: WebhookSettings,
    /// `[email]`: how mail is sent.
    pub email: EmailSettings,
    /// `[realtime]`: SSE and WebSocket subscriptions.
    pub realtime: RealtimeSettings,
    /// `[graphql]`: the generated GraphQL API.
    pub graphql: GraphqlSettings,
    /// `FERROBASE_SECRET`, when given (development generates one when absent).
    pub secret: Option<Secret>,
    /// `FERROBASE_SECRET_PREVIOUS`, still accepted during a rotation.
    pub secret_previous: Option<Secret>,
}

/// `[events]` settings: the event log every write appends to.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// How long events are kept (`retention`, default 24 h); older ones are trimmed.
    pub retention: Duration,
}

/// `[webhooks]` settings: what outbound HTTP (webhook deliveries and HTTP job types) may
/// reach, and how webhook deliveries are retried.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whether private, loopback and link-local destinations are allowed
    /// (`allow_private_addresses`, default false).
    pub allow_private_addresses: bool,
    /// Delays between delivery attempts (`retry_schedule`, default 5s, 5m, 30m, 2h, 5h,
    /// 10h, 10h); the delivery is dead after the last.
    pub retry_schedule: Vec<Duration>,
}

/// `[email]` settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// `smtps://user:pass@host:465`, or `smtp://host:port?tls=required` (STARTTLS); plain
    /// `smtp://` only for loopback hosts outside production. Without it, mail goes to
    /// `data/outbox/` as `.eml` files.
    pub smtp_url: Option<String>,
    /// The sender (`from`, default `ferrobase <noreply@localhost>`).
    pub from: String,
    /// Where the links in mail point: the app's pages (`link_base`, default
    /// `http://127.0.0.1:8090`).
    pub link_base: String,
    /// The limit on every phase of an SMTP conversation (`timeout`, default 10 s).
    pub timeout: Duration,
}

/// The default webhook retry schedule (SPEC §8).
pub const DEFAULT_RETRY_SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

/// `[realtime]` settings: subscriptions to record events over SSE and WebSocket.
#[derive(Debug, Clone)]
pub struct RealtimeSettings {
    /// How often an idle stream gets a heartbeat (`heartbeat`, default 15 s).
    pub heartbeat: Duration,
    /// Events queued per connection before it is cut off as too slow (`buffer`, 1000).
    pub buffer: usize,
    /// Bytes queued per connection before it is cut off (`buffer_bytes`, 1 MiB).
    pub buffer_bytes: usize,
    /// Open connections per user, or per client address for anonymous callers
    /// (`max_connections_per_user`, 20).
    pub max_connections_per_user: usize,
    /// Open connections on this node (`max_connections`, 10000).
    pub max_connections: usize,
    /// Subscriptions per WebSocket connection (`max_subscriptions`, 100).
    pub max_subscriptions: usize,
}

/// `[graphql]` settings: the GraphQL API generated from the schema.
#[derive(Debug, Clone)]
pub struct GraphqlSettings {
    /// Whether `/api/v1/graphql` is served (`enabled`, default true).
    pub enabled: bool,
    /// Whether the schema can be introspected (`introspection`; default on, off in
    /// production).
    pub introspection: bool,
    /// Accept only the documents of `graphql/*.graphql`, named by their SHA-256
    /// (`persisted_only`, default false).
    pub persisted_only: bool,
    /// Deepest selection (`max_depth`, default 10).
    pub max_depth: usize,
    /// Most fields an operation may select, each counted once (`max_complexity`, 1000).
    pub max_complexity: usize,
    /// Most records one operation may load, nested pages included (`max_records`,
    /// 10000).
    pub max_records: usize,
}

/// `[jobs]` settings: this node's worker.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Whether `serve` runs a worker beside the API (`worker`, default true).
    pub worker: bool,
    /// How long a running job's lease lasts before another node may take the job over
    /// (`lease`, default 30 s); the worker extends it while the job runs.
    pub lease: Duration,
    /// How often an idle worker looks for due jobs when no wake-up came (`poll`, 1 s).
    pub poll: Duration,
    /// Concurrency per queue on this node (`queues = ["default=10", "billing=2"]`).
    /// Queues not listed run one job at a time.
    pub queues: Vec<(String, usize)>,
}

impl JobSettings {
    /// How many jobs of `queue` this node runs at once.
    pub fn concurrency(&self, queue: &str) -> usize {
        self.queues
            .iter()
            .find(|(name, _)| name == queue)
            .map_or(1, |(_, n)| *n)
    }
}

/// `[server]` settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address.
    pub addr: SocketAddr,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Longest a request may take before it is answered with 503.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Where SQLite files and the development secret live, relative to the project.
    pub data_dir: String,
    /// Put internal error details in 500 responses (never in production).
    pub debug_errors: bool,
    /// Send `Strict-Transport-Security` (when served over HTTPS).
    pub hsts: bool,
    /// Compress responses (gzip, brotli) when the client accepts it.
    pub compression: bool,
    /// The address users reach this deployment at (`https://api.example.com`): OAuth
    /// callbacks and the passkey origin are built from it.
    pub public_url: Option<String>,
}

/// `[database]` settings.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://path` (relative to the project) or `postgres://...`.
    pub url: String,
    /// Reader connections (SQLite, default: one per core) or pool size (PostgreSQL,
    /// default 8).
    pub pool_size: usize,
    /// PostgreSQL: prepare each statement once per connection and keep it (the default).
    /// `false` sends every statement unprepared, for poolers in transaction mode
    /// (PgBouncer) where a connection's prepared statements are not the session's.
    pub statement_cache: bool,
    /// PostgreSQL: connections that every request's single-statement reads share,
    /// pipelined (default: one per two cores; 0 sends reads to the pool, one checked-out
    /// connection per read).
    pub read_connections: usize,
    /// PostgreSQL: most creates written by one statement (group commit: the creates that
    /// arrive while earlier ones are being written are written together; default 32; 1
    /// writes each create on its own).
    pub create_batch: usize,
    /// PostgreSQL: most statements writing queued creates at a time, each on a pooled
    /// connection (default 2).
    pub create_writers: usize,
}

/// `[redis]` settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://...`, when configured.
    pub url: Option<String>,
    /// Prefix of every key this deployment writes (several deployments may share a Redis).
    pub prefix: String,
}

/// `[auth]` settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_token_ttl: Duration,
    /// Mark session cookies `Secure` (required in production).
    pub cookie_secure: bool,
    /// Refuse to sign in accounts whose email is not verified.
    pub require_verified_email: bool,
    /// Exact URLs or origins a sign-in (OAuth) may send the browser back to.
    pub redirect_allowlist: Vec<String>,
    /// `[auth.oauth.<name>]` providers.
    pub oauth: Vec<OAuthProvider>,
    /// `[auth.passkeys]`; `None` when off or when no origin is known.
    pub passkeys: Option<PasskeySettings>,
}

impl AuthSettings {
    /// Whether a sign-in may return to `url`: it equals an allowed URL, or its origin is an
    /// allowed origin.
    pub fn redirect_allowed(&self, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            return false;
        };
        // A user name or password in the URL only serves to dress up another address.
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return false;
        }
        let origin = parsed.origin().ascii_serialization();
        self.redirect_allowlist.iter().any(|allowed| {
            let allowed = allowed.trim_end_matches('/');
            allowed == url.trim_end_matches('/')
                || (allowed == origin && url::Url::parse(allowed).is_ok_and(|a| a.path() == "/"))
        })
    }
}

/// `[log]` settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// Lowest level written: trace, debug, info, warn or error.
    pub level: String,
}

/// The keys that exist, by section.
const KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "addr",
            "body_limit",
            "request_timeout",
            "shutdown_timeout",
            "trusted_proxies",
            "data_dir",
            "debug_errors",
            "hsts",
            "compression",
            "public_url",
        ],
    ),
    (
        "database",
        &[
            "url",
            "pool_size",
            "statement_cache",
            "read_connections",
            "create_batch",
            "create_writers",
        ],
    ),
    ("redis", &["url", "prefix"]),
    (
        "auth",
        &[
            "access_token_ttl",
            "refresh_token_ttl",
            "cookie_secure",
            "require_verified_email",
            "redirect_allowlist",
            "oauth",
            "passkeys",
        ],
    ),
    (
        "rate_limit",
        &["enabled", "algorithm", "store", "default", "auth", "routes"],
    ),
    ("cors", &["allowed_origins", "allow_credentials", "max_age"]),
    (
        "cache",
        &[
            "public_max_age",
            "resource_max_age",
            "server",
            "server_ttl",
            "server_capacity",
        ],
    ),
    ("metrics", &["enabled", "token", "addr"]),
    ("log", &["format", "level"]),
    ("events", &["retention"]),
    ("jobs", &["worker", "lease", "poll", "queues"]),
    ("webhooks", &["allow_private_addresses", "retry_schedule"]),
    ("email", &["smtp_url", "from", "link_base", "timeout"]),
    (
        "realtime",
        &[
            "heartbeat",
            "buffer",
            "buffer_bytes",
            "max_connections_per_user",
            "max_connections",
            "max_subscriptions",
        ],
    ),
    (
        "graphql",
        &[
            "enabled",
            "introspection",
            "persisted_only",
            "max_depth",
            "max_complexity",
            "max_records",
        ],
    ),
];

/// Where one setting's raw value came from.
enum Raw<'a> {
    File(&'a Item),
    Env { var: String, value: String },
}

struct Loader<'a> {
    file: &'a SourceFile,
    values: BTreeMap<(String, String), Raw<'a>>,
    diags: Vec<Diagnostic>,
}

impl Settings {
    /// Loads settings from the text of `ferrobase.toml` (empty when the file is absent)
    /// and the given environment variables.
    pub fn load(file: &SourceFile, env: &BTreeMap<String, String>) -> Result<Self, Diagnostics> {
        let doc = match toml_edit::Document::parse(file.text()) {
            Ok(doc) => doc,
            Err(e) => {
                let message = format!("invalid TOML: {}", e.message().trim());
                return Err(Diagnostics(vec![file.diagnostic(e.span(), message, None)]));
            }
        };
        let mut loader = Loader {
            file,
            values: BTreeMap::new(),
            diags: Vec::new(),
        };
        loader.collect_file(doc.as_table());
        loader.collect_env(env);
        let settings = loader.build(env);
        if loader.diags.is_empty() {
            Ok(settings)
        } else {
            Err(Diagnostics(loader.diags))
        }
    }
}

fn env_diag(var: &str, message: impl fmt::Display) -> Diagnostic {
    Diagnostic {
        file: "environment".into(),
        line: 0,
        column: 0,
        message: format!("{var}: {message}"),
        hint: None,
    }
}

fn span_of(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

impl<'a> Loader<'a> {
    fn collect_file(&mut self, root: &'a toml_edit::Table) {
        let sections: Vec<&str> = KEYS.iter().map(|(s, _)| *s).collect();
        for (section, item) in root.iter() {
            let span = root.key(section).and_then(toml_edit::Key::span);
            let Some((_, keys)) = KEYS.iter().find(|(s, _)| *s == section) else {
                let hint = suggest(section, &sections)
                    .unwrap_or_else(|| format!("sections: {}", sections.join(", ")));
                self.diags.push(self.file.diagnostic(
                    span,
                    format!("unknown section [{section}]"),
                    Some(hint),
                ));
                continue;
            };
            let Some(table) = item.as_table_like() else {
                self.diags.push(self.file.diagnostic(
                    span,
                    format!("[{section}] must be a table"),
                    None,
                ));
                continue;
            };
            for (key, value) in table.iter() {
                if keys.contains(&key) {
                    self.values
                        .insert((section.to_owned(), key.to_owned()), Raw::File(value));
                } else {
                    let span = table
                        .get_key_value(key)
                        .and_then(|(k, v)| k.span().or_else(|| span_of(v)));
                    let hint = suggest(key, keys)
                        .unwrap_or_else(|| format!("keys of [{section}]: {}", keys.join(", ")));
                    self.diags.push(self.file.diagnostic(
                        span,
                        format!("unknown key '{key}' in [{section}]"),
                        Some(hint),
                    ));
                }
            }
        }
    }

    fn collect_env(&mut self, env: &BTreeMap<String, String>) {
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("FERROBASE_") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let known = KEYS
                .iter()
                .any(|(s, keys)| *s == section && keys.contains(&key.as_str()));
            if known {
                let raw = Raw::Env {
                    var: var.clone(),
                    value: value.clone(),
                };
                self.values.insert((section, key), raw);
            } else {
                self.diags.push(env_diag(var, "is not a ferrobase setting"));
            }
        }
        let aliases = [
            ("DATABASE_URL", "database", "url"),
            ("REDIS_URL", "redis", "url"),
        ];
        for (var, section, key) in aliases {
            if let Some(value) = env.get(var) {
                let raw = Raw::Env {
                    var: var.to_owned(),
                    value: value.clone(),
                };
                self.values
                    .insert((section.to_owned(), key.to_owned()), raw);
            }
        }
    }

    /// Reads one setting with `parse`, falling back to `default` and recording problems.
    /// A whole number from 1 to `max`.
    fn count(&mut self, section: &str, key: &str, default: usize, max: usize) -> usize {
        self.get(section, key, default, move |v| {
            usize::try_from(v.integer()?)
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("must be between 1 and {max}"))
        })
    }

    fn get<T>(
        &mut self,
        section: &str,
        key: &str,
        default: T,
        parse: impl Fn(Value<'_>) -> Result<T, String>,
    ) -> T {
        let Some(raw) = self.values.get(&(section.to_owned(), key.to_owned())) else {
            return default;
        };
        let (value, diag): (Value<'_>, Box<dyn Fn(String) -> Diagnostic>) = match raw {
            Raw::File(item) => {
                let span = span_of(item);
                let file = self.file;
                let name = format!("{section}.{key}");
                (
                    Value::Toml(item),
                    Box::new(move |m| file.diagnostic(span.clone(), format!("{name}: {m}"), None)),
                )
            }
            Raw::Env { var, value } => {
                let var = var.clone();
                (Value::Env(value), Box::new(move |m| env_diag(&var, m)))
            }
        };
        match parse(value) {
            Ok(v) => v,
            Err(message) => {
                self.diags.push(diag(message));
                default
            }
        }
    }

    fn build(&mut self, env: &BTreeMap<String, String>) -> Settings {
        let environment = match env.get("FERROBASE_ENV").map(String::as_str) {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some("test") => Environment::Test,
            Some(other) => {
                self.diags.push(env_diag(
                    "FERROBASE_ENV",
                    format!("unknown environment '{other}'; use development, production or test"),
                ));
                Environment::Development
            }
        };
        let production = environment == Environment::Production;
        let mut addr = self.get("server", "addr", default_addr(), |v| {
            v.string()?
                .parse::<SocketAddr>()
                .map_err(|_| "must be host:port, such as 127.0.0.1:8090".into())
        });
        if let Some(port) = env.get("PORT") {
            match port.parse::<u16>() {
                Ok(p) => addr.set_port(p),
                Err(_) => self
                    .diags
                    .push(env_diag("PORT", "must be a port number (0-65535)")),
            }
        }
        let server = ServerSettings {
            addr,
            body_limit: self.get("server", "body_limit", 1 << 20, |v| {
                parse_size(&v.string()?)
            }),
            request_timeout: self.get("server", "request_timeout", Duration::from_secs(30), |v| {
                positive(parse_duration(&v.string()?)?)
            }),
            shutdown_timeout: self.get(
                "server",
                "shutdown_timeout",
                Duration::from_secs(30),
                |v| parse_duration(&v.string()?),
            ),
            trusted_proxies: self.get("server", "trusted_proxies", Vec::new(), |v| {
                v.list()?
                    .iter()
                    .map(|s| {
                        s.parse::<IpNet>()
                            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                            .map_err(|_| format!("'{s}' is not an IP address or CIDR"))
                    })
                    .collect()
            }),
            data_dir: self.get("server", "data_dir", "data".to_owned(), |v| {
                v.string().and_then(|s| {
                    if s.is_empty() {
                        Err("must not be empty".into())
                    } else {
                        Ok(s)
                    }
                })
            }),
            debug_errors: self.get("server", "debug_errors", false, |v| v.bool()),
            hsts: self.get("server", "hsts", false, |v| v.bool()),
            compression: self.get("server", "compression", true, |v| v.bool()),
            public_url: self.public_url(),
        };
        let database = DatabaseSettings {
            url: self.get(
                "database",
                "url",
                "sqlite://data/ferrobase.db".to_owned(),
                |v| {
                    let url = v.string()?;
                    let known = ["sqlite://", "postgres://", "postgresql://"];
                    if known.iter().any(|p| url.starts_with(p)) {
                        Ok(url)
                    } else {
                        Err("must start with sqlite:// or postgres://".into())
                    }
                },
            ),
            pool_size: 0,
            statement_cache: true,
            read_connections: 0,
            create_batch: 32,
            create_writers: 2,
        };
        // The right default depends on the database: SQLite wants one reader per core,
        // PostgreSQL hides network latency with more connections (measured: 8 beats 2
        // by a third on get-one).
        let default_pool = if database.url.starts_with("sqlite://") {
            default_pool_size()
        } else {
            8
        };
        let database = DatabaseSettings {
            pool_size: self.get("database", "pool_size", default_pool, |v| v.count(1, 256)),
            statement_cache: self.get("database", "statement_cache", true, |v| v.bool()),
            read_connections: self.get(
                "database",
                "read_connections",
                default_read_connections(),
                |v| v.count(0, 64),
            ),
            create_batch: self.get("database", "create_batch", 32, |v| v.count(1, 256)),
            create_writers: self.get("database", "create_writers", 2, |v| v.count(1, 64)),
            ..database
        };
        let redis = RedisSettings {
            url: self.get("redis", "url", None, |v| {
                let url = v.string()?;
                match url.as_str() {
                    "" => Ok(None),
                    u if u.starts_with("redis://") || u.starts_with("rediss://") => Ok(Some(url)),
                    _ => Err("must start with redis:// or rediss://".into()),
                }
            }),
            prefix: self.get("redis", "prefix", "ferrobase:".to_owned(), |v| v.string()),
        };
        let auth = AuthSettings {
            access_token_ttl: self.get(
                "auth",
                "access_token_ttl",
                Duration::from_secs(15 * 60),
                |v| positive(parse_duration(&v.string()?)?),
            ),
            refresh_token_ttl: self.get(
                "auth",
                "refresh_token_ttl",
                Duration::from_secs(30 * 24 * 3600),
                |v| positive(parse_duration(&v.string()?)?),
            ),
            cookie_secure: self.get("auth", "cookie_secure", true, |v| v.bool()),
            require_verified_email: self.get("auth", "require_verified_email", false, |v| v.bool()),
            redirect_allowlist: self.redirect_allowlist(),
            oauth: self.oauth(env, environment),
            passkeys: self.passkeys(server.public_url.as_deref(), server.addr, environment),
        };
        if production && !auth.oauth.is_empty() && server.public_url.is_none() {
            self.problem(
                "server",
                "public_url",
                "OAuth providers need [server] public_url in production (their callback is built from it)",
            );
        }
        let rate_limit = self.rate_limit(redis.url.is_some());
        let cache = self.cache(redis.url.is_some());
        let cors = self.cors();
        let metrics = self.metrics();
        let default_format = if production {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };
        let log = LogSettings {
            format: self.get("log", "format", default_format, |v| {
                match v.string()?.as_str() {
                    "json" => Ok(LogFormat::Json),
                    "pretty" => Ok(LogFormat::Pretty),
                    _ => Err("must be \"json\" or \"pretty\"".into()),
                }
            }),
            level: self.get("log", "level", "info".to_owned(), |v| {
                let level = v.string()?;
                if ["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
                    Ok(level)
                } else {
                    Err("must be trace, debug, info, warn or error".into())
                }
            }),
        };
        let events = EventSettings {
            retention: self.get("events", "retention", Duration::from_secs(24 * 3600), |v| {
                positive(parse_duration(&v.string()?)?)
            }),
        };
        let jobs = JobSettings {
            worker: self.get("jobs", "worker", true, |v| v.bool()),
            lease: self.get("jobs", "lease", Duration::from_secs(30), |v| {
                let lease = parse_duration(&v.string()?)?;
                if lease < Duration::from_secs(1) {
                    return Err("must be at least 1s".into());
                }
                Ok(lease)
            }),
            poll: self.get("jobs", "poll", Duration::from_secs(1), |v| {
                let poll = parse_duration(&v.string()?)?;
                if poll < Duration::from_millis(10) {
                    return Err("must be at least 10ms".into());
                }
                Ok(poll)
            }),
            queues: self.get("jobs", "queues", vec![("default".to_owned(), 10)], |v| {
                v.list()?
                    .iter()
                    .map(|item| {
                        let (name, n) = item.split_once('=').ok_or_else(|| {
                            format!("'{item}' must look like default=10 (queue=concurrency)")
                        })?;
                        let n: usize = n
                            .trim()
                            .parse()
                            .ok()
                            .filter(|n| (1..=1000).contains(n))
                            .ok_or_else(|| {
                                format!("'{item}': the concurrency must be 1 to 1000")
                            })?;
                        Ok((name.trim().to_owned(), n))
                    })
                    .collect()
            }),
        };
        let webhooks = WebhookSettings {
            allow_private_addresses: self
                .get("webhooks", "allow_private_addresses", false, |v| v.bool()),
            retry_schedule: self.get(
                "webhooks",
                "retry_schedule",
                DEFAULT_RETRY_SCHEDULE
                    .iter()
                    .map(|s| Duration::from_secs(*s))
                    .collect(),
                |v| {
                    let delays = v
                        .list()?
                        .iter()
                        .map(|d| positive(parse_duration(d)?))
                        .collect::<Result<Vec<_>, String>>()?;
                    if delays.is_empty() || delays.len() > 50 {
                        return Err("must list 1 to 50 delays like [\"5s\", \"5m\"]".into());
                    }
                    Ok(delays)
                },
            ),
        };
        let email = EmailSettings {
            smtp_url: self.get("email", "smtp_url", None, |v| {
                let url = v.string()?;
                let parsed = url::Url::parse(&url).map_err(|e| format!("invalid URL: {e}"))?;
                let starttls = parsed
                    .query_pairs()
                    .any(|(k, v)| k == "tls" && (v == "required" || v == "opportunistic"));
                match parsed.scheme() {
                    "smtps" => Ok(Some(url)),
                    "smtp" if starttls => Ok(Some(url)),
                    "smtp" => {
                        let loopback = match parsed.host() {
                            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                            // smtp: is not a special scheme: its host stays text.
                            Some(url::Host::Domain(d)) => {
                                d == "localhost"
                                    || d.trim_start_matches('[')
                                        .trim_end_matches(']')
                                        .parse::<std::net::IpAddr>()
                                        .is_ok_and(|ip| ip.is_loopback())
                            }
                            None => false,
                        };
                        if loopback && !production {
                            Ok(Some(url))
                        } else {
                            Err("smtp:// sends mail unencrypted: use smtps:// or smtp://...?tls=required (plain smtp:// only to a loopback host outside production)".into())
                        }
                    }
                    _ => Err("must be an smtps:// or smtp:// URL".into()),
                }
            }),
            from: self.get(
                "email",
                "from",
                "ferrobase <noreply@localhost>".to_owned(),
                |v| v.string(),
            ),
            link_base: self.get(
                "email",
                "link_base",
                "http://127.0.0.1:8090".to_owned(),
                |v| {
                    let base = v.string()?;
                    if base.starts_with("http://") || base.starts_with("https://") {
                        Ok(base.trim_end_matches('/').to_owned())
                    } else {
                        Err("must be an http(s) URL".into())
                    }
                },
            ),
            timeout: self.get("email", "timeout", Duration::from_secs(10), |v| {
                positive(parse_duration(&v.string()?)?)
            }),
        };
        let realtime = RealtimeSettings {
            heartbeat: self.get("realtime", "heartbeat", Duration::from_secs(15), |v| {
                let d = parse_duration(&v.string()?)?;
                if d < Duration::from_secs(1) || d > Duration::from_secs(3600) {
                    return Err("must be between 1s and 1h".into());
                }
                Ok(d)
            }),
            buffer: self.count("realtime", "buffer", 1000, 1_000_000),
            buffer_bytes: self.get("realtime", "buffer_bytes", 1 << 20, |v| {
                let n = parse_size(&v.string()?)?;
                if !(1024..=(1 << 30)).contains(&n) {
                    return Err("must be between 1KiB and 1GiB".into());
                }
                Ok(n)
            }),
            max_connections_per_user: self.count(
                "realtime",
                "max_connections_per_user",
                20,
                1_000_000,
            ),
            max_connections: self.count("realtime", "max_connections", 10_000, 10_000_000),
            max_subscriptions: self.count("realtime", "max_subscriptions", 100, 100_000),
        };
        let graphql = GraphqlSettings {
            enabled: self.get("graphql", "enabled", true, |v| v.bool()),
            introspection: self.get("graphql", "introspection", !production, |v| v.bool()),
            persisted_only: self.get("graphql", "persisted_only", false, |v| v.bool()),
            max_depth: self.count("graphql", "max_depth", 10, 100),
            max_complexity: self.count("graphql", "max_complexity", 1000, 1_000_000),
            max_records: self.count("graphql", "max_records", 10_000, 10_000_000),
        };
        let secret = env
            .get("FERROBASE_SECRET")
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        let secret_previous = env
            .get("FERROBASE_SECRET_PREVIOUS")
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        if production {
            self.production_guards(&secret, &server, &auth, &cors);
        }
        if let Some(previous) = &secret_previous
            && previous.expose().len() < MIN_SECRET_LEN
            && production
        {
            self.diags.push(env_diag(
                "FERROBASE_SECRET_PREVIOUS",
                format!("is shorter than {MIN_SECRET_LEN} bytes"),
            ));
        }
        Settings {
            realtime,
            graphql,
            env: environment,
            server,
            database,
            redis,
            auth,
            rate_limit,
            cors,
            cache,
            metrics,
            log,
            events,
            jobs,
            webhooks,
            email,
            secret,
            secret_previous,
        }
    }

    /// Records a problem with one setting, located where the setting came from.
    fn problem(&mut self, section: &str, key: &str, message: &str) {
        let diag = match self.values.get(&(section.to_owned(), key.to_owned())) {
            Some(Raw::File(item)) => {
                self.file
                    .diagnostic(span_of(item), format!("{section}.{key}: {message}"), None)
            }
            Some(Raw::Env { var, .. }) => env_diag(var, message),
            None => env_diag(&format!("{section}.{key}"), message),
        };
        self.diags.push(diag);
    }

    fn production_guards(
        &mut self,
        secret: &Option<Secret>,
        server: &ServerSettings,
        auth: &AuthSettings,
        cors: &CorsSettings,
    ) {
        match secret {
            None => self.diags.push(env_diag(
                "FERROBASE_SECRET",
                "must be set in production (at least 32 bytes of random text)",
            )),
            Some(s) if s.expose().len() < MIN_SECRET_LEN => self.diags.push(env_diag(
                "FERROBASE_SECRET",
                format!(
                    "is {} bytes; production needs at least {MIN_SECRET_LEN}",
                    s.expose().len()
                ),
            )),
            Some(_) => {}
        }
        let mut guard = |section: &str, key: &str, bad: bool, message: &str| {
            if bad {
                self.problem(section, key, message);
            }
        };
        guard(
            "cors",
            "allowed_origins",
            cors.allowed_origins.iter().any(|o| o == "*"),
            "'*' is refused in production; list the allowed origins",
        );
        guard(
            "auth",
            "cookie_secure",
            !auth.cookie_secure,
            "insecure cookies are refused in production",
        );
        guard(
            "server",
            "debug_errors",
            server.debug_errors,
            "error details are refused in production",
        );
    }
}

/// One reader per core (at least two): measured, more readers than cores only add
/// contention on SQLite.
fn default_pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 16))
}

/// One shared PostgreSQL read connection per two cores (at least one): each is served by
/// one PostgreSQL process, and the fewer there are, the more reads each carries per round
/// trip (measured on 2 cores: one beats two by a fifth on get-one and list, `bench/README.md`).
fn default_read_connections() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2).clamp(1, 16))
}

fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

/// A raw setting value from the file or the environment.
enum Value<'a> {
    Toml(&'a Item),
    Env(&'a str),
}

impl Value<'_> {
    fn string(self) -> Result<String, String> {
        match self {
            Value::Toml(item) => item
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "must be a string".into()),
            Value::Env(s) => Ok(s.to_owned()),
        }
    }

    fn bool(self) -> Result<bool, String> {
        match self {
            Value::Toml(item) => item.as_bool().ok_or_else(|| "must be true or false".into()),
            Value::Env(s) => match s {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err("must be true or false".into()),
            },
        }
    }

    fn integer(self) -> Result<i64, String> {
        match self {
            Value::Toml(item) => item.as_integer().ok_or_else(|| "must be an integer".into()),
            Value::Env(s) => s.parse().map_err(|_| "must be an integer".into()),
        }
    }

    /// A whole number from `min` to `max`.
    fn count(self, min: usize, max: usize) -> Result<usize, String> {
        usize::try_from(self.integer()?)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("must be between {min} and {max}"))
    }

    /// A TOML array of strings, or a comma-separated environment value.
    fn list(self) -> Result<Vec<String>, String> {
        match self {
            Value::Toml(item) => item
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| "must be an array of strings".into()),
            Value::Env(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()),
        }
    }
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be longer than zero".into())
    } else {
        Ok(d)
    }
}

/// Parses `"30s"`, `"15m"`, `"30d"`, `"1h 30m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("'{s}' is not a duration; write it like 30s, 15m, 12h or 30d"))
}

/// Parses sizes such as `"1MiB"`, `"512KB"`, `"2048"` (bytes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier: usize = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "'{s}' is not a size; write it like 1MiB, 512KiB or 2048"
            ));
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{s}' is not a size; write it like 1MiB, 512KiB or 2048"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(text: &str, pairs: &[(&str, &str)]) -> Result<Settings, Diagnostics> {
        Settings::load(&SourceFile::new("ferrobase.toml", text), &env(pairs))
    }

    #[test]
    fn redirects_go_to_allowed_urls_and_origins_only() {
        let settings = load(
            "[auth]\nredirect_allowlist = [\"https://app.example.com/signed-in\", \"https://admin.example.com\"]\n",
            &[],
        )
        .expect("valid");
        let auth = &settings.auth;
        for good in [
            "https://app.example.com/signed-in",
            "https://admin.example.com/",
            "https://admin.example.com/any/page?x=1",
            "https://ADMIN.example.com/x",
            "https://admin.example.com:443/x",
        ] {
            assert!(auth.redirect_allowed(good), "{good}");
        }
        for bad in [
            "https://app.example.com/other",
            "https://app.example.com/signed-in/more",
            "https://app.example.com.evil.com/signed-in",
            "https://evil.com/https://admin.example.com",
            "https://admin.example.com@evil.com/",
            "https://user:pw@admin.example.com/",
            "https://user@admin.example.com/",
            "http://admin.example.com/",
            "https://admin.example.com:8443/",
            "https://admin.example.com/#frag",
            "javascript:alert(1)",
            "//admin.example.com/",
            "/relative",
            "https:\\\\evil.com",
        ] {
            assert!(!auth.redirect_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_without_a_file() {
        let s = load("", &[]).expect("defaults are valid");
        assert_eq!(s.server.addr.to_string(), "127.0.0.1:8090");
        assert_eq!(s.server.body_limit, 1 << 20);
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert!(s.rate_limit.enabled);
    }

    #[test]
    fn environment_overrides_the_file() {
        let s = load(
            "[server]\naddr = \"0.0.0.0:1\"\n[log]\nformat = \"pretty\"\n",
            &[
                ("FERROBASE_LOG__FORMAT", "json"),
                ("PORT", "9000"),
                ("DATABASE_URL", "sqlite:///var/lib/app.db"),
                (
                    "FERROBASE_CORS__ALLOWED_ORIGINS",
                    "https://a.io, https://b.io",
                ),
            ],
        )
        .expect("valid");
        assert_eq!(s.server.addr.to_string(), "0.0.0.0:9000");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.database.url, "sqlite:///var/lib/app.db");
        assert_eq!(s.cors.allowed_origins, vec!["https://a.io", "https://b.io"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_location() {
        let err = load(
            "[server]\naddr = \"nowhere\"\nbody_limit = \"lots\"\n[sever]\n",
            &[("FERROBASE_LOG__LEVEL", "loud")],
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("ferrobase.toml:2:8: server.addr"), "{text}");
        assert!(
            text.contains("ferrobase.toml:3:14: server.body_limit"),
            "{text}"
        );
        assert!(
            text.contains("ferrobase.toml:4:2: unknown section [sever]"),
            "{text}"
        );
        assert!(text.contains("did you mean 'server'"), "{text}");
        assert!(text.contains("FERROBASE_LOG__LEVEL"), "{text}");
        assert_eq!(err.0.len(), 4);
    }

    #[test]
    fn production_guards_never_echo_the_secret() {
        let err = load(
            "[cors]\nallowed_origins = [\"*\"]\n",
            &[
                ("FERROBASE_ENV", "production"),
                ("FERROBASE_SECRET", "hunter2-short"),
                ("FERROBASE_SERVER__DEBUG_ERRORS", "true"),
            ],
        )
        .expect_err("refused");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("FERROBASE_SECRET: is 13 bytes"), "{text}");
        assert!(text.contains("cors.allowed_origins"), "{text}");
        assert!(text.contains("FERROBASE_SERVER__DEBUG_ERRORS"), "{text}");
        assert!(format!("{:?}", Secret::new("hunter2")).contains("redacted"));
        let ok = load(
            "",
            &[
                ("FERROBASE_ENV", "production"),
                ("FERROBASE_SECRET", &"x".repeat(32)),
            ],
        )
        .expect("valid production settings");
        assert_eq!(
            ok.log.format,
            LogFormat::Json,
            "production logs JSON by default"
        );
    }

    #[test]
    fn protection_settings_are_checked_together() {
        let s = load("", &[]).expect("defaults");
        assert!(s.rate_limit.enabled, "rate limits are on by default");
        assert_eq!(s.rate_limit.algorithm, RateAlgorithm::SlidingWindow);
        assert!(s.rate_limit.auth.requests < s.rate_limit.default.requests);
        assert_eq!(s.cache.server, ServerCache::Off);
        assert!(s.server.compression && s.metrics.enabled);
        let err = load(
            "[cors]\nallowed_origins = [\"*\", \"https://a.io/\"]\nallow_credentials = true\n[rate_limit]\nstore = \"redis\"\nroutes = [\"posts:FETCH=1/1m\"]\n[cache]\nserver = \"redis\"\n[metrics]\ntoken = \"short-secret\"\n",
            &[],
        )
        .expect_err("refused");
        let text = err.to_string();
        for expected in [
            "cors.allowed_origins: 'https://a.io/' is not an origin",
            "rate_limit.store: \"redis\" needs [redis] url",
            "rate_limit.routes",
            "cache.server: \"redis\" needs [redis] url",
            "metrics.token: must be at least 16 characters",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert!(!text.contains("short-secret"), "{text}");
        let err = load(
            "[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n",
            &[],
        )
        .expect_err("refused");
        assert!(
            err.to_string()
                .contains("cannot be combined with allow_credentials")
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512 KB"), Ok(512_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1XB").is_err());
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_duration("soon").is_err());
    }
}
