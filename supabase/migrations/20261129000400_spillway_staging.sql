-- Continued full backups: a full copy too long for one invocation is built table by table
-- in stage tables on the standby (spillway.stage_<n>, each from its own snapshot of the
-- active), caught up from the change stream, and published in one transaction. This row
-- says how far it got; every step commits its data together with this row.
create table if not exists spillway.staging (
  id boolean primary key default true check (id),
  run_id uuid not null,
  -- The project copied from, and the slot created before the first table's snapshot.
  source text not null check (source in ('primary', 'secondary')),
  slot text not null,
  -- One entry per replicated table, in load order: {table, stage, snapshot, rows, bytes}.
  -- snapshot is null until the table is staged.
  tables jsonb not null,
  -- The commit position of the last transaction applied to the stage tables.
  applied_lsn pg_lsn,
  started_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table spillway.staging enable row level security;
revoke all on spillway.staging from public;

-- Keeps the API roles (where they exist: Supabase has them, a plain Postgres does not) out
-- of the schema and of every table, sequence and function in it. Migrations from this one
-- on call it after creating objects, rather than revoking object by object.
create or replace function spillway.revoke_api_roles() returns void
language plpgsql
set search_path = ''
as $$
declare
  api_role text;
begin
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
      execute format('revoke all on all tables in schema spillway from %I', api_role);
      execute format('revoke all on all sequences in schema spillway from %I', api_role);
      execute format('revoke all on all functions in schema spillway from %I', api_role);
      execute format('revoke all on schema spillway from %I', api_role);
    end if;
  end loop;
end
$$;
revoke all on function spillway.revoke_api_roles() from public;

select spillway.revoke_api_roles();
