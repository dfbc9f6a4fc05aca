//! Shared state of the HTTP layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferrobase_query::cursor::CursorCodec;
use ferrobase_schema::{Schema, Settings};
use ferrobase_store::Store;
use time::OffsetDateTime;

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
}

impl AppState {
    /// Builds the state.
    pub fn new(schema: Arc<Schema>, settings: Arc<Settings>, store: Store) -> Self {
        let secret = settings
            .secret
            .clone()
            .unwrap_or_else(|| ferrobase_schema::settings::Secret::new(""));
        let cursors = CursorCodec::new(
            secret.derive("cursor"),
            settings
                .secret_previous
                .as_ref()
                .map(|s| s.derive("cursor")),
        );
        Self(Arc::new(App {
            cursors,
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
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
