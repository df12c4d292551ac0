-- The durable, ordered log of session events that other services follow
-- (auth.internal.v1.SessionEventsService): each row is written in the
-- transaction that ends the session or deletes the account. Appends are
-- serialized (an advisory lock, see serving::sql::Tx::lock_log), so rows
-- become visible in the order of `sequence` and a subscriber that resumes
-- after the last sequence it saw misses nothing.
CREATE TABLE session_events (
    sequence           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 1: a session ended; 2: an account was deleted.
    kind               smallint    NOT NULL,
    user_id            uuid        NOT NULL,
    session_id         uuid,
    event_time         timestamptz NOT NULL,
    -- No access token of the session (or account) is valid after this.
    tokens_expire_time timestamptz NOT NULL
);

-- Service-wide secrets, created on first use and shared by every replica
-- (the key that derives a refresh token's successor from it).
CREATE TABLE service_secrets (
    name  text  NOT NULL PRIMARY KEY,
    value bytea NOT NULL
);
