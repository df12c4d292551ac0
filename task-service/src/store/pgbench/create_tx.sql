-- pgbench: CreateTask's transaction (store/sql.rs `create`, without a
-- request_id) on PostgreSQL: lock (or make) the owner's counts row, insert
-- the task, move the count, queue the change notice (events.rs `notify`,
-- a payload of the real size), commit. Each pgbench client writes as an
-- owner of its own, as the service's load is spread over many users; the
-- owner is derived once per client (the \if block). The notice goes to a
-- channel nobody listens on, so the running task-service does not handle
-- pgbench's rows as changes. (A space follows each ':' of the payload, so
-- pgbench does not read `:false` as a variable.)
-- Run with -M prepared -D owner_ready=0.
\if :owner_ready = 0
SELECT md5('pgbench-owner-' || (:client_id)::text)::uuid AS owner \gset
\set owner_ready 1
\endif
BEGIN;
INSERT INTO task_counts (owner, total, completed) VALUES (:owner, 0, 0) ON CONFLICT (owner) DO UPDATE SET total = task_counts.total RETURNING total;
INSERT INTO tasks (id, owner, title, description, search_title, search_description, completed, priority, due_time, due_key, create_time, update_time, complete_time, version, request_id) VALUES (gen_random_uuid(), :owner, 'Benchmark task', 'written by the load generator', 'benchmark task', 'written by the load generator', FALSE, 2, NULL, 9223372036854775807, now(), now(), NULL, 1, NULL) RETURNING id, owner, title, description, completed, priority, due_time, create_time, update_time, complete_time, version;
UPDATE task_counts SET total = total + 1, completed = completed + 0 WHERE owner = :owner;
SELECT pg_notify('tasks_events_pgbench', '{"kind": "Created","owner": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c","time": "2026-12-01T05:00:00.000000Z","task": {"id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c","owner": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","title": "Benchmark task","description": "written by the load generator","completed": false,"priority": 2,"due_time": null,"create_time": "2026-12-01T05:00:00.000000Z","update_time": "2026-12-01T05:00:00.000000Z","complete_time": null,"version": 1}}');
COMMIT;
