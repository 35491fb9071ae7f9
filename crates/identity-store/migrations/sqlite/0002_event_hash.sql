-- The hash chaining each event to the previous event of its aggregate (chain.rs).
ALTER TABLE events ADD COLUMN hash text;
