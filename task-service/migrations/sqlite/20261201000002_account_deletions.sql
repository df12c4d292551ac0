-- Accounts the auth-service reported deleted (its session event stream):
-- their tasks are deleted in batches until none is left, once right away
-- and once more after `tokens_expire_time`, when no token of the account
-- can write any more. Rows outlive a restart, so a deletion half done is
-- finished by the next process.
CREATE TABLE account_deletions (
    owner              TEXT    NOT NULL PRIMARY KEY,
    deleted_time       INTEGER NOT NULL,
    tokens_expire_time INTEGER NOT NULL,
    done_time          INTEGER
);
