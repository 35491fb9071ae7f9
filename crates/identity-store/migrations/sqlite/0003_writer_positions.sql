-- The group-commit writer (append.rs) gives each event its position in the INSERT and reads
-- it back with RETURNING; the trigger now fills in only rows written without one.
DROP TRIGGER events_assign_position;
CREATE TRIGGER events_assign_position AFTER INSERT ON events
WHEN NEW.global_position IS NULL
BEGIN
    UPDATE events
       SET global_position = (SELECT COALESCE(MAX(global_position), 0) + 1 FROM events)
     WHERE rowid = NEW.rowid;
END;
