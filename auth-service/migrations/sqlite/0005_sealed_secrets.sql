-- Secrets at rest are sealed with a key-encryption key that is not in the
-- database (see key_encryption.rs): beside each sealed value, the id of the
-- key that sealed it, the algorithm and the nonce. A NULL kek_id marks a
-- value from before sealing, which the service seals at its next start.
ALTER TABLE signing_keys ADD COLUMN kek_id TEXT;
ALTER TABLE signing_keys ADD COLUMN seal_algorithm TEXT;
ALTER TABLE signing_keys ADD COLUMN nonce BLOB;

ALTER TABLE service_secrets ADD COLUMN kek_id TEXT;
ALTER TABLE service_secrets ADD COLUMN seal_algorithm TEXT;
ALTER TABLE service_secrets ADD COLUMN nonce BLOB;

ALTER TABLE outbox ADD COLUMN kek_id TEXT;
ALTER TABLE outbox ADD COLUMN seal_algorithm TEXT;
ALTER TABLE outbox ADD COLUMN nonce BLOB;
