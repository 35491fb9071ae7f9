-- Baseline for read-model queries: a plain primary-key SELECT.
\set w random(1, 1000)
SELECT payload FROM bench_events WHERE aggregate_type = 'Wallet' AND aggregate_id = 'w' || :w AND sequence = 1;
