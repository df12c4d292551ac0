-- Failed sign-ins are counted per account *and client address* (scope: an
-- IPv4 address or an IPv6 /64), and per account across all addresses
-- (scope '*'), so strangers elsewhere cannot keep an account's owner out;
-- see service.rs, `count_attempt`. A window that has run out starts over.
DROP TABLE login_attempts;
CREATE TABLE login_attempts (
    email        text        NOT NULL,
    scope        text        NOT NULL,
    attempts     bigint      NOT NULL,
    window_start timestamptz NOT NULL,
    PRIMARY KEY (email, scope)
);

-- Addresses that signed in to an account successfully: the account-wide
-- ceiling does not apply to them.
CREATE TABLE known_addresses (
    email        text        NOT NULL,
    address      text        NOT NULL,
    last_success timestamptz NOT NULL,
    PRIMARY KEY (email, address)
);
