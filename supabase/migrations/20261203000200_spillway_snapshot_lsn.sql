-- A copy's snapshot carries the WAL insert position read after it was taken
-- ("xmin:xmax:xip:lsn"): every transaction it saw committed before that position, so
-- catching up compares only transactions that committed before it with the snapshot, and
-- never skips one that came after, however many transaction ids later. The fdw strategy
-- reads it through its foreign server, inside the remote transaction the copy uses.
create or replace view spillway.current_snapshot with (security_invoker = true) as
select pg_catalog.pg_current_snapshot()::text || ':' || pg_catalog.pg_current_wal_insert_lsn()::text as snapshot;
revoke all on spillway.current_snapshot from public;
comment on column spillway.replica.base_snapshot is
  'The full copy''s snapshot ("xmin:xmax:xip:lsn"): transactions it saw are not applied again.';
