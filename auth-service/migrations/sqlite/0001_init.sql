-- Accounts, sessions, refresh tokens (hashed), signing keys and the
-- per-account failed-login window. Times are microseconds since the Unix
-- epoch (INTEGER), ids are hyphenated UUID text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    -- Normalised (trimmed, lower-cased): the unique index is what makes
    -- concurrent registrations of one address yield exactly one account.
    email         TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    create_time   INTEGER NOT NULL,
    update_time   INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id                   TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    create_time          INTEGER NOT NULL,
    last_refresh_time    INTEGER NOT NULL,
    -- The session ends here unless refreshed before (idle timeout).
    idle_expire_time     INTEGER NOT NULL,
    -- ...and here whatever happens (absolute lifetime).
    absolute_expire_time INTEGER NOT NULL,
    revoke_time          INTEGER,
    user_agent           TEXT NOT NULL
) STRICT;

CREATE INDEX sessions_by_user ON sessions (user_id, create_time);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash  BLOB PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    create_time INTEGER NOT NULL,
    expire_time INTEGER NOT NULL,
    spent_time  INTEGER
) STRICT;

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_key BLOB NOT NULL,
    create_time INTEGER NOT NULL,
    retire_time INTEGER
) STRICT;

CREATE TABLE login_attempts (
    email        TEXT PRIMARY KEY,
    attempts     INTEGER NOT NULL,
    window_start INTEGER NOT NULL
) STRICT;
