-- pgbench: ListTasks' whole read (store/sql.rs `SqlStore::page`): one
-- statement, so one snapshot, of the owner's exact counts row joined to the
-- first page in the default order (create_time desc) without a filter:
-- page_size 50, plus the one row that says more follow.
-- Run with -M prepared -D owner=<the list user's id>.
SELECT counts.total AS count_total, counts.completed AS count_completed, page.* FROM task_counts AS counts LEFT JOIN (SELECT id, owner, title, description, completed, priority, due_time, create_time, update_time, complete_time, version, create_time AS sort_key FROM tasks WHERE owner = :owner ORDER BY create_time DESC, id DESC LIMIT 51) AS page ON TRUE WHERE counts.owner = :owner ORDER BY page.sort_key DESC, page.id DESC;
