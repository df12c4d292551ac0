-- Setup for refresh_tx.sql, run with psql before each pgbench run
-- (-v clients=N): one account, a live session per pgbench client, and each
-- session's first refresh token (the SHA-256 of "<client>-0", the way the
-- service stores the SHA-256 of a token). Old pgbench sessions are removed
-- first (their tokens go with them).
INSERT INTO users (id, email, display_name, password_hash, create_time, update_time)
VALUES ('00000000-0000-4000-8000-0000000000be', 'pgbench@bench.invalid', 'pgbench', 'not a password hash', now(), now())
ON CONFLICT (id) DO NOTHING;
DELETE FROM sessions WHERE user_id = '00000000-0000-4000-8000-0000000000be';
INSERT INTO sessions (id, user_id, create_time, last_refresh_time, idle_expire_time, absolute_expire_time, user_agent)
SELECT md5('pgbench-session-' || c)::uuid, '00000000-0000-4000-8000-0000000000be', now(), now(),
       now() + interval '30 days', now() + interval '90 days', 'pgbench'
FROM generate_series(0, :clients - 1) AS c;
INSERT INTO refresh_tokens (token_hash, session_id, create_time, expire_time)
SELECT sha256(convert_to(c || '-0', 'UTF8')), md5('pgbench-session-' || c)::uuid, now(), now() + interval '30 days'
FROM generate_series(0, :clients - 1) AS c;
