-- Email verification and password reset.
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;

-- Tokens of the links in verification and reset mails: 256 random bits,
-- stored only as SHA-256, single use. A new token of a kind supersedes the
-- user's older ones (they are deleted), and a reset or password change
-- deletes every reset token.
CREATE TABLE mail_tokens (
    token_hash  BLOB    NOT NULL PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- 1: verify the email address; 2: reset the password.
    kind        INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    expire_time INTEGER NOT NULL
) STRICT;
CREATE INDEX mail_tokens_by_user ON mail_tokens (user_id, kind);

-- The transactional outbox: a mail is written here in the transaction that
-- makes its token, and a delivery worker sends it (one process on SQLite;
-- a lease means a crash mid-send only delays it). The body is erased once
-- the mail is sent or has failed for good.
CREATE TABLE outbox (
    id                TEXT    NOT NULL PRIMARY KEY,
    recipient         TEXT    NOT NULL,
    body              BLOB    NOT NULL,
    create_time       INTEGER NOT NULL,
    attempts          INTEGER NOT NULL,
    next_attempt_time INTEGER NOT NULL,
    claimed_until     INTEGER,
    sent_time         INTEGER,
    failed_time       INTEGER
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_time) WHERE sent_time IS NULL AND failed_time IS NULL;
