//! Why a connection or a subscription is refused.

use ferrobase_access::Refusal;
use ferrobase_records::RecordError;
use ferrobase_store::StoreError;

/// A refused connection or subscription. Transports map each variant once (status and
/// code noted per variant).
#[derive(Debug)]
pub enum RealtimeError {
    /// Unknown resource (404), bad filter (400 `INVALID_FILTER`), a rule refusing the
    /// caller (401/403), or the store failing: as the record service says.
    Record(RecordError),
    /// This user (or, anonymous, this client address) has all the connections it may
    /// open (429 `RATE_LIMITED`).
    TooManyConnectionsForUser {
        /// The limit.
        limit: usize,
    },
    /// This node holds all the connections it may (503 `UNAVAILABLE`): another node may
    /// have room.
    NodeFull,
    /// The connection has all the subscriptions it may hold (422 `UNPROCESSABLE`).
    TooManySubscriptions {
        /// The limit.
        limit: usize,
    },
    /// The connection already has a subscription with this id (400 `BAD_REQUEST`).
    DuplicateSubscription(String),
    /// No subscription has this id (404 `NOT_FOUND`).
    UnknownSubscription(String),
    /// The node is shutting down (503 `UNAVAILABLE`).
    ShuttingDown,
    /// The node is not following the event log yet (503 `UNAVAILABLE`).
    NotReady,
}

impl From<RecordError> for RealtimeError {
    fn from(e: RecordError) -> Self {
        Self::Record(e)
    }
}

impl From<Refusal> for RealtimeError {
    fn from(e: Refusal) -> Self {
        Self::Record(RecordError::Refused(e))
    }
}

impl From<StoreError> for RealtimeError {
    fn from(e: StoreError) -> Self {
        Self::Record(RecordError::Store(e))
    }
}

impl std::fmt::Display for RealtimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Record(e) => write!(f, "{e}"),
            Self::TooManyConnectionsForUser { limit } => write!(
                f,
                "at most {limit} realtime connections per user; close one first"
            ),
            Self::NodeFull => {
                f.write_str("this node holds all the realtime connections it may; try again")
            }
            Self::TooManySubscriptions { limit } => write!(
                f,
                "at most {limit} subscriptions of this kind per connection (filters that follow a relation count separately)"
            ),
            Self::DuplicateSubscription(id) => {
                write!(
                    f,
                    "a subscription with id '{id}' already exists on this connection"
                )
            }
            Self::UnknownSubscription(id) => write!(f, "no subscription has the id '{id}'"),
            Self::ShuttingDown => f.write_str("the node is shutting down; connect to another"),
            Self::NotReady => f.write_str("realtime is starting; try again in a moment"),
        }
    }
}

impl std::error::Error for RealtimeError {}
