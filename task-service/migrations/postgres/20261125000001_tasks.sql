-- Each user's tasks. `owner` is the `sub` of the access token that created
-- the row; every query filters on it first, so every index starts with it.
CREATE TABLE tasks (
    id                 uuid        NOT NULL PRIMARY KEY,
    owner              uuid        NOT NULL,
    title              text        NOT NULL,
    description        text        NOT NULL,
    -- Lower-cased copies for `query` (case folding done by the service so
    -- both databases agree, Unicode included).
    search_title       text        NOT NULL,
    search_description text        NOT NULL,
    completed          boolean     NOT NULL,
    priority           smallint    NOT NULL,
    due_time           timestamptz,
    create_time        timestamptz NOT NULL,
    update_time        timestamptz NOT NULL,
    complete_time      timestamptz,
    -- Bumped by every write; the etag.
    version            bigint      NOT NULL,
    -- CreateTask's idempotency key, unique per owner.
    request_id         uuid
);

CREATE UNIQUE INDEX tasks_owner_request_id ON tasks (owner, request_id) WHERE request_id IS NOT NULL;

-- One index per order of ListTasks, each ending with the id tie-break, so
-- a keyset page is one index range scan wherever it starts. Titles sort by
-- code point (COLLATE "C"), exactly like SQLite, whatever the database's
-- default collation.
CREATE INDEX tasks_owner_create_time ON tasks (owner, create_time, id);
CREATE INDEX tasks_owner_due_time ON tasks (owner, COALESCE(due_time, 'infinity'::timestamptz), id);
CREATE INDEX tasks_owner_priority ON tasks (owner, priority, id);
CREATE INDEX tasks_owner_title ON tasks (owner, (title COLLATE "C"), id);
CREATE INDEX tasks_owner_completed_create_time ON tasks (owner, completed, create_time, id);

-- Service-wide secrets, created on first start and shared by every replica
-- (the page-token MAC key).
CREATE TABLE service_secrets (
    name  text  NOT NULL PRIMARY KEY,
    value bytea NOT NULL
);
