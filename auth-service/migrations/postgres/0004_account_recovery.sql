-- Email verification and password reset.
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;

-- Tokens of the links in verification and reset mails: 256 random bits,
-- stored only as SHA-256, single use. A new token of a kind supersedes the
-- user's older ones (they are deleted), and a reset or password change
-- deletes every reset token.
CREATE TABLE mail_tokens (
    token_hash  bytea       NOT NULL PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- 1: verify the email address; 2: reset the password.
    kind        smallint    NOT NULL,
    create_time timestamptz NOT NULL,
    expire_time timestamptz NOT NULL
);
CREATE INDEX mail_tokens_by_user ON mail_tokens (user_id, kind);

-- The transactional outbox: a mail is written here in the transaction that
-- makes its token, and a delivery worker sends it (claiming rows with FOR
-- UPDATE SKIP LOCKED and a lease, so replicas never send one twice in
-- normal operation and a crash mid-send only delays it). The body is erased
-- once the mail is sent or has failed for good.
CREATE TABLE outbox (
    id                uuid        NOT NULL PRIMARY KEY,
    recipient         text        NOT NULL,
    body              bytea       NOT NULL,
    create_time       timestamptz NOT NULL,
    attempts          bigint      NOT NULL,
    next_attempt_time timestamptz NOT NULL,
    claimed_until     timestamptz,
    sent_time         timestamptz,
    failed_time       timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_time) WHERE sent_time IS NULL AND failed_time IS NULL;
