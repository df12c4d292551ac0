-- `due_key` is the due time in microseconds, tasks without one last
-- (i64::MAX), written by the service with every write: an ordinary column,
-- as on PostgreSQL, so each store operation is one SQL text
-- (serving::sql). It replaces the generated `due_sort`.
ALTER TABLE tasks ADD COLUMN due_key INTEGER NOT NULL DEFAULT 9223372036854775807;
UPDATE tasks SET due_key = COALESCE(due_time, 9223372036854775807);
DROP INDEX tasks_owner_due_time;
CREATE INDEX tasks_owner_due_key ON tasks (owner, due_key, id);
ALTER TABLE tasks DROP COLUMN due_sort;

-- Per-owner counts, exact: every write changes them in its own transaction.
-- ListTasks' total_size needs no scan, and CreateTask enforces the per-user
-- quota.
CREATE TABLE task_counts (
    owner     TEXT    NOT NULL PRIMARY KEY,
    total     INTEGER NOT NULL,
    completed INTEGER NOT NULL
);
INSERT INTO task_counts (owner, total, completed)
SELECT owner, COUNT(*), SUM(completed) FROM tasks GROUP BY owner;
