-- Signed checkpoints over the whole log (checkpoint.rs): the running digest of every event
-- in feed order up to (xid, position), signed with the service's Ed25519 key. SQLite's feed
-- has no transaction ids: xid is always 0.
CREATE TABLE checkpoints (
    xid       integer NOT NULL,
    position  integer NOT NULL,
    events    integer NOT NULL,
    digest    text    NOT NULL,
    signed_at text    NOT NULL,
    key_id    text    NOT NULL,
    signature text    NOT NULL,
    PRIMARY KEY (xid, position)
) STRICT;
