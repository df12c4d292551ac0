//! [`AuthStore`] on SQLite or PostgreSQL: each operation written once.
//!
//! Ids are UUIDv7 and times UTC to the microsecond; `serving::sql` binds
//! them as each database stores them (TEXT and INTEGER microseconds on
//! SQLite, `uuid` and `timestamptz` on PostgreSQL). Writes run in
//! [`Db::begin_write`] transactions: on SQLite they hold the database's
//! write lock from the start; on PostgreSQL (READ COMMITTED) the rows a
//! decision depends on are read `FOR UPDATE`, and the rotation is still
//! race-free there because a second `UPDATE ... WHERE spent_time IS NULL`
//! on the same row waits for the first to commit, re-evaluates its
//! condition against the committed row, and updates nothing.

use async_trait::async_trait;
use chrono::TimeDelta;
use serving::sql::{Db, Row, Tx, statement};
use uuid::Uuid;

use super::*;

pub struct SqlStore {
    db: Db,
    /// How long after a session ends its tokens may still be valid: the
    /// access-token lifetime, plus the most leeway a verifier allows.
    tokens_outlive_session: TimeDelta,
}

impl SqlStore {
    pub fn new(db: Db, access_token_ttl: TimeDelta) -> Self {
        Self {
            db,
            tokens_outlive_session: access_token_ttl + TimeDelta::seconds(MAX_VERIFIER_LEEWAY_SECS),
        }
    }
}

/// The most clock-skew leeway any verifier of our tokens allows (the
/// task-service caps its `--token-leeway-secs` at 60).
const MAX_VERIFIER_LEEWAY_SECS: i64 = 60;

/// The advisory-lock key that serializes appends to `session_events`.
const SESSION_EVENTS_LOG: i64 = 0x5345_5353_494f_4e53; // "SESSIONS"

/// Logs, in `tx`, that `session_id` of `user_id` ended at `now`.
async fn log_session_ended(
    tx: &mut Tx,
    user_id: Uuid,
    session_id: Uuid,
    now: Time,
    tokens_expire: Time,
) -> Result<()> {
    tx.lock_log(SESSION_EVENTS_LOG).await?;
    statement(
        "INSERT INTO session_events (kind, user_id, session_id, event_time, tokens_expire_time)          VALUES ($1, $2, $3, $4, $5)",
    )
    .small_int(SessionEventKind::SessionEnded as i16)
    .uuid(user_id)
    .uuid(session_id)
    .time(now)
    .time(tokens_expire)
    .execute(tx)
    .await?;
    Ok(())
}

/// Ends every live session of `user_id` but `except`, logging each.
async fn end_sessions(
    tx: &mut Tx,
    user_id: Uuid,
    except: Option<Uuid>,
    now: Time,
    tokens_expire: Time,
) -> Result<()> {
    // The nil UUID is no session: with no exception, every session ends.
    let except = except.unwrap_or(Uuid::nil());
    tx.lock_log(SESSION_EVENTS_LOG).await?;
    statement(format!(
        "INSERT INTO session_events (kind, user_id, session_id, event_time, tokens_expire_time) \
         SELECT $4, user_id, id, $3, $5 FROM sessions \
         WHERE user_id = $1 AND id <> $2 AND {} ORDER BY id",
        live("$3")
    ))
    .uuid(user_id)
    .uuid(except)
    .time(now)
    .small_int(SessionEventKind::SessionEnded as i16)
    .time(tokens_expire)
    .execute(tx)
    .await?;
    statement(
        "UPDATE sessions SET revoke_time = COALESCE(revoke_time, $3) \
         WHERE user_id = $1 AND id <> $2",
    )
    .uuid(user_id)
    .uuid(except)
    .time(now)
    .execute(tx)
    .await?;
    Ok(())
}

fn session_event(row: &Row) -> Result<SessionEvent> {
    let kind = match row.small_int("kind")? {
        1 => SessionEventKind::SessionEnded,
        2 => SessionEventKind::AccountDeleted,
        other => return Err(StoreError::Corrupt(format!("session event kind {other}"))),
    };
    Ok(SessionEvent {
        sequence: row.big_int("sequence")?,
        kind,
        user_id: row.uuid("user_id")?,
        session_id: row.opt_uuid("session_id")?,
        time: row.time("event_time")?,
        tokens_expire_time: row.time("tokens_expire_time")?,
    })
}

const USER_COLUMNS: &str = "id, email, display_name, password_hash, create_time, email_verified";
const SESSION_COLUMNS: &str = "id, user_id, create_time, last_refresh_time, idle_expire_time, \
     absolute_expire_time, user_agent, \
     (SELECT email_verified FROM users WHERE users.id = sessions.user_id) AS email_verified";

/// A session is live while not revoked and before both of its expiries;
/// `now` names the placeholder bound to the current time.
fn live(now: &str) -> String {
    format!("revoke_time IS NULL AND idle_expire_time > {now} AND absolute_expire_time > {now}")
}

fn credentials(row: &Row) -> Result<Credentials> {
    Ok(Credentials {
        user: User {
            id: row.uuid("id")?,
            email: row.text("email")?,
            display_name: row.text("display_name")?,
            create_time: row.time("create_time")?,
            email_verified: row.bool("email_verified")?,
        },
        password_hash: row.text("password_hash")?,
    })
}

fn session(row: &Row) -> Result<Session> {
    Ok(Session {
        id: row.uuid("id")?,
        user_id: row.uuid("user_id")?,
        create_time: row.time("create_time")?,
        last_refresh_time: row.time("last_refresh_time")?,
        idle_expire_time: row.time("idle_expire_time")?,
        absolute_expire_time: row.time("absolute_expire_time")?,
        user_agent: row.text("user_agent")?,
        email_verified: row.bool("email_verified")?,
    })
}

/// The columns of a stored secret: `{value}`, and beside it how it is sealed.
const SEALED: &str = "kek_id, seal_algorithm, nonce";

/// The secret in `value` of `row`, with how it is sealed.
fn stored_secret(row: &Row, value: &str) -> Result<StoredSecret> {
    let bytes = row.bytes(value)?;
    Ok(match row.opt_text("kek_id")? {
        None => StoredSecret::Plain(bytes),
        Some(kek_id) => StoredSecret::Sealed(Sealed {
            kek_id,
            algorithm: row.opt_text("seal_algorithm")?.unwrap_or_default(),
            nonce: row.opt_bytes("nonce")?.unwrap_or_default(),
            ciphertext: bytes,
        }),
    })
}

fn login_window(row: &Row) -> Result<LoginWindow> {
    Ok(LoginWindow {
        attempts: row.big_int("attempts")?,
        window_start: row.time("window_start")?,
    })
}

async fn insert_session(tx: &mut Tx, new: &NewSession) -> Result<()> {
    let s = &new.session;
    statement(
        "INSERT INTO sessions (id, user_id, create_time, last_refresh_time, idle_expire_time, \
         absolute_expire_time, user_agent) VALUES ($1, $2, $3, $3, $4, $5, $6)",
    )
    .uuid(s.id)
    .uuid(s.user_id)
    .time(s.create_time)
    .time(s.idle_expire_time)
    .time(s.absolute_expire_time)
    .text(&s.user_agent)
    .execute(tx)
    .await?;
    insert_token(
        tx,
        &new.refresh_token,
        s.id,
        s.create_time,
        s.refresh_expire_time(),
    )
    .await
}

async fn insert_token(
    tx: &mut Tx,
    hash: &TokenHash,
    session_id: Uuid,
    now: Time,
    expire: Time,
) -> Result<()> {
    statement(
        "INSERT INTO refresh_tokens (token_hash, session_id, create_time, expire_time) \
         VALUES ($1, $2, $3, $4)",
    )
    .bytes(&hash[..])
    .uuid(session_id)
    .time(now)
    .time(expire)
    .execute(tx)
    .await?;
    Ok(())
}

/// Moves a session on after a refresh or a password change: its idle
/// expiry slides (never past the absolute one), and `next` becomes its
/// refresh token.
async fn renew_session(
    tx: &mut Tx,
    session_id: Uuid,
    next: &TokenHash,
    now: Time,
    idle: TimeDelta,
) -> Result<Option<Session>> {
    // The liveness check is in the writing statement: a revocation that
    // commits while this waits for the row is seen (PostgreSQL re-reads a
    // row it waited for), and the check costs no round trip of its own.
    let row = statement(format!(
        "UPDATE sessions SET last_refresh_time = $2, idle_expire_time = \
         CASE WHEN $3 < absolute_expire_time THEN $3 ELSE absolute_expire_time END \
         WHERE id = $1 AND {} RETURNING {SESSION_COLUMNS}",
        live("$2")
    ))
    .uuid(session_id)
    .time(now)
    .time(now + idle)
    .fetch_optional(tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let session = session(&row)?;
    insert_token(tx, next, session_id, now, session.refresh_expire_time()).await?;
    Ok(Some(session))
}

/// Whether the user's session is live at `now`, locking it for the rest of
/// `tx` (a concurrent revocation waits for us, or we for it).
async fn lock_live_session(
    tx: &mut Tx,
    user_id: Uuid,
    session_id: Uuid,
    now: Time,
) -> Result<bool> {
    let sql = format!(
        "SELECT id FROM sessions WHERE id = $1 AND user_id = $2 AND {}{}",
        live("$3"),
        tx.for_update()
    );
    Ok(statement(sql)
        .uuid(session_id)
        .uuid(user_id)
        .time(now)
        .fetch_optional(tx)
        .await?
        .is_some())
}

/// A successful sign-in of `email` from `address`: forgets that address's
/// attempts and remembers it as known (see
/// [`AuthStore::record_sign_in_success`]).
async fn signed_in_from(tx: &mut Tx, email: &str, address: &str, now: Time) -> Result<()> {
    statement("DELETE FROM login_attempts WHERE email = $1 AND scope = $2")
        .text(email)
        .text(address)
        .execute(&mut *tx)
        .await?;
    statement(
        "INSERT INTO known_addresses (email, address, last_success) VALUES ($1, $2, $3) \
         ON CONFLICT (email, address) DO UPDATE SET last_success = $3",
    )
    .text(email)
    .text(address)
    .time(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Counts one attempt in the window of `(email, scope)`; a window older
/// than `window` starts over.
async fn count_attempt(
    tx: &mut Tx,
    email: &str,
    scope: &str,
    now: Time,
    window: TimeDelta,
) -> Result<LoginWindow> {
    let row = statement(
        "INSERT INTO login_attempts (email, scope, attempts, window_start) VALUES ($1, $2, 1, $3) \
         ON CONFLICT (email, scope) DO UPDATE SET \
             attempts = CASE WHEN login_attempts.window_start <= $4 THEN 1 \
                             ELSE login_attempts.attempts + 1 END, \
             window_start = CASE WHEN login_attempts.window_start <= $4 THEN $3 \
                                 ELSE login_attempts.window_start END \
         RETURNING attempts, window_start",
    )
    .text(email)
    .text(scope)
    .time(now)
    .time(now - window)
    .fetch_one(tx)
    .await?;
    login_window(&row)
}

#[async_trait]
impl AuthStore for SqlStore {
    async fn create_user(&self, credentials: &Credentials, new: &NewSession) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let u = &credentials.user;
        statement(
            "INSERT INTO users (id, email, display_name, password_hash, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .uuid(u.id)
        .text(&u.email)
        .text(&u.display_name)
        .text(&credentials.password_hash)
        .time(u.create_time)
        .execute(&mut tx)
        .await?;
        insert_session(&mut tx, new).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<Credentials>> {
        statement(format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"))
            .text(email)
            .fetch_optional(&mut self.db.read().await?)
            .await?
            .as_ref()
            .map(credentials)
            .transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<Credentials>> {
        statement(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .uuid(id)
            .fetch_optional(&mut self.db.read().await?)
            .await?
            .as_ref()
            .map(credentials)
            .transpose()
    }

    async fn start_session(
        &self,
        new: &NewSession,
        verified_hash: &str,
        rehash: Option<&str>,
        address: &str,
        now: Time,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        // Locked: ChangePassword's update of this row waits for us (and then
        // revokes this session too), or we see its new hash and stop.
        let sql = format!(
            "SELECT email FROM users WHERE id = $1 AND password_hash = $2{}",
            tx.for_update()
        );
        let Some(unchanged) = statement(sql)
            .uuid(new.session.user_id)
            .text(verified_hash)
            .fetch_optional(&mut tx)
            .await?
        else {
            return Ok(false);
        };
        signed_in_from(&mut tx, &unchanged.text("email")?, address, now).await?;
        if let Some(stronger) = rehash {
            statement("UPDATE users SET password_hash = $2, update_time = $3 WHERE id = $1")
                .uuid(new.session.user_id)
                .text(stronger)
                .time(now)
                .execute(&mut tx)
                .await?;
        }
        insert_session(&mut tx, new).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rotate_refresh_token(
        &self,
        spent: &TokenHash,
        next: &TokenHash,
        now: Time,
        idle: TimeDelta,
        grace: TimeDelta,
    ) -> Result<Rotation> {
        let mut tx = self.db.begin_write().await?;
        let spent_now = statement(
            "UPDATE refresh_tokens SET spent_time = $2 \
             WHERE token_hash = $1 AND spent_time IS NULL AND expire_time > $2 \
             RETURNING session_id",
        )
        .bytes(&spent[..])
        .time(now)
        .fetch_optional(&mut tx)
        .await?;
        if let Some(row) = spent_now {
            let session_id = row.uuid("session_id")?;
            let renewed = renew_session(&mut tx, session_id, next, now, idle).await?;
            // Spent either way: a token of an ended session stays spent.
            tx.commit().await?;
            return Ok(renewed.map_or(Rotation::Invalid, Rotation::Rotated));
        }
        let previous = statement(
            "SELECT t.session_id, t.spent_time, s.user_id FROM refresh_tokens t \
             JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
        )
        .bytes(&spent[..])
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = previous else {
            return Ok(Rotation::Invalid);
        };
        let Some(spent_time) = row.opt_time("spent_time")? else {
            // Known but expired: nothing to revoke.
            return Ok(Rotation::Invalid);
        };
        let session_id = row.uuid("session_id")?;
        let user_id = row.uuid("user_id")?;
        if spent_time > now - grace {
            // Another tab's refresh spent it a moment ago: if its successor
            // is still the session's live token, the session goes on.
            let successor = statement(format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE sessions.id = $1 AND {} AND EXISTS \
                 (SELECT 1 FROM refresh_tokens t WHERE t.token_hash = $3 \
                  AND t.session_id = sessions.id \
                  AND t.spent_time IS NULL AND t.expire_time > $2)",
                live("$2")
            ))
            .uuid(session_id)
            .time(now)
            .bytes(&next[..])
            .fetch_optional(&mut tx)
            .await?;
            if let Some(row) = successor {
                tx.commit().await?;
                return Ok(Rotation::Repeated(session(&row)?));
            }
        }
        let ended = statement(
            "UPDATE sessions SET revoke_time = $2 WHERE id = $1 AND revoke_time IS NULL \
             RETURNING id",
        )
        .uuid(session_id)
        .time(now)
        .fetch_optional(&mut tx)
        .await?;
        if ended.is_some() {
            log_session_ended(
                &mut tx,
                user_id,
                session_id,
                now,
                now + self.tokens_outlive_session,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Rotation::Reused {
            session_id,
            user_id,
        })
    }

    async fn revoke_session_by_token(&self, token: &TokenHash, now: Time) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        let ended = statement(
            "UPDATE sessions SET revoke_time = $2 \
             WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1) \
             AND revoke_time IS NULL RETURNING id, user_id",
        )
        .bytes(&token[..])
        .time(now)
        .fetch_optional(&mut tx)
        .await?;
        if let Some(row) = &ended {
            let tokens_expire = now + self.tokens_outlive_session;
            log_session_ended(
                &mut tx,
                row.uuid("user_id")?,
                row.uuid("id")?,
                now,
                tokens_expire,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ended.is_some())
    }

    async fn live_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: Time,
    ) -> Result<Option<Session>> {
        statement(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2 AND {}",
            live("$3")
        ))
        .uuid(session_id)
        .uuid(user_id)
        .time(now)
        .fetch_optional(&mut self.db.read().await?)
        .await?
        .as_ref()
        .map(session)
        .transpose()
    }

    async fn list_sessions(&self, user_id: Uuid, now: Time) -> Result<Vec<Session>> {
        statement(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND {} \
             ORDER BY create_time DESC, id DESC",
            live("$2")
        ))
        .uuid(user_id)
        .time(now)
        .fetch_all(&mut self.db.read().await?)
        .await?
        .iter()
        .map(session)
        .collect()
    }

    async fn revoke_session(&self, user_id: Uuid, session_id: Uuid, now: Time) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        let ended = statement(
            "UPDATE sessions SET revoke_time = $3 \
             WHERE id = $1 AND user_id = $2 AND revoke_time IS NULL",
        )
        .uuid(session_id)
        .uuid(user_id)
        .time(now)
        .execute(&mut tx)
        .await?;
        if ended > 0 {
            let tokens_expire = now + self.tokens_outlive_session;
            log_session_ended(&mut tx, user_id, session_id, now, tokens_expire).await?;
            tx.commit().await?;
            return Ok(true);
        }
        // Already ended: still the caller's, so not NOT_FOUND.
        let theirs = statement("SELECT id FROM sessions WHERE id = $1 AND user_id = $2")
            .uuid(session_id)
            .uuid(user_id)
            .fetch_optional(&mut tx)
            .await?
            .is_some();
        tx.commit().await?;
        Ok(theirs)
    }

    async fn change_password(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        password_hash: &str,
        next: &TokenHash,
        now: Time,
        idle: TimeDelta,
    ) -> Result<Option<Session>> {
        let mut tx = self.db.begin_write().await?;
        // The new token is never issued to a session revoked meanwhile.
        if !lock_live_session(&mut tx, user_id, session_id, now).await? {
            return Ok(None);
        }
        statement("UPDATE users SET password_hash = $2, update_time = $3 WHERE id = $1")
            .uuid(user_id)
            .text(password_hash)
            .time(now)
            .execute(&mut tx)
            .await?;
        end_sessions(
            &mut tx,
            user_id,
            Some(session_id),
            now,
            now + self.tokens_outlive_session,
        )
        .await?;
        // A password change voids every outstanding reset link.
        statement("DELETE FROM mail_tokens WHERE user_id = $1 AND kind = $2")
            .uuid(user_id)
            .small_int(MailTokenKind::ResetPassword as i16)
            .execute(&mut tx)
            .await?;
        statement("DELETE FROM refresh_tokens WHERE session_id = $1 AND spent_time IS NULL")
            .uuid(session_id)
            .execute(&mut tx)
            .await?;
        let Some(session) = renew_session(&mut tx, session_id, next, now, idle).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(session))
    }

    async fn record_sign_in_attempt(
        &self,
        email: &str,
        address: &str,
        now: Time,
        window: TimeDelta,
        known_for: TimeDelta,
    ) -> Result<SignInWindows> {
        let mut tx = self.db.begin_write().await?;
        let from_address = count_attempt(&mut tx, email, address, now, window).await?;
        let account = count_attempt(&mut tx, email, ACCOUNT_SCOPE, now, window).await?;
        let known_address = statement(
            "SELECT address FROM known_addresses \
             WHERE email = $1 AND address = $2 AND last_success > $3",
        )
        .text(email)
        .text(address)
        .time(now - known_for)
        .fetch_optional(&mut tx)
        .await?
        .is_some();
        tx.commit().await?;
        Ok(SignInWindows {
            from_address,
            account,
            known_address,
        })
    }

    async fn record_sign_in_success(&self, email: &str, address: &str, now: Time) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        signed_in_from(&mut tx, email, address, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>> {
        statement(format!(
            "SELECT kid, private_key, {SEALED}, create_time, retire_time FROM signing_keys \
             ORDER BY create_time DESC"
        ))
        .fetch_all(&mut self.db.read().await?)
        .await?
        .iter()
        .map(|row| {
            Ok(StoredKey {
                kid: row.text("kid")?,
                private_key: stored_secret(row, "private_key")?,
                create_time: row.time("create_time")?,
                retire_time: row.opt_time("retire_time")?,
            })
        })
        .collect()
    }

    async fn activate_signing_key(&self, kid: &str, private_key: &Sealed, now: Time) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        statement(
            "INSERT INTO signing_keys (kid, private_key, kek_id, seal_algorithm, nonce, create_time) \
             VALUES ($1, $2, $4, $5, $6, $3) \
             ON CONFLICT (kid) DO UPDATE SET retire_time = NULL, create_time = $3",
        )
        .text(kid)
        .bytes(&private_key.ciphertext[..])
        .time(now)
        .text(&private_key.kek_id)
        .text(&private_key.algorithm)
        .bytes(&private_key.nonce[..])
        .execute(&mut tx)
        .await?;
        statement(
            "UPDATE signing_keys SET retire_time = $2 WHERE kid <> $1 AND retire_time IS NULL",
        )
        .text(kid)
        .time(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_first_signing_key(
        &self,
        kid: &str,
        private_key: &Sealed,
        now: Time,
    ) -> Result<bool> {
        let inserted = statement(
            "INSERT INTO signing_keys (kid, private_key, kek_id, seal_algorithm, nonce, create_time) \
             SELECT $1, $2, $4, $5, $6, $3 WHERE NOT EXISTS \
             (SELECT 1 FROM signing_keys WHERE retire_time IS NULL)",
        )
        .text(kid)
        .bytes(&private_key.ciphertext[..])
        .time(now)
        .text(&private_key.kek_id)
        .text(&private_key.algorithm)
        .bytes(&private_key.nonce[..])
        .execute(&mut self.db.write().await?)
        .await?;
        Ok(inserted > 0)
    }

    async fn prune(&self, now: Time, keep: &Retention) -> Result<u64> {
        let mut tx = self.db.begin_write().await?;
        let mut removed = statement("DELETE FROM login_attempts WHERE window_start <= $1")
            .time(now - keep.login_window)
            .execute(&mut tx)
            .await?;
        removed += statement("DELETE FROM known_addresses WHERE last_success <= $1")
            .time(now - keep.known_address)
            .execute(&mut tx)
            .await?;
        // A session ended this long ago can have no token left that any
        // service still accepts; its refresh tokens go with it (cascade).
        removed += statement(
            "DELETE FROM sessions WHERE revoke_time <= $1 OR idle_expire_time <= $1 \
             OR absolute_expire_time <= $1",
        )
        .time(now - keep.ended_session)
        .execute(&mut tx)
        .await?;
        removed += statement(
            "DELETE FROM session_events WHERE (kind = $1 AND tokens_expire_time <= $2) \
             OR event_time <= $3",
        )
        .small_int(SessionEventKind::SessionEnded as i16)
        .time(now)
        .time(now - keep.deleted_account_event)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn delete_account(&self, user_id: Uuid, now: Time) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        // Sessions and refresh tokens go with the user (ON DELETE CASCADE).
        let Some(deleted) = statement("DELETE FROM users WHERE id = $1 RETURNING email")
            .uuid(user_id)
            .fetch_optional(&mut tx)
            .await?
        else {
            return Ok(false);
        };
        let email = deleted.text("email")?;
        for table in ["login_attempts", "known_addresses"] {
            statement(format!("DELETE FROM {table} WHERE email = $1"))
                .text(&email)
                .execute(&mut tx)
                .await?;
        }
        tx.lock_log(SESSION_EVENTS_LOG).await?;
        statement(
            "INSERT INTO session_events (kind, user_id, session_id, event_time, tokens_expire_time) \
             VALUES ($1, $2, NULL, $3, $4)",
        )
        .small_int(SessionEventKind::AccountDeleted as i16)
        .uuid(user_id)
        .time(now)
        .time(now + self.tokens_outlive_session)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn session_events_after(&self, after: i64, limit: i64) -> Result<Vec<SessionEvent>> {
        statement(
            "SELECT sequence, kind, user_id, session_id, event_time, tokens_expire_time \
             FROM session_events WHERE sequence > $1 ORDER BY sequence LIMIT $2",
        )
        .big_int(after)
        .big_int(limit)
        .fetch_all(&mut self.db.read().await?)
        .await?
        .iter()
        .map(session_event)
        .collect()
    }

    async fn count_request(
        &self,
        key: &str,
        scope: &str,
        now: Time,
        window: TimeDelta,
    ) -> Result<LoginWindow> {
        let mut tx = self.db.begin_write().await?;
        let counted = count_attempt(&mut tx, key, scope, now, window).await?;
        tx.commit().await?;
        Ok(counted)
    }

    async fn issue_mail_token(
        &self,
        user_id: Uuid,
        kind: MailTokenKind,
        token: &TokenHash,
        expire: Time,
        mail: &NewMail,
        now: Time,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        statement("DELETE FROM mail_tokens WHERE user_id = $1 AND kind = $2")
            .uuid(user_id)
            .small_int(kind as i16)
            .execute(&mut tx)
            .await?;
        statement(
            "INSERT INTO mail_tokens (token_hash, user_id, kind, create_time, expire_time) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bytes(&token[..])
        .uuid(user_id)
        .small_int(kind as i16)
        .time(now)
        .time(expire)
        .execute(&mut tx)
        .await?;
        statement(
            "INSERT INTO outbox (id, recipient, body, kek_id, seal_algorithm, nonce, create_time, \
             attempts, next_attempt_time) VALUES ($1, $2, $3, $5, $6, $7, $4, 0, $4)",
        )
        .uuid(mail.id)
        .text(&mail.recipient)
        .bytes(&mail.message.ciphertext[..])
        .time(now)
        .text(&mail.message.kek_id)
        .text(&mail.message.algorithm)
        .bytes(&mail.message.nonce[..])
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn verify_email(&self, token: &TokenHash, now: Time) -> Result<Option<User>> {
        let mut tx = self.db.begin_write().await?;
        let spent = statement(
            "DELETE FROM mail_tokens WHERE token_hash = $1 AND kind = $2 AND expire_time > $3 \
             RETURNING user_id",
        )
        .bytes(&token[..])
        .small_int(MailTokenKind::VerifyEmail as i16)
        .time(now)
        .fetch_optional(&mut tx)
        .await?;
        let Some(spent) = spent else {
            return Ok(None);
        };
        let row = statement(format!(
            "UPDATE users SET email_verified = TRUE, update_time = $2 WHERE id = $1 \
             RETURNING {USER_COLUMNS}"
        ))
        .uuid(spent.uuid("user_id")?)
        .time(now)
        .fetch_one(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Some(credentials(&row)?.user))
    }

    async fn reset_token_is_live(&self, token: &TokenHash, now: Time) -> Result<bool> {
        Ok(statement(
            "SELECT user_id FROM mail_tokens WHERE token_hash = $1 AND kind = $2 \
             AND expire_time > $3",
        )
        .bytes(&token[..])
        .small_int(MailTokenKind::ResetPassword as i16)
        .time(now)
        .fetch_optional(&mut self.db.read().await?)
        .await?
        .is_some())
    }

    async fn reset_password(
        &self,
        token: &TokenHash,
        password_hash: &str,
        now: Time,
    ) -> Result<Option<Uuid>> {
        let mut tx = self.db.begin_write().await?;
        let spent = statement(
            "DELETE FROM mail_tokens WHERE token_hash = $1 AND kind = $2 AND expire_time > $3 \
             RETURNING user_id",
        )
        .bytes(&token[..])
        .small_int(MailTokenKind::ResetPassword as i16)
        .time(now)
        .fetch_optional(&mut tx)
        .await?;
        let Some(spent) = spent else {
            return Ok(None);
        };
        let user_id = spent.uuid("user_id")?;
        // Every other reset link dies with this one.
        statement("DELETE FROM mail_tokens WHERE user_id = $1 AND kind = $2")
            .uuid(user_id)
            .small_int(MailTokenKind::ResetPassword as i16)
            .execute(&mut tx)
            .await?;
        statement("UPDATE users SET password_hash = $2, update_time = $3 WHERE id = $1")
            .uuid(user_id)
            .text(password_hash)
            .time(now)
            .execute(&mut tx)
            .await?;
        end_sessions(
            &mut tx,
            user_id,
            None,
            now,
            now + self.tokens_outlive_session,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }

    async fn claim_mail(
        &self,
        now: Time,
        lease: TimeDelta,
        limit: i64,
    ) -> Result<Vec<OutgoingMail>> {
        let mut tx = self.db.begin_write().await?;
        let sql = format!(
            "SELECT id, recipient, body, {SEALED}, attempts FROM outbox \
             WHERE sent_time IS NULL AND failed_time IS NULL AND next_attempt_time <= $1 \
             AND (claimed_until IS NULL OR claimed_until <= $1) \
             ORDER BY next_attempt_time LIMIT $2{}",
            tx.for_update_skip_locked()
        );
        let rows = statement(sql)
            .time(now)
            .big_int(limit)
            .fetch_all(&mut tx)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = row.uuid("id")?;
            statement("UPDATE outbox SET claimed_until = $2 WHERE id = $1")
                .uuid(id)
                .time(now + lease)
                .execute(&mut tx)
                .await?;
            claimed.push(OutgoingMail {
                id,
                recipient: row.text("recipient")?,
                message: stored_secret(row, "body")?,
                attempts: row.big_int("attempts")?,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn mail_sent(&self, id: Uuid, now: Time) -> Result<()> {
        statement(
            "UPDATE outbox SET sent_time = $2, claimed_until = NULL, body = $3 WHERE id = $1",
        )
        .uuid(id)
        .time(now)
        .bytes(Vec::new())
        .execute(&mut self.db.write().await?)
        .await?;
        Ok(())
    }

    async fn mail_failed(&self, id: Uuid, now: Time, retry_at: Option<Time>) -> Result<()> {
        let statement = match retry_at {
            Some(retry_at) => statement(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_time = $2, \
                 claimed_until = NULL WHERE id = $1",
            )
            .uuid(id)
            .time(retry_at),
            None => statement(
                "UPDATE outbox SET attempts = attempts + 1, failed_time = $2, \
                 claimed_until = NULL, body = $3 WHERE id = $1",
            )
            .uuid(id)
            .time(now)
            .bytes(Vec::new()),
        };
        statement.execute(&mut self.db.write().await?).await?;
        Ok(())
    }

    async fn service_secret(&self, name: &str, candidate: &Sealed) -> Result<StoredSecret> {
        let mut conn = self.db.write().await?;
        statement(
            "INSERT INTO service_secrets (name, value, kek_id, seal_algorithm, nonce) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .text(name)
        .bytes(&candidate.ciphertext[..])
        .text(&candidate.kek_id)
        .text(&candidate.algorithm)
        .bytes(&candidate.nonce[..])
        .execute(&mut conn)
        .await?;
        let row = statement(format!(
            "SELECT value, {SEALED} FROM service_secrets WHERE name = $1"
        ))
        .text(name)
        .fetch_one(&mut conn)
        .await?;
        stored_secret(&row, "value")
    }

    async fn stored_secrets(&self) -> Result<Vec<(SecretSlot, StoredSecret)>> {
        let mut conn = self.db.read().await?;
        let mut secrets = Vec::new();
        for row in statement(format!(
            "SELECT kid, private_key, {SEALED} FROM signing_keys"
        ))
        .fetch_all(&mut conn)
        .await?
        {
            secrets.push((
                SecretSlot::SigningKey(row.text("kid")?),
                stored_secret(&row, "private_key")?,
            ));
        }
        for row in statement(format!("SELECT name, value, {SEALED} FROM service_secrets"))
            .fetch_all(&mut conn)
            .await?
        {
            secrets.push((
                SecretSlot::ServiceSecret(row.text("name")?),
                stored_secret(&row, "value")?,
            ));
        }
        for row in statement(format!(
            "SELECT id, body, {SEALED} FROM outbox WHERE sent_time IS NULL AND failed_time IS NULL"
        ))
        .fetch_all(&mut conn)
        .await?
        {
            secrets.push((
                SecretSlot::Mail(row.uuid("id")?),
                stored_secret(&row, "body")?,
            ));
        }
        Ok(secrets)
    }

    async fn reseal(&self, slot: &SecretSlot, sealed: &Sealed) -> Result<()> {
        let sql = match slot {
            SecretSlot::SigningKey(_) => {
                "UPDATE signing_keys SET private_key = $2, kek_id = $3, seal_algorithm = $4, \
                 nonce = $5 WHERE kid = $1"
            }
            SecretSlot::ServiceSecret(_) => {
                "UPDATE service_secrets SET value = $2, kek_id = $3, seal_algorithm = $4, \
                 nonce = $5 WHERE name = $1"
            }
            SecretSlot::Mail(_) => {
                "UPDATE outbox SET body = $2, kek_id = $3, seal_algorithm = $4, nonce = $5 \
                 WHERE id = $1"
            }
        };
        let statement = match slot {
            SecretSlot::SigningKey(kid) | SecretSlot::ServiceSecret(kid) => {
                statement(sql).text(kid.as_str())
            }
            SecretSlot::Mail(id) => statement(sql).uuid(*id),
        };
        statement
            .bytes(&sealed.ciphertext[..])
            .text(&sealed.kek_id)
            .text(&sealed.algorithm)
            .bytes(&sealed.nonce[..])
            .execute(&mut self.db.write().await?)
            .await?;
        Ok(())
    }
}
