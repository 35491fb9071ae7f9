-- One data key per person, wrapped by the master key (seal/, docs/adr/0006): the personal
-- fields of that person's events are sealed under it, and destroying it erases them.
CREATE TABLE data_keys (
    subject       text PRIMARY KEY,
    master_key_id text NOT NULL,
    -- NULL once destroyed (EraseUser): what was sealed under it never opens again.
    wrapped       text,
    created_at    text NOT NULL,
    destroyed_at  text
);
