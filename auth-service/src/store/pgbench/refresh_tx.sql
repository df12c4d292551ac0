-- pgbench: Refresh's transaction on its success path (store/sql.rs
-- `rotate_refresh_token` and `renew_session`): spend the presented token,
-- slide its session's idle expiry if the session is live, store the
-- successor. Each client rotates its own session's chain of tokens
-- "<client>-<k>" (set up by refresh_setup.sql); a token that is not there
-- to spend makes \gset fail, so a broken chain cannot pass as speed.
-- Run with -M prepared -D k=0 after refresh_setup.sql.
\set next :k + 1
BEGIN;
UPDATE refresh_tokens SET spent_time = now() WHERE token_hash = sha256(convert_to((:client_id)::text || '-' || (:k)::text, 'UTF8')) AND spent_time IS NULL AND expire_time > now() RETURNING session_id \gset
UPDATE sessions SET last_refresh_time = now(), idle_expire_time = CASE WHEN now() + interval '30 days' < absolute_expire_time THEN now() + interval '30 days' ELSE absolute_expire_time END WHERE id = :session_id AND revoke_time IS NULL AND idle_expire_time > now() AND absolute_expire_time > now() RETURNING id, user_id, create_time, last_refresh_time, idle_expire_time, absolute_expire_time, user_agent, (SELECT email_verified FROM users WHERE users.id = sessions.user_id) AS email_verified;
INSERT INTO refresh_tokens (token_hash, session_id, create_time, expire_time) VALUES (sha256(convert_to((:client_id)::text || '-' || (:next)::text, 'UTF8')), :session_id, now(), now() + interval '30 days');
COMMIT;
\set k :next
