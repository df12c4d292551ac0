-- pgbench: the floor of any write, one single-row INSERT into tasks in its
-- own (implicit) transaction, with CreateTask's columns and indexes. Each
-- client writes as an owner of its own. Run with -M prepared -D owner_ready=0.
\if :owner_ready = 0
SELECT md5('pgbench-owner-' || (:client_id)::text)::uuid AS owner \gset
\set owner_ready 1
\endif
INSERT INTO tasks (id, owner, title, description, search_title, search_description, completed, priority, due_time, due_key, create_time, update_time, complete_time, version, request_id) VALUES (gen_random_uuid(), :owner, 'Benchmark task', 'written by the load generator', 'benchmark task', 'written by the load generator', FALSE, 2, NULL, 9223372036854775807, now(), now(), NULL, 1, NULL);
