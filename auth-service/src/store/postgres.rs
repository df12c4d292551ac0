//! [`AuthStore`] on PostgreSQL (or a compatible engine), with native
//! `uuid` and `timestamptz` columns.
//!
//! Transactions run at READ COMMITTED. The rotation update is still
//! race-free: a second `UPDATE ... WHERE spent_time IS NULL` on the same row
//! waits for the first to commit, re-evaluates its condition against the
//! committed row, and updates nothing.

use async_trait::async_trait;
use chrono::TimeDelta;
use sqlx::{PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use super::*;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn credentials(row: &PgRow) -> Result<Credentials> {
    Ok(Credentials {
        user: User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            display_name: row.try_get("display_name")?,
            create_time: row.try_get("create_time")?,
        },
        password_hash: row.try_get("password_hash")?,
    })
}

fn session(row: &PgRow) -> Result<Session> {
    Ok(Session {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        create_time: row.try_get("create_time")?,
        last_refresh_time: row.try_get("last_refresh_time")?,
        idle_expire_time: row.try_get("idle_expire_time")?,
        absolute_expire_time: row.try_get("absolute_expire_time")?,
        user_agent: row.try_get("user_agent")?,
    })
}

const USER_COLUMNS: &str = "id, email, display_name, password_hash, create_time";
const SESSION_COLUMNS: &str = "id, user_id, create_time, last_refresh_time, idle_expire_time, absolute_expire_time, user_agent";
/// A session is live while not revoked and before both of its expiries;
/// `now` names the placeholder bound to the current time.
fn live(now: &str) -> String {
    format!("revoke_time IS NULL AND idle_expire_time > {now} AND absolute_expire_time > {now}")
}

async fn insert_session(conn: &mut sqlx::PgConnection, new: &NewSession) -> Result<()> {
    let s = &new.session;
    sqlx::query(
        "INSERT INTO sessions (id, user_id, create_time, last_refresh_time, idle_expire_time, absolute_expire_time, user_agent)
         VALUES ($1, $2, $3, $3, $4, $5, $6)",
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(s.create_time)
    .bind(s.idle_expire_time)
    .bind(s.absolute_expire_time)
    .bind(&s.user_agent)
    .execute(&mut *conn)
    .await?;
    insert_token(
        conn,
        &new.refresh_token,
        s.id,
        s.create_time,
        s.refresh_expire_time(),
    )
    .await
}

async fn insert_token(
    conn: &mut sqlx::PgConnection,
    hash: &TokenHash,
    session_id: Uuid,
    now: Time,
    expire: Time,
) -> Result<()> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, create_time, expire_time) VALUES ($1, $2, $3, $4)")
        .bind(&hash[..])
        .bind(session_id)
        .bind(now)
        .bind(expire)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn touch_session(
    conn: &mut sqlx::PgConnection,
    session_id: Uuid,
    now: Time,
    idle: TimeDelta,
) -> Result<Session> {
    let row = sqlx::query(&format!(
        "UPDATE sessions SET last_refresh_time = $2, idle_expire_time = LEAST($3, absolute_expire_time)
         WHERE id = $1 RETURNING {SESSION_COLUMNS}"
    ))
    .bind(session_id)
    .bind(now)
    .bind(now + idle)
    .fetch_one(&mut *conn)
    .await?;
    session(&row)
}

/// Moves a session on after a refresh or a password change: its idle
/// expiry slides, and `next` becomes its refresh token.
async fn renew_session(
    conn: &mut sqlx::PgConnection,
    session_id: Uuid,
    next: &TokenHash,
    now: Time,
    idle: TimeDelta,
) -> Result<Session> {
    let session = touch_session(conn, session_id, now, idle).await?;
    insert_token(conn, next, session_id, now, session.refresh_expire_time()).await?;
    Ok(session)
}

#[async_trait]
impl AuthStore for PostgresStore {
    async fn create_user(&self, credentials: &Credentials, new: &NewSession) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let u = &credentials.user;
        sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, create_time, update_time)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(u.id)
        .bind(&u.email)
        .bind(&u.display_name)
        .bind(&credentials.password_hash)
        .bind(u.create_time)
        .execute(&mut *tx)
        .await?;
        insert_session(&mut tx, new).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<Credentials>> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(credentials)
        .transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> Result<Option<Credentials>> {
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
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
        now: Time,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: ChangePassword's UPDATE of this row waits for us (and
        // then revokes this session too), or we see its new hash and stop.
        let unchanged: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM users WHERE id = $1 AND password_hash = $2 FOR UPDATE",
        )
        .bind(new.session.user_id)
        .bind(verified_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if unchanged.is_none() {
            return Ok(false);
        }
        if let Some(stronger) = rehash {
            sqlx::query("UPDATE users SET password_hash = $2, update_time = $3 WHERE id = $1")
                .bind(new.session.user_id)
                .bind(stronger)
                .bind(now)
                .execute(&mut *tx)
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
    ) -> Result<Rotation> {
        let mut tx = self.pool.begin().await?;
        let spent_now: Option<Uuid> = sqlx::query_scalar(
            "UPDATE refresh_tokens SET spent_time = $2
             WHERE token_hash = $1 AND spent_time IS NULL AND expire_time > $2
             RETURNING session_id",
        )
        .bind(&spent[..])
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(session_id) = spent_now {
            let is_live: Option<i32> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM sessions WHERE id = $1 AND {}",
                live("$2")
            ))
            .bind(session_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if is_live.is_none() {
                tx.commit().await?;
                return Ok(Rotation::Invalid);
            }
            let session = renew_session(&mut tx, session_id, next, now, idle).await?;
            tx.commit().await?;
            return Ok(Rotation::Rotated(session));
        }
        let previous = sqlx::query(
            "SELECT t.session_id, t.spent_time, s.user_id FROM refresh_tokens t
             JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
        )
        .bind(&spent[..])
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = previous else {
            return Ok(Rotation::Invalid);
        };
        let spent_time: Option<Time> = row.try_get("spent_time")?;
        if spent_time.is_none() {
            // Known but expired: nothing to revoke.
            return Ok(Rotation::Invalid);
        }
        let session_id: Uuid = row.try_get("session_id")?;
        let user_id: Uuid = row.try_get("user_id")?;
        sqlx::query("UPDATE sessions SET revoke_time = COALESCE(revoke_time, $2) WHERE id = $1")
            .bind(session_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Rotation::Reused {
            session_id,
            user_id,
        })
    }

    async fn revoke_session_by_token(&self, token: &TokenHash, now: Time) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE sessions SET revoke_time = COALESCE(revoke_time, $2)
             WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1)",
        )
        .bind(&token[..])
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn live_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: Time,
    ) -> Result<Option<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2 AND {}",
            live("$3")
        ))
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(session)
        .transpose()
    }

    async fn list_sessions(&self, user_id: Uuid, now: Time) -> Result<Vec<Session>> {
        sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND {} ORDER BY create_time DESC, id DESC", live("$2")
        ))
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session)
        .collect()
    }

    async fn revoke_session(&self, user_id: Uuid, session_id: Uuid, now: Time) -> Result<bool> {
        let result =
            sqlx::query("UPDATE sessions SET revoke_time = COALESCE(revoke_time, $3) WHERE id = $1 AND user_id = $2")
                .bind(session_id)
                .bind(user_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() > 0)
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
        let mut tx = self.pool.begin().await?;
        // FOR UPDATE: a concurrent revocation of this session waits for us
        // (or we for it), so the new token is never issued to a dead session.
        let is_live: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND {} FOR UPDATE",
            live("$3")
        ))
        .bind(session_id)
        .bind(user_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if is_live.is_none() {
            return Ok(None);
        }
        sqlx::query("UPDATE users SET password_hash = $2, update_time = $3 WHERE id = $1")
            .bind(user_id)
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE sessions SET revoke_time = COALESCE(revoke_time, $3) WHERE user_id = $1 AND id <> $2")
            .bind(user_id)
            .bind(session_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE session_id = $1 AND spent_time IS NULL")
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        let session = renew_session(&mut tx, session_id, next, now, idle).await?;
        tx.commit().await?;
        Ok(Some(session))
    }

    async fn record_login_attempt(
        &self,
        email: &str,
        now: Time,
        window: TimeDelta,
    ) -> Result<LoginWindow> {
        let row = sqlx::query(
            "INSERT INTO login_attempts AS a (email, attempts, window_start) VALUES ($1, 1, $2)
             ON CONFLICT (email) DO UPDATE SET
                 attempts = CASE WHEN a.window_start <= $3 THEN 1 ELSE a.attempts + 1 END,
                 window_start = CASE WHEN a.window_start <= $3 THEN $2 ELSE a.window_start END
             RETURNING attempts, window_start",
        )
        .bind(email)
        .bind(now)
        .bind(now - window)
        .fetch_one(&self.pool)
        .await?;
        Ok(LoginWindow {
            attempts: i64::from(row.try_get::<i32, _>("attempts")?),
            window_start: row.try_get("window_start")?,
        })
    }

    async fn clear_login_attempts(&self, email: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_attempts WHERE email = $1")
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredKey>> {
        sqlx::query("SELECT kid, private_key, create_time, retire_time FROM signing_keys ORDER BY create_time DESC")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    private_key: row.try_get("private_key")?,
                    create_time: row.try_get("create_time")?,
                    retire_time: row.try_get("retire_time")?,
                })
            })
            .collect()
    }

    async fn activate_signing_key(&self, kid: &str, private_key: &[u8], now: Time) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, create_time) VALUES ($1, $2, $3)
             ON CONFLICT (kid) DO UPDATE SET retire_time = NULL, create_time = $3",
        )
        .bind(kid)
        .bind(private_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE signing_keys SET retire_time = $2 WHERE kid <> $1 AND retire_time IS NULL",
        )
        .bind(kid)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_first_signing_key(
        &self,
        kid: &str,
        private_key: &[u8],
        now: Time,
    ) -> Result<bool> {
        let result = sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, create_time)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retire_time IS NULL)",
        )
        .bind(kid)
        .bind(private_key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }
}
