-- The durable, ordered log of session events that other services follow
-- (auth.internal.v1.SessionEventsService): each row is written in the
-- transaction that ends the session or deletes the account, so rows appear
-- in the order of `sequence` (AUTOINCREMENT: never reused), and a
-- subscriber that resumes after the last sequence it saw misses nothing.
CREATE TABLE session_events (
    sequence           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- 1: a session ended; 2: an account was deleted.
    kind               INTEGER NOT NULL,
    user_id            TEXT    NOT NULL,
    session_id         TEXT,
    event_time         INTEGER NOT NULL,
    -- No access token of the session (or account) is valid after this.
    tokens_expire_time INTEGER NOT NULL
) STRICT;

-- Service-wide secrets, created on first use and shared by every process
-- (the key that derives a refresh token's successor from it).
CREATE TABLE service_secrets (
    name  TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;
