-- Signed checkpoints over the whole log (checkpoint.rs): the running digest of every event
-- in feed order up to (xid, position), signed with the service's Ed25519 key.
CREATE TABLE checkpoints (
    xid       bigint NOT NULL,
    position  bigint NOT NULL,
    events    bigint NOT NULL,
    digest    text   NOT NULL,
    signed_at text   NOT NULL,
    key_id    text   NOT NULL,
    signature text   NOT NULL,
    PRIMARY KEY (xid, position)
);
