//! The auth-service's storage: one trait with the operations the domain
//! needs (not a generic CRUD), implemented once ([`sql::SqlStore`]) for
//! SQLite and PostgreSQL: each operation is one SQL text, bound to either
//! database by `serving::sql`.
//!
//! Two decisions every implementation must keep:
//!
//! - **Refresh rotation is one conditional update.** `UPDATE refresh_tokens
//!   SET spent_time = now WHERE token_hash = ? AND spent_time IS NULL` both
//!   checks and spends the token, so of two concurrent refreshes exactly one
//!   sees a row; the other finds the token spent and is treated as reuse.
//!   Reading first and writing after would let both win and fork the session.
//! - **Reuse revocation is committed although the call fails.** The session
//!   is revoked in its own committed transaction before the error goes back,
//!   so a thief's retry cannot roll the revocation back.
//!
//! Times are `DateTime<Utc>` truncated to microseconds (see
//! `serving::clock`); ids are UUIDv7.

pub mod sql;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serving::{database::Database, migration, migrations::Migrations};

pub use crate::key_encryption::Sealed;
use uuid::Uuid;

pub type Time = DateTime<Utc>;

/// The SHA-256 of a refresh token: all the database ever sees of one.
pub type TokenHash = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the row (an email already registered).
    #[error("conflict with an existing row")]
    Conflict,
    /// The database cannot be reached; the client may retry.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// A statement ran past its time limit.
    #[error("database statement timed out: {0}")]
    Timeout(sqlx::Error),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if serving::database::is_unique_violation(&error) {
            Self::Conflict
        } else if serving::database::is_unavailable(&error) {
            Self::Unavailable(error)
        } else if serving::database::is_timeout(&error) {
            Self::Timeout(error)
        } else {
            Self::Database(error)
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub create_time: Time,
    pub email_verified: bool,
}

/// A user with the PHC string of their password hash (never leaves the service).
#[derive(Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// The hash stays out of every `Debug` print (and so out of logs).
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password_hash", &"[REDACTED]")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub create_time: Time,
    pub last_refresh_time: Time,
    pub idle_expire_time: Time,
    pub absolute_expire_time: Time,
    pub user_agent: String,
    /// Whether the session's user has verified their email address (read
    /// with the session, for the tokens issued to it).
    pub email_verified: bool,
}

/// A new session with its first refresh token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session: Session,
    pub refresh_token: TokenHash,
}

impl Session {
    /// When the current refresh token of this session stops working.
    pub fn refresh_expire_time(&self) -> Time {
        self.idle_expire_time.min(self.absolute_expire_time)
    }
}

/// What spending a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live; it is now spent and `next` replaces it.
    Rotated(Session),
    /// The token is the one this session spent last, presented again
    /// within the grace, and `next` (its successor) is still the session's
    /// live token: the session goes on with `next`, nothing changes.
    Repeated(Session),
    /// The token had been spent before: its session is now revoked.
    Reused { session_id: Uuid, user_id: Uuid },
    /// Unknown, expired, or its session has ended.
    Invalid,
}

/// A secret as the database holds it: sealed with a key-encryption key
/// (see `key_encryption`), or, from before sealing, plain (to be sealed).
#[derive(Clone, PartialEq, Eq)]
pub enum StoredSecret {
    Sealed(Sealed),
    Plain(Vec<u8>),
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sealed(sealed) => write!(f, "Sealed(kek {})", sealed.kek_id),
            Self::Plain(_) => f.write_str("Plain([REDACTED])"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    /// The PKCS#8 private key.
    pub private_key: StoredSecret,
    pub create_time: Time,
    pub retire_time: Option<Time>,
}

/// What a [`SessionEvent`] says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEventKind {
    /// One session ended: its tokens must be refused.
    SessionEnded = 1,
    /// The account was deleted: every token of the user must be refused,
    /// and their data deleted.
    AccountDeleted = 2,
}

/// One entry of the durable log other services follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub sequence: i64,
    pub kind: SessionEventKind,
    pub user_id: Uuid,
    /// The session that ended; `None` for an account deletion.
    pub session_id: Option<Uuid>,
    pub time: Time,
    /// No access token of the session (or account) is valid after this.
    pub tokens_expire_time: Time,
}

/// What a mail token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTokenKind {
    VerifyEmail = 1,
    ResetPassword = 2,
}

/// A mail to queue in the outbox: who gets it, and the message, already
/// formatted (RFC 5322) and sealed (it holds a live link).
#[derive(Clone)]
pub struct NewMail {
    pub id: Uuid,
    pub recipient: String,
    pub message: Sealed,
}

/// A queued mail a delivery worker has claimed.
#[derive(Clone)]
pub struct OutgoingMail {
    pub id: Uuid,
    pub recipient: String,
    pub message: StoredSecret,
    /// Earlier attempts that failed.
    pub attempts: i64,
}

/// One failed-login window after recording an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginWindow {
    pub attempts: i64,
    pub window_start: Time,
}

/// The scope of the account-wide window, beside one per client address.
pub const ACCOUNT_SCOPE: &str = "*";

/// The windows a sign-in attempt was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInWindows {
    /// This account from this client address.
    pub from_address: LoginWindow,
    /// This account from everywhere.
    pub account: LoginWindow,
    /// Whether this address signed in to this account successfully lately.
    pub known_address: bool,
}

/// How long [`AuthStore::prune`] keeps what has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A failed-login window, from its start.
    pub login_window: chrono::TimeDelta,
    /// An address's standing as known, from its last successful sign-in.
    pub known_address: chrono::TimeDelta,
    /// A session that has ended, revoked or expired.
    pub ended_session: chrono::TimeDelta,
    /// An account-deleted event, from its time: a service down for longer
    /// than this when an account was deleted will not hear of it. (A
    /// session-ended event is removed once its tokens have expired.)
    pub deleted_account_event: chrono::TimeDelta,
}

#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Creates the user and their first session in one transaction.
    /// [`StoreError::Conflict`] when the email is taken.
    async fn create_user(&self, credentials: &Credentials, session: &NewSession) -> Result<()>;

    async fn user_by_email(&self, email: &str) -> Result<Option<Credentials>>;

    async fn user_by_id(&self, id: Uuid) -> Result<Option<Credentials>>;

    /// Starts a session for a sign-in whose password was checked against
    /// `verified_hash`, in one transaction that holds the user's row and
    /// goes ahead only while the stored hash is still that one: a
    /// ChangePassword that committed after the check makes this `false`
    /// (and creates nothing), so a sign-in with the old password can never
    /// outlive the change. With `rehash`, the stored hash is replaced by it
    /// in the same transaction (an upgrade to stronger parameters). The
    /// sign-in's success from `address` is recorded in it too, as
    /// [`AuthStore::record_sign_in_success`] would: one commit fewer per
    /// sign-in, and a sign-in refused here clears no failures.
    async fn start_session(
        &self,
        session: &NewSession,
        verified_hash: &str,
        rehash: Option<&str>,
        address: &str,
        now: Time,
    ) -> Result<bool>;

    /// Spends `spent` and, if it was live, stores `next` (its successor) for
    /// the same session with the session's idle expiry moved to `now +
    /// idle`, capped by its absolute expiry. See the module doc for why
    /// this is one statement. Presented again within `grace` of being
    /// spent, while `next` is still the session's live token, it answers
    /// [`Rotation::Repeated`]; otherwise a spent token is reuse and ends the
    /// session.
    async fn rotate_refresh_token(
        &self,
        spent: &TokenHash,
        next: &TokenHash,
        now: Time,
        idle: chrono::TimeDelta,
        grace: chrono::TimeDelta,
    ) -> Result<Rotation>;

    /// Ends the session owning this refresh token (spent or not). Returns
    /// whether a live session was ended.
    async fn revoke_session_by_token(&self, token: &TokenHash, now: Time) -> Result<bool>;

    /// The session if it belongs to `user_id` and is live at `now`.
    async fn live_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: Time,
    ) -> Result<Option<Session>>;

    /// The user's live sessions, newest first.
    async fn list_sessions(&self, user_id: Uuid, now: Time) -> Result<Vec<Session>>;

    /// Revokes one of the user's sessions; `false` if it is not theirs.
    async fn revoke_session(&self, user_id: Uuid, session_id: Uuid, now: Time) -> Result<bool>;

    /// In one transaction: sets the new hash, revokes every other session of
    /// the user, removes the live token of `session_id` and stores `next`
    /// for it. The removed token then answers "invalid", not "reused": only
    /// tokens spent by a refresh count as reuse.
    /// Returns the session with its new expiry, or `None` if it has ended.
    async fn change_password(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        password_hash: &str,
        next: &TokenHash,
        now: Time,
        idle: chrono::TimeDelta,
    ) -> Result<Option<Session>>;

    /// Counts one sign-in attempt for `email` from `address` (an address
    /// key) in two windows of `window` length, this address's and the
    /// account's (a window older than that starts over), and says whether
    /// `address` signed in to `email` successfully within `known_for`.
    /// Atomic, so concurrent attempts are all counted.
    async fn record_sign_in_attempt(
        &self,
        email: &str,
        address: &str,
        now: Time,
        window: chrono::TimeDelta,
        known_for: chrono::TimeDelta,
    ) -> Result<SignInWindows>;

    /// After a successful sign-in: forgets the attempts of `email` from
    /// `address` and remembers `address` as known for `email`. The
    /// account-wide window is left to run out.
    async fn record_sign_in_success(&self, email: &str, address: &str, now: Time) -> Result<()>;

    /// Removes what has ended longer ago than `keep` says; how many rows.
    async fn prune(&self, now: Time, keep: &Retention) -> Result<u64>;

    /// Deletes the user, their sessions and refresh tokens, and their
    /// sign-in history, and logs [`SessionEventKind::AccountDeleted`], in
    /// one transaction. `false` if there was no such user.
    async fn delete_account(&self, user_id: Uuid, now: Time) -> Result<bool>;

    /// Up to `limit` events after `after`, in order.
    async fn session_events_after(&self, after: i64, limit: i64) -> Result<Vec<SessionEvent>>;

    /// Counts one request in the window of `(key, scope)` (a window older
    /// than `window` starts over): the throttle of mail requests, kept like
    /// the sign-in windows.
    async fn count_request(
        &self,
        key: &str,
        scope: &str,
        now: Time,
        window: chrono::TimeDelta,
    ) -> Result<LoginWindow>;

    /// In one transaction: replaces `user_id`'s outstanding tokens of
    /// `kind` with `token` (valid until `expire`), and queues `mail`.
    async fn issue_mail_token(
        &self,
        user_id: Uuid,
        kind: MailTokenKind,
        token: &TokenHash,
        expire: Time,
        mail: &NewMail,
        now: Time,
    ) -> Result<()>;

    /// Spends an email-verification token: the user, now verified; `None`
    /// for a token that is unknown, used, expired or superseded.
    async fn verify_email(&self, token: &TokenHash, now: Time) -> Result<Option<User>>;

    /// Whether `token` is a reset token that [`AuthStore::reset_password`]
    /// would accept now (checked before paying for the new hash).
    async fn reset_token_is_live(&self, token: &TokenHash, now: Time) -> Result<bool>;

    /// Spends a reset token: sets `password_hash`, deletes every reset token
    /// of the user, ends every session (logging each), in one transaction.
    /// The user's id, or `None` for a token that is not live.
    async fn reset_password(
        &self,
        token: &TokenHash,
        password_hash: &str,
        now: Time,
    ) -> Result<Option<Uuid>>;

    /// Claims up to `limit` mails due at `now` for `lease` (other workers
    /// skip them meanwhile; a worker that dies lets the lease run out).
    async fn claim_mail(
        &self,
        now: Time,
        lease: chrono::TimeDelta,
        limit: i64,
    ) -> Result<Vec<OutgoingMail>>;

    /// Records a mail as sent and erases its body.
    async fn mail_sent(&self, id: Uuid, now: Time) -> Result<()>;

    /// Records a failed attempt: retried at `retry_at`, or, with `None`,
    /// failed for good (the body is erased).
    async fn mail_failed(&self, id: Uuid, now: Time, retry_at: Option<Time>) -> Result<()>;

    /// The service-wide secret named `name`: `candidate` (stored by the
    /// first caller), or the one stored before. Shared by every replica.
    async fn service_secret(&self, name: &str, candidate: &Sealed) -> Result<StoredSecret>;

    /// Every signing key, newest first.
    async fn signing_keys(&self) -> Result<Vec<StoredKey>>;

    /// Stores `key` (if its kid is new) and retires every other key at `now`,
    /// making `key` the one to sign with.
    async fn activate_signing_key(&self, kid: &str, private_key: &Sealed, now: Time) -> Result<()>;

    /// Stores `key` only if no active key exists (first start). Returns
    /// whether it was stored; concurrent first starts may both succeed,
    /// which is harmless (both keys are published, the newest signs).
    async fn insert_first_signing_key(
        &self,
        kid: &str,
        private_key: &Sealed,
        now: Time,
    ) -> Result<bool>;

    /// Every sealed or plain secret the database holds (signing keys,
    /// service secrets, queued mails), to be sealed again.
    async fn stored_secrets(&self) -> Result<Vec<(SecretSlot, StoredSecret)>>;

    /// Replaces the secret in `slot` by `sealed`.
    async fn reseal(&self, slot: &SecretSlot, sealed: &Sealed) -> Result<()>;
}

/// Where a stored secret lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSlot {
    SigningKey(String),
    ServiceSecret(String),
    Mail(Uuid),
}

impl SecretSlot {
    /// The associated data a secret in this slot is sealed with: a sealed
    /// value moved to another slot does not open.
    pub fn purpose(&self) -> Vec<u8> {
        match self {
            Self::SigningKey(kid) => format!("signing-key:{kid}"),
            Self::ServiceSecret(name) => format!("service-secret:{name}"),
            Self::Mail(id) => format!("mail:{id}"),
        }
        .into_bytes()
    }
}

/// The schema of the auth database, applied by [`Database::open`].
///
/// A new migration is a file in both folders and a line in each list here;
/// `every_migration_file_is_compiled_in` fails until both are done.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        migration!("migrations/sqlite", "0001_init.sql"),
        migration!("migrations/sqlite", "0002_sign_in_windows.sql"),
        migration!("migrations/sqlite", "0003_session_events.sql"),
        migration!("migrations/sqlite", "0004_account_recovery.sql"),
        migration!("migrations/sqlite", "0005_sealed_secrets.sql"),
    ],
    postgres: &[
        migration!("migrations/postgres", "0001_init.sql"),
        migration!("migrations/postgres", "0002_sign_in_windows.sql"),
        migration!("migrations/postgres", "0003_session_events.sql"),
        migration!("migrations/postgres", "0004_account_recovery.sql"),
        migration!("migrations/postgres", "0005_sealed_secrets.sql"),
    ],
};

/// The store for a database opened with [`MIGRATIONS`], for access tokens
/// that live `access_token_ttl` (the events it logs say when an ended
/// session's tokens are all expired).
pub fn open(
    database: &Database,
    access_token_ttl: chrono::TimeDelta,
) -> std::sync::Arc<dyn AuthStore> {
    std::sync::Arc::new(sql::SqlStore::new(
        serving::sql::Db::new(database.clone()),
        access_token_ttl,
    ))
}

#[cfg(test)]
mod migrations_tests {
    #[test]
    fn every_migration_file_is_compiled_in() {
        super::MIGRATIONS
            .assert_embed(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"));
    }
}
