-- pgbench: ListTasks' whole transaction (store/sql.rs `SqlStore::page`):
-- one REPEATABLE READ READ ONLY snapshot (serving::sql `begin_snapshot`)
-- for the page and the owner's exact counts.
-- Run with -M prepared -D owner=<the list user's id>.
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT id, owner, title, description, completed, priority, due_time, create_time, update_time, complete_time, version FROM tasks WHERE owner = :owner ORDER BY create_time DESC, id DESC LIMIT 51;
SELECT total, completed FROM task_counts WHERE owner = :owner;
COMMIT;
