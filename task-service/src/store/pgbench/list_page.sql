-- pgbench: ListTasks' page query alone, exactly as store/sql.rs
-- (`list_statement`) sends it for the first page in the default order
-- (create_time desc) without a filter: page_size 50, plus the one row that
-- says more follow. Run with -M prepared -D owner=<the list user's id>.
SELECT id, owner, title, description, completed, priority, due_time, create_time, update_time, complete_time, version FROM tasks WHERE owner = :owner ORDER BY create_time DESC, id DESC LIMIT 51;
