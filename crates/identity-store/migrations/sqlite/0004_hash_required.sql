-- Every new event is hashed (SQLite cannot add a CHECK to an existing table).
CREATE TRIGGER events_hash_required BEFORE INSERT ON events
WHEN NEW.hash IS NULL
BEGIN
    SELECT RAISE(ABORT, 'events.hash must not be NULL');
END;
