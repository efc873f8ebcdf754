-- A tick looks up the latest event of a kind (the health it last told, the last summary of
-- the standby following the active): without this it would read the whole log each time.
create index if not exists events_kind_at_idx on spillway.events (kind, at desc);
