//! The record service: get, create, update, delete and batches of records under the
//! rules, for every transport. REST handlers, and later GraphQL, realtime, jobs and the
//! admin UI, call [`Records`], never each other, so a rule cannot be enforced on one path
//! and forgotten on another. Every committed write runs the registered [`WriteEffect`]s
//! (read-cache invalidation today, realtime wake-ups next) whatever transport made it;
//! the store appends each write's event inside the write's own transaction.
#![forbid(unsafe_code)]

mod error;
mod expand;
mod json;
mod list;
pub mod params;
mod read;
mod register;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferrobase_access::{Action, Identity, Policy};
use ferrobase_schema::validate::normalize_uuid;
use ferrobase_schema::{Resource, Schema, USERS};
use ferrobase_store::{EventOp, Record, ResourceId, Store};
use serde_json::{Map, Value};
use time::OffsetDateTime;

pub use error::RecordError;
pub use json::RecordJson;
pub use list::ListPage;
pub use params::ListParams;
pub use register::{NewAccount, Registrant};
pub use write::{BatchFailure, BatchWrite};

/// Where the current time comes from, so tests can control it without sleeping.
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

/// A write that committed, as effects see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The resource written.
    pub resource: ResourceId,
    /// What happened to the record.
    pub op: EventOp,
    /// The record's id.
    pub id: String,
}

/// Work that must follow every committed write, whatever transport made it (the read
/// cache forgets, realtime wakes up). It runs before the writer gets its answer, in a
/// task of its own so that a caller who gives up after the commit cannot cancel it.
pub trait WriteEffect: Send + Sync + 'static {
    /// Runs after `writes` committed (one request's writes; a batch's together).
    fn after_commit(&self, writes: Arc<[Written]>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The record service; cheap to clone.
#[derive(Clone)]
pub struct Records(Arc<Inner>);

struct Inner {
    schema: Arc<Schema>,
    store: Store,
    policies: Vec<Policy>,
    clock: Arc<dyn Clock>,
    /// Whether any rule needs user fields beyond id and role (then they are loaded).
    rules_need_user: bool,
    effects: Arc<[Arc<dyn WriteEffect>]>,
    /// Signs and verifies list cursors.
    cursors: ferrobase_query::cursor::CursorCodec,
}

/// Builds a [`Records`]: the clock and the effects are injected.
pub struct RecordsBuilder {
    schema: Arc<Schema>,
    store: Store,
    clock: Arc<dyn Clock>,
    effects: Vec<Arc<dyn WriteEffect>>,
    cursors: ferrobase_query::cursor::CursorCodec,
}

impl RecordsBuilder {
    /// Uses `clock` instead of the system's.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs `effect` after every committed write.
    pub fn effect(mut self, effect: Arc<dyn WriteEffect>) -> Self {
        self.effects.push(effect);
        self
    }

    /// Compiles the rules of every resource and builds the service.
    pub fn build(self) -> Records {
        let dialect = if self.store.is_postgres() {
            ferrobase_query::sql::Dialect::Postgres
        } else {
            ferrobase_query::sql::Dialect::Sqlite
        };
        let policies = Policy::compile_all(&self.schema, dialect);
        let rules_need_user = policies.iter().any(Policy::needs_user_record);
        Records(Arc::new(Inner {
            schema: self.schema,
            store: self.store,
            policies,
            clock: self.clock,
            rules_need_user,
            effects: self.effects.into(),
            cursors: self.cursors,
        }))
    }
}

impl Records {
    /// A builder with the system clock and no effects; `cursors` signs list cursors
    /// (keys derived from the deployment's secret, so every node accepts every node's).
    pub fn builder(
        schema: Arc<Schema>,
        store: Store,
        cursors: ferrobase_query::cursor::CursorCodec,
    ) -> RecordsBuilder {
        RecordsBuilder {
            schema,
            store,
            clock: Arc::new(SystemClock),
            effects: Vec::new(),
            cursors,
        }
    }

    /// The data model.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.0.schema
    }

    /// The store underneath (for reads the service does not cover yet: lists, expand).
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }

    /// The compiled rules of a resource.
    pub fn policy(&self, res: ResourceId) -> &Policy {
        &self.0.policies[res.0]
    }

    /// Whether any rule needs more of the caller's user record than id and role.
    pub fn rules_need_user(&self) -> bool {
        self.0.rules_need_user
    }

    /// A resource by its name.
    pub fn resource(&self, name: &str) -> Result<(ResourceId, &Resource), RecordError> {
        self.0
            .schema
            .resources
            .iter()
            .enumerate()
            .find(|(_, r)| r.name == name)
            .map(|(i, r)| (ResourceId(i), r))
            .ok_or_else(|| RecordError::UnknownResource(name.to_owned()))
    }

    /// The resource with this id.
    pub fn resource_at(&self, res: ResourceId) -> &Resource {
        &self.0.schema.resources[res.0]
    }

    /// A record id as the store keeps it; anything that is not a UUID names no record.
    pub fn record_id(&self, res: ResourceId, raw: &str) -> Result<String, RecordError> {
        normalize_uuid(raw).ok_or_else(|| self.not_found(res))
    }

    /// The answer for a record that does not exist or that the caller may not see.
    pub fn not_found(&self, res: ResourceId) -> RecordError {
        RecordError::NotFound {
            resource: self.resource_at(res).name.clone(),
        }
    }

    /// The caller's user record as rules see it (`@auth.<field>`): every field that is
    /// not hidden, and the id. `None` when the user no longer exists.
    pub async fn user_map(&self, id: &str) -> Result<Option<Map<String, Value>>, RecordError> {
        let (users, resource) = self.resource(USERS)?;
        let Some(record) = self
            .0
            .store
            .records()
            .get(users, id.to_owned(), None)
            .await?
        else {
            return Ok(None);
        };
        let mut map = Map::new();
        map.insert("id".into(), Value::String(record.id.clone()));
        for (field, value) in resource.fields.iter().zip(record.values) {
            if !field.hidden {
                map.insert(field.name.clone(), value);
            }
        }
        Ok(Some(map))
    }

    /// The identity with the caller's user record loaded, when some rule needs more of
    /// it than the token carries (any resource's rules count: expanded and related
    /// records are judged too).
    pub async fn with_user(&self, identity: Identity) -> Result<Identity, RecordError> {
        match identity.0 {
            Some(mut caller) if caller.user.is_none() && self.0.rules_need_user => {
                caller.user = self.user_map(&caller.id).await?;
                Ok(Identity(Some(caller)))
            }
            other => Ok(Identity(other)),
        }
    }

    /// Refuses a caller whom `action` refuses whatever the body says (no caller for a
    /// rule that needs one, an API key's scope, admins only), so transports can refuse
    /// before reading a body.
    pub fn refuse_early(
        &self,
        res: ResourceId,
        identity: &Identity,
        action: Action,
    ) -> Result<(), RecordError> {
        ferrobase_access::decide(
            self.policy(res),
            self.resource_at(res),
            action,
            identity,
            None,
            self.0.clock.now(),
        )?;
        Ok(())
    }

    /// Per field, whether the caller may read it in `record`.
    pub fn readable(&self, res: ResourceId, record: &Record, identity: &Identity) -> Vec<bool> {
        ferrobase_access::readable(
            self.policy(res),
            self.resource_at(res),
            record,
            identity,
            self.0.clock.now(),
        )
    }

    /// Per field, whether the caller may read it in an event's record (which lacks the
    /// hidden fields; see [`ferrobase_access::readable_in_event`]).
    pub fn readable_in_event(
        &self,
        res: ResourceId,
        record: &Record,
        identity: &Identity,
    ) -> Vec<bool> {
        ferrobase_access::readable_in_event(
            self.policy(res),
            self.resource_at(res),
            record,
            identity,
            self.0.clock.now(),
        )
    }

    /// A follower of the event log after `position` (0: from the start of what is kept):
    /// webhooks and realtime read every committed write through it, in `seq` order and
    /// without gaps (see [`ferrobase_store::EventFollower`]).
    pub fn follow_events(&self, position: i64) -> ferrobase_store::EventFollower {
        self.0.store.follow_events(position)
    }

    /// Changes after every record write this node commits: wait on it instead of polling
    /// the log (writes of other nodes still need a poll, or realtime's notifications).
    pub fn event_wakeups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.store.event_wakeups()
    }

    /// Runs the effects of committed writes, in a task the caller cannot cancel.
    async fn after_commit(&self, writes: Vec<Written>) {
        if self.0.effects.is_empty() || writes.is_empty() {
            return;
        }
        let effects = self.0.effects.clone();
        let writes: Arc<[Written]> = writes.into();
        let task = tokio::spawn(async move {
            for effect in effects.iter() {
                effect.after_commit(writes.clone()).await;
            }
        });
        if let Err(e) = task.await {
            tracing::error!(error = %e, "an effect of a write failed");
        }
    }
}
