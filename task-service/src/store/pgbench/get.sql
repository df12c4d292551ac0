-- pgbench: GetTask's one statement (store/sql.rs `get`), for reference.
-- Run with -M prepared -D owner=<a user's id> -D id=<one of its tasks>.
SELECT id, owner, title, description, completed, priority, due_time, create_time, update_time, complete_time, version FROM tasks WHERE id = :id AND owner = :owner;
