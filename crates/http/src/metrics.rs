//! Prometheus metrics (`GET /metrics`): requests by route template and status, latency
//! histograms, the database pool, rate-limited requests, the read cache, build info.
//!
//! Protectable by a bearer token (`[metrics] token`) or by serving it on a separate
//! listen address (`[metrics] addr`) that only the monitoring network reaches.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// Route templates seen so far, kept for the life of the process: the router has a
/// fixed, small set, so labels cost no allocation per request.
static ROUTES: std::sync::LazyLock<std::sync::RwLock<std::collections::HashSet<&'static str>>> =
    std::sync::LazyLock::new(Default::default);

fn route_label(route: &str) -> &'static str {
    if let Ok(known) = ROUTES.read()
        && let Some(label) = known.get(route)
    {
        return label;
    }
    let Ok(mut known) = ROUTES.write() else {
        return "unknown";
    };
    if let Some(label) = known.get(route) {
        return label;
    }
    let label: &'static str = Box::leak(route.to_owned().into_boxed_str());
    known.insert(label);
    label
}

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// Latency buckets in seconds: 0.25 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metrics of one node.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    rate_limited: Family<ClassLabels, Counter>,
    cache: Family<ResultLabels, Counter>,
    pool_connections: Gauge,
    pool_idle: Gauge,
    pool_waiting: Gauge,
    jobs: Family<QueueStateLabels, Gauge>,
    queue_lag: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl Metrics {
    /// Registers every metric (the job service's and realtime's too, when there are
    /// ones).
    pub fn new(
        jobs: Option<&ferrobase_jobs::Jobs>,
        realtime: Option<&ferrobase_realtime::RealtimeMetrics>,
    ) -> Self {
        let mut registry = Registry::with_prefix("ferrobase");
        if let Some(jobs) = jobs {
            jobs.metrics().register(&mut registry);
        }
        if let Some(realtime) = realtime {
            realtime.register(&mut registry);
        }
        let queued = Family::<QueueStateLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs in the queue by queue and state (read from the database)",
            queued.clone(),
        );
        let queue_lag = Family::<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "job_queue_lag_seconds",
            "How long the oldest due job of each queue has waited for a worker",
            queue_lag.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from receiving a request to having its response, by route template",
            latency.clone(),
        );
        let rate_limited = Family::<ClassLabels, Counter>::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused with 429 by the rate limiter, by route class",
            rate_limited.clone(),
        );
        let cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "read_cache_lookups",
            "Server-side read cache lookups by result (hit, miss)",
            cache.clone(),
        );
        let pool_connections = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Database connections open (SQLite: reader and writer threads)",
            pool_connections.clone(),
        );
        let pool_idle = Gauge::default();
        registry.register(
            "db_pool_idle_connections",
            "Database connections not in use",
            pool_idle.clone(),
        );
        let pool_waiting = Gauge::default();
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a database connection",
            pool_waiting.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            requests,
            latency,
            rate_limited,
            cache,
            pool_connections,
            pool_idle,
            pool_waiting,
            jobs: queued,
            queue_lag,
        }
    }

    /// Counts one finished request. `route` is the matched route template (never a raw
    /// path: labels must stay few), `None` when no route matched.
    pub(crate) fn request(
        &self,
        method: &axum::http::Method,
        route: Option<&str>,
        status: u16,
        seconds: f64,
    ) {
        let method = method_label(method);
        let route = route.map_or("unmatched", route_label);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method, route })
            .observe(seconds);
    }

    /// Counts one request refused by the rate limiter.
    pub(crate) fn rate_limited(&self, class: &str) {
        self.rate_limited
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .inc();
    }

    /// Counts one read cache lookup.
    pub(crate) fn cache_hit(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&ResultLabels { result }).inc();
    }

    /// Reads the queue's numbers into the job gauges.
    async fn read_queues(&self, state: &AppState) {
        let Some(jobs) = &state.jobs else {
            return;
        };
        let Ok(stats) = jobs.stats().await else {
            return;
        };
        let now = jobs.now();
        self.jobs.clear();
        self.queue_lag.clear();
        for q in stats {
            for s in ferrobase_store::JobState::ALL {
                let n = q.counts.get(s.as_str()).copied().unwrap_or(0);
                self.jobs
                    .get_or_create(&QueueStateLabels {
                        queue: q.queue.clone(),
                        state: s.as_str(),
                    })
                    .set(n);
            }
            let lag = q
                .oldest_due
                .map_or(0.0, |at| ((now - at).max(0)) as f64 / 1e6);
            self.queue_lag
                .get_or_create(&QueueLabels { queue: q.queue })
                .set(lag);
        }
    }

    fn render(&self, state: &AppState) -> Result<String, std::fmt::Error> {
        let pool = state.store.maintenance().pool_stats();
        self.pool_connections.set(pool.connections as i64);
        self.pool_idle.set(pool.idle as i64);
        self.pool_waiting.set(pool.waiting as i64);
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Whether the request carries the configured metrics token.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.settings.metrics.token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|sent| {
            ferrobase_auth::secrets::constant_time_eq(sent.trim().as_bytes(), token.expose())
        })
}

/// `GET /metrics` in the Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return ApiError::unauthorized().into_response();
    }
    state.metrics.read_queues(&state).await;
    match state.metrics.render(&state) {
        Ok(text) => {
            let mut res = (StatusCode::OK, text).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => ApiError::internal(format!("rendering metrics: {e}")).into_response(),
    }
}
