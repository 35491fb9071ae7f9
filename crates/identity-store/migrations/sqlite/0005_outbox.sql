-- Messages for the delivery channel, written before the command that makes them due
-- (outbox.rs); a row lives until it is sent or expires.
CREATE TABLE outbox (
    id           text    PRIMARY KEY,
    aggregate_id text    NOT NULL,
    code_hash    text    NOT NULL,
    body         text    NOT NULL,
    expires_at   integer NOT NULL,
    created_at   text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX outbox_created_at ON outbox (created_at);
