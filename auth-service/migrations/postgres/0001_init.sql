-- Accounts, sessions, refresh tokens (hashed), signing keys and the
-- per-account failed-login window.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Normalised (trimmed, lower-cased): the unique index is what makes
    -- concurrent registrations of one address yield exactly one account.
    email         text NOT NULL UNIQUE,
    display_name  text NOT NULL,
    password_hash text NOT NULL,
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL
);

CREATE TABLE sessions (
    id                   uuid PRIMARY KEY,
    user_id              uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    create_time          timestamptz NOT NULL,
    last_refresh_time    timestamptz NOT NULL,
    -- The session ends here unless refreshed before (idle timeout).
    idle_expire_time     timestamptz NOT NULL,
    -- ...and here whatever happens (absolute lifetime).
    absolute_expire_time timestamptz NOT NULL,
    revoke_time          timestamptz,
    user_agent           text NOT NULL
);

CREATE INDEX sessions_by_user ON sessions (user_id, create_time);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    create_time timestamptz NOT NULL,
    expire_time timestamptz NOT NULL,
    spent_time  timestamptz
);

CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    private_key bytea NOT NULL,
    create_time timestamptz NOT NULL,
    retire_time timestamptz
);

CREATE TABLE login_attempts (
    email        text PRIMARY KEY,
    attempts     integer NOT NULL,
    window_start timestamptz NOT NULL
);
