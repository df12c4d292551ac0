-- Orders by plain columns that both databases sort the same way, so each
-- store operation is one SQL text (serving::sql): titles compare by code
-- point through the column's own collation, and `due_key` is the due time
-- in microseconds, tasks without one last (i64::MAX), written by the
-- service with every write.
DROP INDEX tasks_owner_title;
ALTER TABLE tasks ALTER COLUMN title TYPE text COLLATE "C";
CREATE INDEX tasks_owner_title ON tasks (owner, title, id);

ALTER TABLE tasks ADD COLUMN due_key bigint;
UPDATE tasks
SET due_key = COALESCE((EXTRACT(EPOCH FROM due_time) * 1000000)::bigint, 9223372036854775807);
ALTER TABLE tasks ALTER COLUMN due_key SET NOT NULL;
DROP INDEX tasks_owner_due_time;
CREATE INDEX tasks_owner_due_key ON tasks (owner, due_key, id);

-- Per-owner counts, exact: every write changes them in its own transaction.
-- ListTasks' total_size needs no scan, and CreateTask enforces the per-user
-- quota on the locked row.
CREATE TABLE task_counts (
    owner     uuid   NOT NULL PRIMARY KEY,
    total     bigint NOT NULL,
    completed bigint NOT NULL
);
INSERT INTO task_counts (owner, total, completed)
SELECT owner, COUNT(*), COUNT(*) FILTER (WHERE completed) FROM tasks GROUP BY owner;
