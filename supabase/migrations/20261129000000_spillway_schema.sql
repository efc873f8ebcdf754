-- Spillway: its own schema, the records it keeps, and the public state row apps read.
-- Idempotent: `spillway install` may copy this into an app whose databases already carry it.

create schema if not exists spillway;
revoke all on schema spillway from public;
comment on schema spillway is 'Spillway: usage watch, backup and switch between two Supabase projects';

-- Which of the two projects this database is. Written once by Spillway on first contact, then
-- checked on every connect, so that swapped database URLs are refused instead of obeyed.
create table if not exists spillway.project (
  id boolean primary key default true check (id),
  name text not null check (name in ('primary', 'secondary')),
  created_at timestamptz not null default now()
);

-- Operator settings (GET/PATCH /config). Kept in both projects; the highest version wins.
create table if not exists spillway.settings (
  id boolean primary key default true check (id),
  data jsonb not null,
  version bigint not null default 1,
  updated_at timestamptz not null default now()
);
insert into spillway.settings (id, data)
values (true, jsonb_build_object(
  'backupThreshold', 0.85,
  'switchThreshold', 0.9,
  'quotaBytes', jsonb_build_object('primary', 524288000, 'secondary', 524288000),
  'autoBackup', true,
  'autoSwitch', true,
  'strategy', 'copy',
  'schemas', jsonb_build_array('public'),
  'budgetSeconds', 120,
  'maxRetainedBytes', 134217728
))
on conflict (id) do nothing;

-- Which project is active. Kept in both projects; the highest epoch wins everywhere.
create table if not exists spillway.state (
  id boolean primary key default true check (id),
  active text not null check (active in ('primary', 'secondary')),
  epoch bigint not null check (epoch >= 1),
  fenced boolean not null default false,
  -- While fenced: the project apps must use now, and at which epoch (named in the fence error).
  fenced_for text check (fenced_for in ('primary', 'secondary')),
  fenced_epoch bigint,
  -- The policy's phase at the last tick (normal, backup, critical): its hysteresis memory.
  phase text not null default 'normal' check (phase in ('normal', 'backup', 'critical')),
  since timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
insert into spillway.state (id, active, epoch) values (true, 'primary', 1) on conflict (id) do nothing;

-- The tick lease: a row with an expiry rather than an advisory lock, because session
-- advisory locks do not survive Supabase's transaction pooler.
create table if not exists spillway.lease (
  id boolean primary key default true check (id),
  holder text,
  expires_at timestamptz
);
insert into spillway.lease (id) values (true) on conflict (id) do nothing;

create table if not exists spillway.events (
  id uuid primary key,
  at timestamptz not null default now(),
  level text not null check (level in ('info', 'warn', 'error')),
  kind text not null,
  message text not null,
  project text check (project in ('primary', 'secondary')),
  data jsonb not null default '{}'::jsonb
);
create index if not exists events_at_idx on spillway.events (at desc);

create table if not exists spillway.usage_samples (
  id bigint generated always as identity primary key,
  project text not null check (project in ('primary', 'secondary')),
  at timestamptz not null default now(),
  used_bytes bigint not null check (used_bytes >= 0),
  quota_bytes bigint not null check (quota_bytes > 0)
);
create index if not exists usage_samples_project_at_idx on spillway.usage_samples (project, at desc);

-- Backups into this project (it was the standby when they ran). A run's progress is stored
-- here, in the same transactions as the data it describes.
create table if not exists spillway.runs (
  id uuid primary key,
  kind text not null check (kind in ('full', 'incremental')),
  status text not null check (status in ('running', 'succeeded', 'failed')),
  source text not null check (source in ('primary', 'secondary')),
  target text not null check (target in ('primary', 'secondary')),
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  tables integer not null default 0,
  rows bigint not null default 0,
  bytes bigint not null default 0,
  duration_ms bigint,
  error text,
  strategy text check (strategy in ('copy', 'fdw')),
  -- The active's point in time this run copied (its snapshot), once the run succeeded.
  snapshot_at timestamptz,
  progress jsonb not null default '{}'::jsonb,
  details jsonb not null default '{}'::jsonb
);
create index if not exists runs_started_at_idx on spillway.runs (started_at desc);

-- What the Edge Function and the widget read: this database's size against its quota, and
-- the tables that weigh most.
create or replace view spillway.usage with (security_invoker = true) as
select
  p.name as project,
  pg_catalog.pg_database_size(pg_catalog.current_database()) as used_bytes,
  (s.data -> 'quotaBytes' ->> p.name)::bigint as quota_bytes,
  pg_catalog.pg_database_size(pg_catalog.current_database())::double precision
    / nullif((s.data -> 'quotaBytes' ->> p.name)::bigint, 0) as usage,
  coalesce((
    select jsonb_agg(jsonb_build_object('schema', t.nspname, 'table', t.relname, 'bytes', t.bytes)
                     order by t.bytes desc)
    from (
      select n.nspname, c.relname, pg_catalog.pg_total_relation_size(c.oid) as bytes
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'm')
        and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
      order by 3 desc
      limit 5
    ) t
  ), '[]'::jsonb) as largest_tables
from spillway.project p
cross join spillway.settings s;

-- The one thing apps may read: which project is active, at which epoch.
create table if not exists public.spillway_active (
  id boolean primary key default true check (id),
  active text not null check (active in ('primary', 'secondary')),
  epoch bigint not null check (epoch >= 1),
  since timestamptz not null default now()
);
insert into public.spillway_active (id, active, epoch) values (true, 'primary', 1) on conflict (id) do nothing;
comment on table public.spillway_active is 'Spillway: the active project and its epoch (read-only for apps)';

alter table spillway.project enable row level security;
alter table spillway.settings enable row level security;
alter table spillway.state enable row level security;
alter table spillway.lease enable row level security;
alter table spillway.events enable row level security;
alter table spillway.usage_samples enable row level security;
alter table spillway.runs enable row level security;
alter table public.spillway_active enable row level security;

revoke all on public.spillway_active from public;

do $$
declare
  api_role text;
begin
  if not exists (
    select 1 from pg_catalog.pg_policies
    where schemaname = 'public' and tablename = 'spillway_active' and policyname = 'spillway_active_read'
  ) then
    create policy spillway_active_read on public.spillway_active for select using (true);
  end if;
  -- The API roles exist on Supabase, not on a plain Postgres: grant only where they exist.
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
      execute format('revoke all on all tables in schema spillway from %I', api_role);
      execute format('revoke all on all sequences in schema spillway from %I', api_role);
      execute format('revoke all on all functions in schema spillway from %I', api_role);
      execute format('revoke all on schema spillway from %I', api_role);
      execute format('revoke all on public.spillway_active from %I', api_role);
      execute format('grant select on public.spillway_active to %I', api_role);
    end if;
  end loop;
end
$$;
