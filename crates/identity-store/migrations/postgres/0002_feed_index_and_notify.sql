-- The global feed reads in (xid, global_position) order below the oldest open transaction.
CREATE INDEX events_feed ON events (xid, global_position);
-- Wake feed readers in every process on commit (NOTIFY is delivered at commit, deduplicated
-- per transaction).
CREATE FUNCTION identity_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('identity_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION identity_notify_events();
