-- Spillway: the backup strategy setting gains "auto", the new default: fdw under the Edge
-- runtime (the standby pulls the rows, the function's CPU time stays small), copy elsewhere.
-- Settings as the first migration stored them, never changed since, take the new default;
-- a strategy an operator chose is kept. Idempotent.

update spillway.settings
set data = pg_catalog.jsonb_set(data, '{strategy}', '"auto"')
where id and version = 1 and data ->> 'strategy' = 'copy';
