-- Ceiling (c): a cqrs-es-shaped command: load the aggregate's events, insert one, commit.
\set w random(1, 1000)
BEGIN;
SELECT sequence, payload FROM bench_events WHERE aggregate_type = 'Wallet' AND aggregate_id = 'w' || :w ORDER BY sequence;
INSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash)
SELECT 'Wallet', 'w' || :w, COALESCE(MAX(sequence), 0) + 1, 'TokensCredited', '1.0',
  '{"TokensCredited":{"token":"PTS","amount":"3","balance":"120","idempotency_key":"k-0123456789","at":"2026-11-24T00:00:00.000000Z"}}',
  '{"tenant":"bench","actor":"bench","request_id":"0b6f0e2c-6f39-4c1e-9a53-1c3a6d1f2b7e","command":"CreditTokens"}',
  'c9517da779fab87ea99be418bd5e25e423c3bf39d3aa0699a3449144e32a433e'
  FROM bench_events WHERE aggregate_type = 'Wallet' AND aggregate_id = 'w' || :w
ON CONFLICT DO NOTHING;
COMMIT;
