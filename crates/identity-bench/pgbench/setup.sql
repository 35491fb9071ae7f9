-- A table shaped like the events table (same columns, keys and index), for the ceilings.
DROP TABLE IF EXISTS bench_events;
CREATE TABLE bench_events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    global_position bigserial   NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    xid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    hash            text,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX bench_events_position ON bench_events (global_position);
INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'Wallet', 'w' || w, 1, 'WalletOpened', '1.0', '{"WalletOpened":{}}', '{}'
  FROM generate_series(1, 1000) AS w;
