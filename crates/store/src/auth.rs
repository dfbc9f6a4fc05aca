//! What the identity layer keeps: refresh-token families, cookie sessions and API keys.
//! Only hashes of the secrets are stored.

/// A refresh token to store.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    /// Row id.
    pub id: String,
    /// The login this token descends from; reuse revokes the whole family.
    pub family: String,
    /// Owner.
    pub user_id: String,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// Issue time (canonical datetime).
    pub created_at: String,
    /// Expiry (canonical datetime).
    pub expires_at: String,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now used and `next` was stored in its family.
    Rotated {
        /// Owner.
        user_id: String,
    },
    /// The token had been used or revoked already: its whole family is now revoked.
    Reused {
        /// Owner.
        user_id: String,
    },
    /// The token is past its expiry.
    Expired,
    /// No such token.
    Unknown,
}

/// A user's TOTP second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaRow {
    /// The TOTP secret, base32.
    pub secret: String,
    /// Whether a first code confirmed it (only then does sign-in ask for codes).
    pub confirmed: bool,
    /// The last TOTP step accepted: each step is accepted once.
    pub last_step: i64,
    /// Recovery codes not used yet.
    pub recovery_left: u32,
}

/// A single-use, expiring ticket: an OAuth sign-in under way, a one-time exchange code, a
/// passkey ceremony. Kept in the database so that any node finishes what another began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// What it is for (`oauth`, `oauth-code`, `passkey-register`, ...).
    pub kind: String,
    /// Its key (a random id, or the hash of a secret).
    pub id: String,
    /// The user it belongs to, when known.
    pub user_id: Option<String>,
    /// What the ceremony needs to finish, as JSON.
    pub payload: String,
    /// After this it cannot be taken (canonical datetime).
    pub expires_at: String,
}

/// An account at an OAuth/OpenID provider linked to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    /// The provider's name in `ferrobase.toml`.
    pub provider: String,
    /// The provider's stable id of the account (`sub`).
    pub subject: String,
    /// The user it signs in.
    pub user_id: String,
    /// The email the provider gave, if any.
    pub email: Option<String>,
    /// When it was linked.
    pub created_at: String,
}

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRow {
    /// The credential id (base64url).
    pub id: String,
    /// Its owner.
    pub user_id: String,
    /// The WebAuthn user handle of the owner (the same for all of one user's passkeys).
    pub user_handle: String,
    /// A label.
    pub name: String,
    /// The credential as the WebAuthn library stores it (JSON).
    pub credential: String,
    /// The last signature counter seen.
    pub counter: i64,
    /// When it was registered.
    pub created_at: String,
    /// When it last signed in.
    pub last_used_at: Option<String>,
}

/// A stored API key (without its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRow {
    /// Id (also embedded in the key).
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// SHA-256 of the full key.
    pub key_hash: String,
    /// Scopes such as `posts:read`, `*`.
    pub scopes: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Expiry, if any.
    pub expires_at: Option<String>,
    /// Last time it authenticated a request.
    pub last_used_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

/// A browser session, as stored (its token only as a hash).
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Session id (keys the CSRF token).
    pub id: String,
    /// The signed-in user.
    pub user_id: String,
    /// SHA-256 of the session cookie's token.
    pub token_hash: String,
    /// When it began.
    pub created_at: time::OffsetDateTime,
    /// When it ends unless revoked before.
    pub expires_at: time::OffsetDateTime,
}

/// A live session found by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// Session id.
    pub id: String,
    /// The signed-in user.
    pub user_id: String,
}

/// Uses an email token once (`$1` hash, `$2` purpose, `$3` now).
pub(crate) const USE_EMAIL_TOKEN: &str = "UPDATE \"_ferrobase_email_tokens\" SET \"used_at\" = $3 WHERE \"token_hash\" = $1 AND \"purpose\" = $2 AND \"used_at\" IS NULL AND \"expires_at\" > $3 RETURNING \"user_id\"";

/// Stores an email token.
pub(crate) const CREATE_EMAIL_TOKEN: &str = "INSERT INTO \"_ferrobase_email_tokens\" (\"token_hash\", \"user_id\", \"purpose\", \"created_at\", \"expires_at\") VALUES ($1, $2, $3, $4, $5)";

/// DDL of the identity tables and the event log (SQLite). `AUTOINCREMENT` keeps `seq`
/// from ever being reused once old events are trimmed.
pub(crate) const SQLITE_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS "_ferrobase_refresh_tokens" (
  "id" TEXT PRIMARY KEY NOT NULL,
  "family" TEXT NOT NULL,
  "user_id" TEXT NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "token_hash" TEXT NOT NULL UNIQUE,
  "created_at" TEXT NOT NULL,
  "expires_at" TEXT NOT NULL,
  "used_at" TEXT,
  "revoked_at" TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS "fk___ferrobase_refresh_tokens__family" ON "_ferrobase_refresh_tokens" ("family");
CREATE INDEX IF NOT EXISTS "fk___ferrobase_refresh_tokens__user_id" ON "_ferrobase_refresh_tokens" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_sessions" (
  "id" TEXT PRIMARY KEY NOT NULL,
  "user_id" TEXT NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "token_hash" TEXT NOT NULL UNIQUE,
  "created_at" TEXT NOT NULL,
  "expires_at" TEXT NOT NULL,
  "revoked_at" TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS "fk___ferrobase_sessions__user_id" ON "_ferrobase_sessions" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_api_keys" (
  "id" TEXT PRIMARY KEY NOT NULL,
  "user_id" TEXT NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "name" TEXT NOT NULL,
  "key_hash" TEXT NOT NULL UNIQUE,
  "scopes" TEXT NOT NULL,
  "created_at" TEXT NOT NULL,
  "expires_at" TEXT,
  "last_used_at" TEXT,
  "revoked_at" TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS "fk___ferrobase_api_keys__user_id" ON "_ferrobase_api_keys" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_tickets" (
  "kind" TEXT NOT NULL,
  "id" TEXT NOT NULL,
  "user_id" TEXT REFERENCES "users"("id") ON DELETE CASCADE,
  "payload" TEXT NOT NULL,
  "expires_at" TEXT NOT NULL,
  PRIMARY KEY ("kind", "id")
) STRICT;
CREATE INDEX IF NOT EXISTS "ix___ferrobase_tickets__expires_at" ON "_ferrobase_tickets" ("expires_at");
CREATE TABLE IF NOT EXISTS "_ferrobase_identities" (
  "provider" TEXT NOT NULL,
  "subject" TEXT NOT NULL,
  "user_id" TEXT NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "email" TEXT,
  "created_at" TEXT NOT NULL,
  PRIMARY KEY ("provider", "subject")
) STRICT;
CREATE INDEX IF NOT EXISTS "fk___ferrobase_identities__user_id" ON "_ferrobase_identities" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_passkeys" (
  "id" TEXT PRIMARY KEY NOT NULL,
  "user_id" TEXT NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "user_handle" TEXT NOT NULL,
  "name" TEXT NOT NULL,
  "credential" TEXT NOT NULL,
  "counter" INTEGER NOT NULL,
  "created_at" TEXT NOT NULL,
  "last_used_at" TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS "fk___ferrobase_passkeys__user_id" ON "_ferrobase_passkeys" ("user_id");
CREATE INDEX IF NOT EXISTS "ix___ferrobase_passkeys__user_handle" ON "_ferrobase_passkeys" ("user_handle");
CREATE TABLE IF NOT EXISTS "_ferrobase_mfa" (
  "user_id" TEXT PRIMARY KEY NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "secret" TEXT NOT NULL,
  "confirmed" INTEGER NOT NULL,
  "last_step" INTEGER NOT NULL,
  "created_at" TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS "_ferrobase_recovery_codes" (
  "user_id" TEXT NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "code_hash" TEXT NOT NULL,
  "used_at" TEXT,
  PRIMARY KEY ("user_id", "code_hash")
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS "_ferrobase_email_tokens" (
  "token_hash" TEXT PRIMARY KEY NOT NULL,
  "user_id" TEXT NOT NULL REFERENCES "users"("id") ON DELETE CASCADE,
  "purpose" TEXT NOT NULL,
  "created_at" TEXT NOT NULL,
  "expires_at" TEXT NOT NULL,
  "used_at" TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS "fk___ferrobase_email_tokens__user_id" ON "_ferrobase_email_tokens" ("user_id");
CREATE TABLE IF NOT EXISTS "_ferrobase_idempotency" (
  "key" TEXT PRIMARY KEY NOT NULL,
  "request_hash" TEXT NOT NULL,
  "created_at" TEXT NOT NULL,
  "status" INTEGER,
  "headers" TEXT,
  "body" BLOB
) STRICT;
CREATE INDEX IF NOT EXISTS "ix___ferrobase_idempotency__created_at" ON "_ferrobase_idempotency" ("created_at");
CREATE TABLE IF NOT EXISTS "_ferrobase_events" (
  "seq" INTEGER PRIMARY KEY AUTOINCREMENT,
  "resource" TEXT NOT NULL,
  "op" TEXT NOT NULL,
  "record_id" TEXT NOT NULL,
  "version" INTEGER NOT NULL,
  "actor" TEXT,
  "at" TEXT NOT NULL,
  "record" TEXT NOT NULL,
  "previous" TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS "ix___ferrobase_events__at" ON "_ferrobase_events" ("at");
"#;
