//! The event log (SPEC §8, "Events"): one event per successful record write, appended
//! inside the write's transaction, so a write that rolls back leaves none and an
//! acknowledged write always has one. Webhooks, realtime and job triggers follow it with
//! an [`EventFollower`], which never skips a committed event (see its docs for how, on
//! PostgreSQL, where sequence values are handed out before commit).

use ferrobase_schema::Resource;
use serde_json::{Map, Value};

use crate::Record;

/// What a write did to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOp {
    /// A record was created.
    Create,
    /// A record was changed.
    Update,
    /// A record was deleted.
    Delete,
}

impl EventOp {
    /// The name stored and shown (`create`, `update`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventOp::Create => "create",
            EventOp::Update => "update",
            EventOp::Delete => "delete",
        }
    }

    /// The op of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "create" => Some(EventOp::Create),
            "update" => Some(EventOp::Update),
            "delete" => Some(EventOp::Delete),
            _ => None,
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordEvent {
    /// Position in the log: strictly increasing per database, never reused (rolled-back
    /// writes may leave holes).
    pub seq: i64,
    /// The resource written.
    pub resource: String,
    /// What happened.
    pub op: EventOp,
    /// The record's id.
    pub id: String,
    /// The record's version after the write (for a delete, the version deleted).
    pub version: i64,
    /// The user who wrote, when a user did.
    pub actor: Option<String>,
    /// Time of the write (canonical datetime text).
    pub at: String,
    /// The record after the write; for a delete, the record as it was. Hidden fields are
    /// never in the log.
    pub record: Value,
    /// The record before the write (update and delete).
    pub previous: Option<Value>,
}

impl RecordEvent {
    /// The event as JSON (`{seq, resource, op, id, version, actor, at, record, previous}`).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("seq".into(), self.seq.into());
        map.insert("resource".into(), self.resource.clone().into());
        map.insert("op".into(), self.op.as_str().into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("version".into(), self.version.into());
        map.insert(
            "actor".into(),
            self.actor.clone().map_or(Value::Null, Value::String),
        );
        map.insert("at".into(), self.at.clone().into());
        map.insert("record".into(), self.record.clone());
        map.insert(
            "previous".into(),
            self.previous.clone().unwrap_or(Value::Null),
        );
        Value::Object(map)
    }
}

/// An event as a write produces it, before the log gives it a `seq`.
pub(crate) struct Draft {
    pub resource: String,
    pub op: EventOp,
    pub id: String,
    pub version: i64,
    pub actor: Option<String>,
    pub at: String,
    /// JSON text of the record.
    pub record: String,
    /// JSON text of the previous record.
    pub previous: Option<String>,
}

impl Draft {
    /// The event of a write: `record` is the record after it (for a delete, as it was),
    /// `previous` the record before it.
    pub(crate) fn new(
        resource: &Resource,
        op: EventOp,
        record: &Record,
        previous: Option<&Record>,
        actor: Option<&str>,
        at: &str,
    ) -> Self {
        Draft {
            resource: resource.name.clone(),
            op,
            id: record.id.clone(),
            version: record.version,
            actor: actor.map(str::to_owned),
            at: at.to_owned(),
            record: record_json(resource, record).to_string(),
            previous: previous.map(|p| record_json(resource, p).to_string()),
        }
    }
}

/// A stored record as JSON: `id`, `version`, timestamps and every field that is not
/// `hidden` (a password hash never enters the log). Field read rules are the reader's
/// business: the log holds what any rule may need.
pub fn record_json(resource: &Resource, record: &Record) -> Value {
    let mut map = Map::with_capacity(resource.fields.len() + 4);
    map.insert("id".into(), record.id.clone().into());
    map.insert("version".into(), record.version.into());
    if let Some(at) = &record.created_at {
        map.insert("created_at".into(), at.clone().into());
    }
    if let Some(at) = &record.updated_at {
        map.insert("updated_at".into(), at.clone().into());
    }
    for (field, value) in resource.fields.iter().zip(&record.values) {
        if !field.hidden {
            map.insert(field.name.clone(), value.clone());
        }
    }
    Value::Object(map)
}

/// A page of the log read by a follower.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    /// Events in `seq` order.
    pub events: Vec<RecordEvent>,
    /// Where the next read starts: every event up to here has been returned, or can never
    /// appear (a rolled-back write's hole).
    pub position: i64,
}

/// How far the sequence had been handed out at one reading, and the transactions that
/// were running just after (PostgreSQL); see [`EventFollower`].
#[derive(Debug, Clone)]
pub(crate) struct Horizon {
    /// The highest `seq` handed out.
    pub seq: i64,
    /// Transaction ids running just after it was read.
    pub running: Vec<u32>,
}

/// Reads the event log in `seq` order without ever skipping a committed event.
///
/// On SQLite one writer commits in `seq` order, so everything visible is final. On
/// PostgreSQL a sequence value is taken before commit, so a transaction holding `seq` 7
/// may commit after another has committed 8: a follower that read "after 6" and saw 8
/// must not move past 7 until 7's transaction has ended. The follower therefore records
/// *horizons*: the highest `seq` handed out so far (read from the sequence, which is not
/// transactional) together with the ids of the transactions running just after
/// (`pg_stat_activity.backend_xid`). A transaction that took a `seq` up to that value
/// already had its id (a record write precedes its event in the same transaction), so
/// if it was still running it is in that set. Once none of the set runs any more, every
/// `seq` up to the horizon is either visible or a hole for ever; the follower reads up to
/// there and no further.
///
/// Not the snapshot's `xmax`: since PostgreSQL 14 it is the latest *completed* id + 1,
/// and a transaction that got its id after the last completion runs above it unlisted
/// (a follower trusting it skipped events under steady writes). The nodes' database
/// role must see its own sessions' `backend_xid` (every role sees its own): every node
/// connects as the same role, or as roles with `pg_read_all_stats`; writes to the log
/// by a role the follower cannot see would not be waited for. Only this database's
/// transactions count (a long one elsewhere on the server does not hold the log back).
pub struct EventFollower {
    pub(crate) store: crate::Store,
    pub(crate) position: i64,
    /// `(highest seq handed out, xmax just after)`, oldest first (PostgreSQL only).
    pub(crate) horizons: std::collections::VecDeque<crate::events::Horizon>,
}

impl EventFollower {
    /// The position the follower has reached.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Whether committed-but-not-yet-final positions are waiting (PostgreSQL: writes
    /// still running when the last read began); read again soon rather than at the
    /// next wake-up, which may never come.
    pub fn pending(&self) -> bool {
        !self.horizons.is_empty()
    }

    /// Moves the position past every event that is final, without reading them: for a
    /// follower that has nobody to hand them to (realtime with no subscriptions).
    /// Returns the new position.
    pub async fn skip(&mut self) -> Result<i64, crate::StoreError> {
        let batch = self.read(0).await?;
        Ok(batch.position)
    }

    /// The next events after the position, at most `limit` (at least 1); advances the
    /// position.
    /// Returns an empty batch when nothing new is final yet (wait for
    /// [`crate::Store::event_wakeups`] or poll).
    pub async fn next_batch(&mut self, limit: usize) -> Result<EventBatch, crate::StoreError> {
        self.read(limit.max(1)).await
    }

    async fn read(&mut self, limit: usize) -> Result<EventBatch, crate::StoreError> {
        let store = self.store.clone();
        let batch = store
            .backend()
            .follow(self.position, &mut self.horizons, limit)
            .await?;
        self.position = batch.position;
        Ok(batch)
    }
}
