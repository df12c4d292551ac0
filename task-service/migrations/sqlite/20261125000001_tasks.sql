-- Each user's tasks. Ids are UUIDv7 text, times INTEGER microseconds since
-- the Unix epoch (UTC). `owner` is the `sub` of the access token that
-- created the row; every query filters on it first, so every index starts
-- with it.
CREATE TABLE tasks (
    id                 TEXT    NOT NULL PRIMARY KEY,
    owner              TEXT    NOT NULL,
    title              TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    -- Lower-cased copies for `query` (case folding done by the service so
    -- both databases agree, Unicode included).
    search_title       TEXT    NOT NULL,
    search_description TEXT    NOT NULL,
    completed          INTEGER NOT NULL CHECK (completed IN (0, 1)),
    priority           INTEGER NOT NULL,
    due_time           INTEGER,
    -- The due_time order's key: tasks without a due time sort last. A
    -- generated column (not an expression index) so that SQLite can use
    -- the index for the keyset range `(due_sort, id) > (?, ?)`.
    due_sort           INTEGER GENERATED ALWAYS AS (COALESCE(due_time, 9223372036854775807)) VIRTUAL,
    create_time        INTEGER NOT NULL,
    update_time        INTEGER NOT NULL,
    complete_time      INTEGER,
    -- Bumped by every write; the etag.
    version            INTEGER NOT NULL,
    -- CreateTask's idempotency key, unique per owner.
    request_id         TEXT
);

CREATE UNIQUE INDEX tasks_owner_request_id ON tasks (owner, request_id) WHERE request_id IS NOT NULL;

-- One index per order of ListTasks, each ending with the id tie-break, so
-- a keyset page is one index range scan wherever it starts.
CREATE INDEX tasks_owner_create_time ON tasks (owner, create_time, id);
CREATE INDEX tasks_owner_due_time ON tasks (owner, due_sort, id);
CREATE INDEX tasks_owner_priority ON tasks (owner, priority, id);
CREATE INDEX tasks_owner_title ON tasks (owner, title, id);
CREATE INDEX tasks_owner_completed_create_time ON tasks (owner, completed, create_time, id);

-- Service-wide secrets, created on first start and shared by every process
-- using this database (the page-token MAC key).
CREATE TABLE service_secrets (
    name  TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
);
