//! Record storage. [`Store`] hides which database holds the data: SQLite today (WAL, one
//! writer thread and a pool of reader threads), PostgreSQL with the same interface later.
//! Rows are decoded by each field's declared type, never by driver type information.

mod error;
mod list;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use ferrobase_schema::{Schema, Settings};
use serde_json::Value;

pub use error::StoreError;
pub use list::{KeyType, ListQuery, SortKey};
pub use sqlite::SqliteStore;

/// Index of a resource in [`Schema::resources`]; the store's handle for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceId(pub usize);

/// One stored record, with field values aligned to the resource's declared fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// UUIDv7 id.
    pub id: String,
    /// Bumped on every write.
    pub version: i64,
    /// Creation time, for resources with timestamps.
    pub created_at: Option<String>,
    /// Time of the last write, for resources with timestamps.
    pub updated_at: Option<String>,
    /// `values[i]` belongs to `resource.fields[i]`; `Null` when unset. Many relations
    /// hold an array of ids.
    pub values: Vec<Value>,
}

/// A record to insert: the caller has validated it and applied defaults.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Server-generated id.
    pub id: String,
    /// Creation time (canonical datetime text).
    pub now: String,
    /// Aligned to the resource's fields; `Null` leaves a field unset.
    pub values: Vec<Value>,
}

pub use ferrobase_schema::input::Change;

/// A validated update.
#[derive(Debug, Clone)]
pub struct Update {
    /// Time of the write.
    pub now: String,
    /// `(field index, change)` pairs.
    pub changes: Vec<(usize, Change)>,
    /// Only update when the stored version is one of these (`If-Match`); `None` means
    /// unconditionally.
    pub if_match: Option<Vec<i64>>,
}

/// The data store, whichever database backs it.
#[derive(Clone)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(Arc<SqliteStore>),
}

impl Store {
    /// Opens the database named by the settings (relative paths resolve against `dir`)
    /// and creates the tables the schema needs.
    pub fn open(dir: &Path, settings: &Settings, schema: Arc<Schema>) -> Result<Self, StoreError> {
        let url = settings.database.url.as_str();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            let path = dir.join(path);
            let store = SqliteStore::open(&path, settings.database.pool_size, schema)?;
            Ok(Self::Sqlite(Arc::new(store)))
        } else {
            Err(StoreError::Config(
                "PostgreSQL is not supported by this build yet; use a sqlite:// database URL"
                    .into(),
            ))
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.ping().await,
        }
    }

    /// One record by id.
    pub async fn get(&self, res: ResourceId, id: String) -> Result<Option<Record>, StoreError> {
        match self {
            Self::Sqlite(s) => s.get(res, id).await,
        }
    }

    /// Records matching a list query, in its order.
    pub async fn list(&self, res: ResourceId, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::Sqlite(s) => s.list(res, query).await,
        }
    }

    /// The database's plan for a list query, one line per step (for diagnosing slow
    /// lists and for tests that prove an index is used).
    pub async fn explain(
        &self,
        res: ResourceId,
        query: ListQuery,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Sqlite(s) => s.explain(res, query).await,
        }
    }

    /// How many records match `filter`.
    pub async fn count(
        &self,
        res: ResourceId,
        filter: Option<sea_query::Expr>,
    ) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(s) => s.count(res, filter).await,
        }
    }

    /// The records with these ids (in no particular order; missing ids are skipped).
    pub async fn get_many(
        &self,
        res: ResourceId,
        ids: Vec<String>,
    ) -> Result<Vec<Record>, StoreError> {
        match self {
            Self::Sqlite(s) => s.get_many(res, ids).await,
        }
    }

    /// Inserts a record and returns it as stored.
    pub async fn insert(&self, res: ResourceId, record: NewRecord) -> Result<Record, StoreError> {
        match self {
            Self::Sqlite(s) => s.insert(res, record).await,
        }
    }

    /// Applies an update; `Ok(None)` when no record has that id.
    pub async fn update(
        &self,
        res: ResourceId,
        id: String,
        update: Update,
    ) -> Result<Option<Record>, StoreError> {
        match self {
            Self::Sqlite(s) => s.update(res, id, update).await,
        }
    }

    /// Deletes a record; `Ok(false)` when no record has that id. With `if_match`, only
    /// when the stored version is one of those (else [`StoreError::VersionMismatch`]).
    pub async fn delete(
        &self,
        res: ResourceId,
        id: String,
        if_match: Option<Vec<i64>>,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.delete(res, id, if_match).await,
        }
    }
}
