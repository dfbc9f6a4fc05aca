//! One trait per concern of the store, each implemented by SQLite and PostgreSQL.

use crate::*;

/// Records: reads, and writes through the one write routine (each write appends its event).
pub trait RecordStore: Send + Sync {
    /// One record by id, if it exists and satisfies `visible` (the view rule).
    fn get(
        &self,
        res: ResourceId,
        id: String,
        visible: Option<Expr>,
    ) -> Fut<'_, Result<Option<Record>, StoreError>>;

    /// Records matching a list query, in its order.
    fn list(&self, res: ResourceId, query: ListQuery) -> Fut<'_, Result<Vec<Record>, StoreError>>;

    /// The database's plan for a list query, one line per step (for diagnosing slow
    /// lists and for tests that prove an index is used).
    fn explain(
        &self,
        res: ResourceId,
        query: ListQuery,
    ) -> Fut<'_, Result<Vec<String>, StoreError>>;

    /// Judges `conds` (compiled for the resource's table) against `record` as given,
    /// not as stored: one answer per condition. Realtime judges an event's record with
    /// it, once per event for every subscriber whose rule or filter follows relations.
    fn judge(
        &self,
        res: ResourceId,
        record: Record,
        conds: Vec<Expr>,
    ) -> Fut<'_, Result<Vec<bool>, StoreError>>;

    /// Records as [`RecordStore::list`] lists them, each with the targets of `joins` read
    /// in the same statement (`None` where the relation is empty or its target is not
    /// visible).
    fn list_joined(
        &self,
        res: ResourceId,
        query: ListQuery,
        joins: Vec<crate::Join>,
    ) -> Fut<'_, Result<Vec<crate::Joined>, StoreError>>;

    /// How many records match `filter`.
    fn count(&self, res: ResourceId, filter: Option<Expr>) -> Fut<'_, Result<u64, StoreError>>;

    /// How many records matching `filter` point at each of `ids` through `column`, a
    /// single relation (ids no record points at are left out).
    fn count_by(
        &self,
        res: ResourceId,
        filter: Option<Expr>,
        column: String,
        ids: Vec<String>,
    ) -> Fut<'_, Result<Vec<(String, u64)>, StoreError>>;

    /// The records with these ids that satisfy `visible` (in no particular order;
    /// missing ids are skipped).
    fn get_many(
        &self,
        res: ResourceId,
        ids: Vec<String>,
        visible: Option<Expr>,
    ) -> Fut<'_, Result<Vec<Record>, StoreError>>;

    /// Inserts a record and returns it as stored; when the new record does not satisfy
    /// `allowed` (the create rule) nothing is stored and the result is `Forbidden`.
    fn insert(
        &self,
        res: ResourceId,
        record: NewRecord,
        allowed: Option<Expr>,
    ) -> Fut<'_, Result<Record, StoreError>>;

    /// Applies an update; `Ok(None)` when no visible record has that id, `Forbidden`
    /// when the record is visible but `access.allowed` refuses.
    fn update(
        &self,
        res: ResourceId,
        id: String,
        update: Update,
        access: Access,
    ) -> Fut<'_, Result<Option<Record>, StoreError>>;

    /// Deletes a record; `Ok(false)` when no visible record has that id. With `if_match`,
    /// only when the stored version is one of those (else [`StoreError::VersionMismatch`]).
    fn delete(
        &self,
        res: ResourceId,
        id: String,
        deletion: Deletion,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Runs every write in one transaction, in order: all of them happen, or none.
    fn batch(&self, ops: Vec<BatchOp>) -> Fut<'_, Result<Vec<BatchOutcome>, BatchError>>;
}

/// Identity state: refresh-token families, cookie sessions, API keys, password hashes.
pub trait SessionStore: Send + Sync {
    /// Stores a new refresh token (the first of a family at login).
    fn insert_refresh(&self, grant: RefreshGrant) -> Fut<'_, Result<(), StoreError>>;

    /// Presents a refresh token: rotation, or family revocation on reuse.
    fn rotate_refresh(
        &self,
        presented_hash: String,
        next: RefreshGrant,
    ) -> Fut<'_, Result<Rotation, StoreError>>;

    /// Revokes the family of a refresh token (logout).
    fn revoke_refresh(&self, token_hash: String, now: String) -> Fut<'_, Result<bool, StoreError>>;

    /// Revokes all refresh tokens and sessions of a user.
    fn revoke_user(&self, user_id: String, now: String) -> Fut<'_, Result<(), StoreError>>;

    /// Stores an email token (its hash) for `purpose` (`verify`, `reset`) until
    /// `expires_at` (canonical datetime text).
    fn create_email_token(
        &self,
        token_hash: String,
        user_id: String,
        purpose: String,
        now: String,
        expires_at: String,
    ) -> Fut<'_, Result<(), StoreError>>;

    /// Uses an email token once: the user it was made for, when it exists for
    /// `purpose`, is unused and has not expired at `now`.
    fn use_email_token(
        &self,
        token_hash: String,
        purpose: String,
        now: String,
    ) -> Fut<'_, Result<Option<String>, StoreError>>;

    /// Stores a cookie session: `[id, user id, token hash, created at, expires at]`.
    fn insert_session(&self, session: SessionRow) -> Fut<'_, Result<(), StoreError>>;

    /// The live session with this token hash: `(session id, user id)`.
    fn session(
        &self,
        token_hash: String,
        now: time::OffsetDateTime,
    ) -> Fut<'_, Result<Option<LiveSession>, StoreError>>;

    /// Ends a cookie session.
    fn revoke_session(&self, token_hash: String, now: String) -> Fut<'_, Result<bool, StoreError>>;

    /// Stores an API key.
    fn insert_api_key(&self, key: ApiKeyRow) -> Fut<'_, Result<(), StoreError>>;

    /// The user's TOTP second factor, if one was begun.
    fn mfa(&self, user_id: String) -> Fut<'_, Result<Option<crate::MfaRow>, StoreError>>;

    /// Begins (or begins again) TOTP with a new secret; `false` when TOTP is on already.
    fn begin_mfa(
        &self,
        user_id: String,
        secret: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Turns TOTP on at the first code's `step`, with the recovery codes' hashes;
    /// `false` when it was on already.
    /// (Only while the secret is still `secret`: the one the code was checked against.)
    fn confirm_mfa(
        &self,
        user_id: String,
        secret: String,
        step: i64,
        recovery: Vec<String>,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Accepts TOTP `step` for the user, once: `false` for a step already used or older.
    fn use_mfa_step(&self, user_id: String, step: i64) -> Fut<'_, Result<bool, StoreError>>;

    /// Uses a recovery code, once.
    fn use_recovery_code(
        &self,
        user_id: String,
        hash: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Turns TOTP off and forgets the recovery codes; `false` when it was not on.
    fn delete_mfa(&self, user_id: String) -> Fut<'_, Result<bool, StoreError>>;

    /// Stores a single-use ticket (and drops tickets past their expiry).
    fn put_ticket(&self, ticket: crate::Ticket, now: String) -> Fut<'_, Result<(), StoreError>>;

    /// Takes a ticket once: `None` when it is unknown, taken already or past its expiry.
    fn take_ticket(
        &self,
        kind: String,
        id: String,
        now: String,
    ) -> Fut<'_, Result<Option<crate::Ticket>, StoreError>>;

    /// The user a provider's account is linked to.
    fn identity_user(
        &self,
        provider: String,
        subject: String,
    ) -> Fut<'_, Result<Option<String>, StoreError>>;

    /// Links a provider's account to a user; `false` when it is linked already.
    fn link_identity(&self, row: crate::IdentityRow) -> Fut<'_, Result<bool, StoreError>>;

    /// A user's linked provider accounts.
    fn identities(&self, user_id: String) -> Fut<'_, Result<Vec<crate::IdentityRow>, StoreError>>;

    /// Unlinks a user's accounts at `provider`; whether there was one.
    fn unlink_identity(
        &self,
        user_id: String,
        provider: String,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Stores a registered passkey.
    fn add_passkey(&self, row: crate::PasskeyRow) -> Fut<'_, Result<(), StoreError>>;

    /// A user's passkeys.
    fn passkeys_of(&self, user_id: String) -> Fut<'_, Result<Vec<crate::PasskeyRow>, StoreError>>;

    /// The passkeys of a WebAuthn user handle.
    fn passkeys_by_handle(
        &self,
        handle: String,
    ) -> Fut<'_, Result<Vec<crate::PasskeyRow>, StoreError>>;

    /// Records a sign-in with a passkey: its new state and counter, only when the counter
    /// went up (or the authenticator keeps none: 0 and 0). `false` means a counter that
    /// did not increase: a cloned authenticator, or a concurrent sign-in.
    fn use_passkey(
        &self,
        id: String,
        credential: String,
        counter: i64,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Removes a user's passkey; whether it existed.
    fn delete_passkey(&self, user_id: String, id: String) -> Fut<'_, Result<bool, StoreError>>;

    /// One API key by id.
    fn api_key(&self, id: String) -> Fut<'_, Result<Option<ApiKeyRow>, StoreError>>;

    /// A user's API keys.
    fn api_keys_of(&self, user_id: String) -> Fut<'_, Result<Vec<ApiKeyRow>, StoreError>>;

    /// Revokes a user's API key; whether it exists.
    fn revoke_api_key(
        &self,
        user_id: String,
        id: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>>;

    /// Records an API key's use (at most once per `stale_before` window).
    fn touch_api_key(
        &self,
        id: String,
        now: String,
        stale_before: String,
    ) -> Fut<'_, Result<(), StoreError>>;

    /// The id of the user with this email (case-insensitive).
    fn user_id_by_email(&self, email: String) -> Fut<'_, Result<Option<String>, StoreError>>;

    /// Replaces a user's password hash.
    fn set_password_hash(
        &self,
        user_id: String,
        hash: String,
        now: String,
    ) -> Fut<'_, Result<bool, StoreError>>;
}

/// Idempotency keys of POST requests.
pub trait IdempotencyStore: Send + Sync {
    /// Claims an idempotency key (see [`Claim`]); expired keys are purged on the way.
    fn claim_idempotency(&self, claim: IdempotencyClaim) -> Fut<'_, Result<Claim, StoreError>>;

    /// Stores the response of a claimed key's request.
    fn complete_idempotency(
        &self,
        key: String,
        response: StoredResponse,
    ) -> Fut<'_, Result<(), StoreError>>;

    /// Gives a claimed key up (its request failed in a way worth retrying).
    fn release_idempotency(&self, key: String) -> Fut<'_, Result<(), StoreError>>;
}

/// The event log beyond what followers read: trimming and its end.
pub trait EventLog: Send + Sync {
    /// Deletes the events written before `before` (canonical datetime text): the
    /// retention of `[events] retention`. Returns how many.
    fn trim_events(&self, before: String) -> Fut<'_, Result<u64, StoreError>>;

    /// The highest `seq` committed so far (0 before the first event).
    fn last_event(&self) -> Fut<'_, Result<i64, StoreError>>;

    /// The highest `seq` of an event written before `at` (canonical datetime text).
    fn last_event_before(&self, at: String) -> Fut<'_, Result<i64, StoreError>>;

    /// The events with `seq` in `(after, upto]`, of `resource` when given, at most
    /// `limit`, in `seq` order. Only for positions a follower has already proved final
    /// (see [`crate::EventFollower`]).
    fn events_between(
        &self,
        after: i64,
        upto: i64,
        resource: Option<String>,
        limit: usize,
    ) -> Fut<'_, Result<Vec<crate::RecordEvent>, StoreError>>;

    /// The `seq` and time of the last event at or before `seq` that is still kept.
    fn event_at_or_before(&self, seq: i64) -> Fut<'_, Result<Option<(i64, String)>, StoreError>>;
}

/// The database itself: migrations, readiness, pool statistics.
pub trait Maintenance: Send + Sync {
    /// The recorded schema state (`None` before the first migration) and the applied
    /// migrations.
    fn migrations(&self) -> Fut<'_, Result<migrate::History, StoreError>>;

    /// Applies the pending migrations of `files`, each in its own transaction; refuses
    /// destructive steps unless allowed. Returns the names applied.
    fn apply_migrations(
        &self,
        files: Vec<migrate::MigrationSource>,
        allow_destructive: bool,
        now: String,
    ) -> Fut<'_, Result<Vec<String>, StoreError>>;

    /// Checks that the database answers.
    fn ping(&self) -> Fut<'_, Result<(), StoreError>>;

    /// Waits until the store can serve (PostgreSQL: its tables exist), at most `deadline`.
    fn wait_ready(&self, deadline: std::time::Duration) -> Fut<'_, Result<(), StoreError>>;

    /// How busy the connections are.
    fn pool_stats(&self) -> PoolStats;
}
