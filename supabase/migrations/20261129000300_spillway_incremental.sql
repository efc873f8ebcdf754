-- Incremental backups: where the standby's copy stands in the active's change stream.
-- One row, written in the same transactions as the data it describes.
create table if not exists spillway.replica (
  id boolean primary key default true check (id),
  -- The project this copy came from, and its logical replication slot.
  source text not null check (source in ('primary', 'secondary')),
  slot text not null,
  -- The full copy's snapshot (pg_current_snapshot() text): transactions it saw are not applied again.
  base_snapshot text,
  -- The commit position of the last transaction applied; null right after a full copy.
  applied_lsn pg_lsn,
  -- The replicated tables when the full copy was taken: a different set needs a new full copy.
  tables text[] not null,
  updated_at timestamptz not null default now()
);
alter table spillway.replica enable row level security;
revoke all on spillway.replica from public;

do $$
declare
  api_role text;
begin
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
      execute format('revoke all on spillway.replica from %I', api_role);
    end if;
  end loop;
end
$$;

-- The snapshot of the reading transaction. The fdw strategy reads it through its foreign
-- server, inside the remote transaction that the copy uses, to know what the copy saw.
create or replace view spillway.current_snapshot with (security_invoker = true) as
select pg_catalog.pg_current_snapshot()::text as snapshot;
revoke all on spillway.current_snapshot from public;
