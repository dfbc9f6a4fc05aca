//! `ferrobase serve`: start-up, serving, graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use ferrobase_http::AppState;
use ferrobase_store::{Store, StoreError};
use tokio::net::TcpListener;

use crate::{EXIT_CONFIG, EXIT_RUNTIME, logging, project, secret};

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The API and, unless `[jobs] worker = false`, a worker.
    Api,
    /// A worker only (`ferrobase worker`).
    Worker,
}

/// Loads the project and serves it until SIGTERM or SIGINT.
pub fn run(dir: &Path, addr: Option<SocketAddr>, mode: Mode) -> ExitCode {
    let project = match project::load(dir) {
        Ok(p) => p,
        Err(problems) => {
            project::report(&problems);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _guard = logging::init(&project.settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let code = runtime.block_on(serve(project, addr, mode));
    // Let the database threads and in-flight work end before the log writer flushes.
    drop(runtime);
    code
}

async fn serve(mut project: project::Project, addr: Option<SocketAddr>, mode: Mode) -> ExitCode {
    let data_dir = project.dir.join(&project.settings.server.data_dir);
    match secret::resolve(
        &data_dir,
        project.settings.env,
        project.settings.secret.take(),
    ) {
        Ok(secret) => project.settings.secret = Some(secret),
        Err(e) => {
            tracing::error!(error = %e, "no secret");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if project.builtin_schema {
        tracing::info!(
            "no schema.toml in the project directory; serving the built-in blog example"
        );
    }
    let schema = Arc::new(project.schema);
    let settings = Arc::new(project.settings);
    let graphql_documents = project.graphql_documents;
    let store = match Store::open(&project.dir, &settings, schema.clone()) {
        Ok(store) => store,
        Err(e @ StoreError::Config(_)) => {
            tracing::error!(error = %e, "cannot start on this database");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot open the database");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let redis = match settings.redis.url.as_deref() {
        None => None,
        Some(url) => match ferrobase_cluster::Redis::connect(url, &settings.redis.prefix) {
            Ok(redis) => Some(redis),
            Err(e) => {
                tracing::error!(error = %e, "cannot use Redis");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let clock = match crate::clock::from_env(settings.env) {
        Ok(clock) => clock,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let token_key = settings
        .secret
        .as_ref()
        .map_or([0; 32], |s| s.derive("job-token"));
    let jobs = match ferrobase_jobs::Jobs::new(
        schema.clone(),
        store.clone(),
        clock.clone(),
        &settings,
        &project.dir,
        token_key,
        |var| std::env::var(var).ok(),
    ) {
        Ok(jobs) => jobs,
        Err(problems) => {
            for problem in problems {
                tracing::error!(problem, "a job type cannot be used");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let state = AppState::builder(schema, settings.clone(), store)
        .redis(redis)
        .clock(clock)
        .jobs(jobs.clone())
        .graphql_documents(graphql_documents)
        .build();
    if mode == Mode::Worker {
        return work_only(&jobs, &settings).await;
    }
    // Start-up's scratch memory (the 19 MiB Argon2 dummy hash among it) goes back now.
    crate::alloc::release();
    let addr = addr.unwrap_or(settings.server.addr);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, %addr, "cannot listen");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let local = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    tracing::info!(addr = %local, version = env!("CARGO_PKG_VERSION"), "listening");
    // Started once the node can serve: a node that cannot listen claims no jobs.
    let worker = settings.jobs.worker.then(|| jobs.start_worker());
    let store = state.store.clone();
    let realtime = state.realtime.clone();
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        // One line when the store can serve (at once on SQLite; on PostgreSQL once its
        // tables are up to date), for operators and for tests that must not race it.
        match store
            .maintenance()
            .wait_ready(std::time::Duration::from_secs(3600))
            .await
        {
            Ok(()) => {
                // Until it follows the log, subscribing answers 503: try again until it
                // does (a database that fails once must not leave realtime off).
                while let Err(e) = realtime.start().await {
                    tracing::error!(error = %e, "realtime cannot follow the event log yet");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                tracing::info!("ready to serve");
            }
            Err(StoreError::Config(why)) => {
                let _ = refused_tx.send(why);
            }
            Err(_) => {}
        }
    });

    spawn_cache_following(&state);

    let metrics = &settings.metrics;
    if settings.env == ferrobase_schema::settings::Environment::Production
        && metrics.enabled
        && metrics.token.is_none()
        && metrics.addr.is_none()
    {
        tracing::warn!(
            "/metrics is open on the public port; set [metrics] token or [metrics] addr to protect it"
        );
    }
    if let (true, Some(metrics_addr)) = (metrics.enabled, metrics.addr) {
        match TcpListener::bind(metrics_addr).await {
            Ok(listener) => {
                let local = listener
                    .local_addr()
                    .map_or_else(|_| metrics_addr.to_string(), |a| a.to_string());
                tracing::info!(addr = %local, "metrics listening");
                let app = ferrobase_http::metrics_router(state.clone());
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::error!(error = %e, "the metrics listener failed");
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, addr = %metrics_addr, "cannot listen for metrics");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = ferrobase_http::router(state.clone());
    let listener =
        axum::serve::ListenerExt::tap_io(ferrobase_http::wire::Connections::new(listener), |_| {});
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = stop_rx.await;
    });
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        result = &mut server => {
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    ExitCode::from(EXIT_RUNTIME)
                }
            };
        }
        Ok(why) = refused_rx => {
            tracing::error!(error = %why, "cannot start on this database");
            return ExitCode::from(EXIT_CONFIG);
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutdown signal received; finishing in-flight requests");
        }
    }
    state.begin_shutdown();
    let _ = stop_tx.send(());
    let grace = settings.server.shutdown_timeout;
    let stopping_worker = async {
        if let Some(worker) = worker {
            worker.shutdown(grace).await;
        }
    };
    // Realtime connections end with a final message each; upgraded WebSockets are not
    // tracked by the server's own graceful shutdown.
    let realtime = state.realtime.clone();
    let realtime_closed = async {
        let _ = tokio::time::timeout(grace, realtime.closed()).await;
    };
    let (served, (), ()) = tokio::join!(
        tokio::time::timeout(grace, server),
        stopping_worker,
        realtime_closed
    );
    match served {
        Ok(Ok(())) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "server failed while stopping");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(_) => {
            tracing::warn!(
                seconds = grace.as_secs(),
                "requests still running after the shutdown timeout; stopping anyway"
            );
            ExitCode::SUCCESS
        }
    }
}

/// `ferrobase worker`: runs jobs until SIGTERM or SIGINT, then stops claiming, lets
/// running jobs finish within the shutdown timeout and releases the rest.
async fn work_only(jobs: &ferrobase_jobs::Jobs, settings: &ferrobase_schema::Settings) -> ExitCode {
    tracing::info!("worker running");
    let worker = jobs.start_worker();
    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutdown signal received; finishing running jobs");
    worker.shutdown(settings.server.shutdown_timeout).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How often a node with a memory read cache looks for writes it did not make.
const FOREIGN_WRITES_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// A memory read cache forgets on this node's writes at once (a write effect); writes
/// made elsewhere (`ferrobase users create`, another process on the same database) reach
/// it through the event log: once a second the node reads the log's last `seq` and
/// clears the cache when it moved. One cheap query a second, whatever the write rate
/// (this node's own writes move it too; they cleared the cache already, so clearing it
/// again costs nothing worth counting). A Redis cache needs none: every writer clears it
/// for all nodes.
fn spawn_cache_following(state: &AppState) {
    let Some(cache) = state.read_cache.clone() else {
        return;
    };
    if !matches!(*cache, ferrobase_cluster::cache::ReadCache::Memory(_)) {
        return;
    }
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut seen = None;
        let mut every = tokio::time::interval(FOREIGN_WRITES_POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match store.events().last_event().await {
                Ok(last) => {
                    // Before the first answer (PostgreSQL may still be creating its
                    // tables) nothing says what the cache saw: clear it then too.
                    if seen != Some(last) {
                        cache.invalidate().await;
                    }
                    seen = Some(last);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the event log's position"),
            }
        }
    });
}

/// Resolves with the signal's name on SIGTERM or SIGINT.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
