-- Auth continuity: Supabase Auth's tables (schema auth, owned by GoTrue's role
-- supabase_auth_admin) are carried with every backup. Spillway's role may read, write and
-- put triggers on them, but not alter them or publish them, so their changes reach the
-- standby through a table of Spillway's own: a row trigger on each carried Auth table
-- writes the changed row into spillway.auth_changes, which is published with the app's
-- tables. Its rows travel in the same transactions, in the same commit order, as the app's
-- changes; on the standby a replica-only trigger writes each one into its Auth table.

create table if not exists spillway.auth_changes (
  id bigint generated always as identity primary key,
  -- The Auth table's name (in schema auth), the operation, and the row before and after.
  tbl text not null,
  op text not null check (op in ('INSERT', 'UPDATE', 'DELETE')),
  old jsonb,
  new jsonb,
  at timestamptz not null default now()
);
alter table spillway.auth_changes enable row level security;
revoke all on spillway.auth_changes from public;

-- A staged full copy collects the Auth changes it catches up on here, and replays them in
-- order when it publishes. Its id is the active's.
create table if not exists spillway.auth_stage_changes (
  id bigint primary key,
  tbl text not null,
  op text not null,
  old jsonb,
  new jsonb,
  at timestamptz not null
);
alter table spillway.auth_stage_changes enable row level security;
revoke all on spillway.auth_stage_changes from public;

-- A staged full copy's own copy of Auth's tables (spillway.auth_stage_<table>), taken in
-- one snapshot of the active when the staging began.
create table if not exists spillway.auth_stage (
  id boolean primary key default true check (id),
  snapshot text not null,
  tables text[] not null,
  updated_at timestamptz not null default now()
);
alter table spillway.auth_stage enable row level security;
revoke all on spillway.auth_stage from public;

-- Which project the standby's Auth tables are a copy of, and which tables (absent: none
-- that incremental backups can build on). Written in the transaction that loads or
-- publishes them.
create table if not exists spillway.auth_copy (
  id boolean primary key default true check (id),
  source text not null check (source in ('primary', 'secondary')),
  tables text[] not null,
  updated_at timestamptz not null default now()
);
alter table spillway.auth_copy enable row level security;
revoke all on spillway.auth_copy from public;

-- The `auth` setting (default true): false carries none of Auth, and then neither trigger
-- below does anything.
create or replace function spillway.auth_carried()
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce((select (s.data->>'auth')::boolean from spillway.settings s where s.id), true)
$$;

-- Row trigger on the carried Auth tables of the active. Security definer: it runs for
-- GoTrue's role, which has no rights on schema spillway.
create or replace function spillway.auth_capture()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if spillway.auth_carried() then
    insert into spillway.auth_changes (tbl, op, old, new)
    values (tg_table_name, tg_op,
      case when tg_op <> 'INSERT' then pg_catalog.to_jsonb(old) end,
      case when tg_op <> 'DELETE' then pg_catalog.to_jsonb(new) end);
  end if;
  return null;
end
$$;

-- Writes one captured change into the standby's Auth table, by primary key: the old row
-- goes, the new one (its stored columns) comes. Applying a change twice leaves the same
-- row. Runs inside Spillway's loads (session_replication_role = replica), so the app's own
-- triggers on Auth's tables (a handle_new_user making a profile) and foreign key actions
-- stay quiet, as they do for the app's tables.
create or replace function spillway.apply_auth_change(tbl text, op text, old_row jsonb, new_row jsonb)
returns void
language plpgsql
set search_path = ''
as $$
declare
  rel regclass := pg_catalog.to_regclass(pg_catalog.format('auth.%I', tbl));
  key_cols text;
  stored_cols text;
  by_key text;
begin
  if rel is null then
    raise exception 'spillway: a change came for auth.%, which this project does not have', tbl;
  end if;
  select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by k.ord)
    into key_cols
    from pg_catalog.pg_index i
    cross join lateral pg_catalog.unnest(i.indkey) with ordinality as k(attnum, ord)
    join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
   where i.indrelid = rel and i.indisprimary;
  if key_cols is null then
    raise exception 'spillway: auth.% has no primary key', tbl;
  end if;
  select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by a.attnum)
    into stored_cols
    from pg_catalog.pg_attribute a
   where a.attrelid = rel and a.attnum > 0 and not a.attisdropped and a.attgenerated = '';
  by_key := pg_catalog.format('delete from %s where (%s) = (select %s from pg_catalog.jsonb_populate_record(null::%s, $1))', rel, key_cols, key_cols, rel);
  if old_row is not null then
    execute by_key using old_row;
  end if;
  if new_row is not null then
    execute by_key using new_row;
    execute pg_catalog.format('insert into %s (%s) overriding system value select %s from pg_catalog.jsonb_populate_record(null::%s, $1)', rel, stored_cols, stored_cols, rel)
      using new_row;
  end if;
end
$$;

-- On the standby, a captured change arriving through the change stream is applied and
-- not kept. Enabled for replica mode only: it fires for Spillway's apply, never for the
-- capture trigger's own inserts on the active.
create or replace function spillway.auth_apply()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if spillway.auth_carried() then
    perform spillway.apply_auth_change(new.tbl, new.op, new.old, new.new);
  end if;
  return null;
end
$$;

create or replace trigger spillway_auth_apply before insert on spillway.auth_changes
  for each row execute function spillway.auth_apply();
alter table spillway.auth_changes enable replica trigger spillway_auth_apply;

-- The active deletes captured changes once they are in the change stream; a staged copy
-- keeps what it collected until it publishes.
create or replace function spillway.auth_keep()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  return null;
end
$$;

create or replace trigger spillway_auth_keep before delete on spillway.auth_stage_changes
  for each row execute function spillway.auth_keep();
alter table spillway.auth_stage_changes enable replica trigger spillway_auth_keep;

-- Puts the capture trigger on each of the named Auth tables that lacks it; returns how
-- many it added. A plain row trigger, which Spillway's role may create on tables it does
-- not own; it fires for GoTrue's writes and not for Spillway's replica-mode loads.
create or replace function spillway.ensure_auth_capture(tables text[])
returns integer
language plpgsql
set search_path = ''
as $$
declare
  t record;
  added integer := 0;
begin
  for t in
    select c.relname
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'auth' and c.relname = any(tables) and c.relkind = 'r'
       and not exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = c.oid and g.tgname = 'spillway_auth_capture')
  loop
    execute pg_catalog.format(
      'create trigger spillway_auth_capture after insert or update or delete on auth.%I for each row execute function spillway.auth_capture()',
      t.relname);
    added := added + 1;
  end loop;
  return added;
end
$$;

-- Replays a staged copy's collected Auth changes in the active's order.
create or replace function spillway.replay_auth_stage()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  c record;
  n integer := 0;
begin
  for c in select s.tbl, s.op, s.old, s.new from spillway.auth_stage_changes s order by s.id loop
    perform spillway.apply_auth_change(c.tbl, c.op, c.old, c.new);
    n := n + 1;
  end loop;
  truncate spillway.auth_stage_changes;
  return n;
end
$$;

revoke all on function spillway.auth_carried() from public;
revoke all on function spillway.auth_capture() from public;
revoke all on function spillway.apply_auth_change(text, text, jsonb, jsonb) from public;
revoke all on function spillway.auth_apply() from public;
revoke all on function spillway.auth_keep() from public;
revoke all on function spillway.ensure_auth_capture(text[]) from public;
revoke all on function spillway.replay_auth_stage() from public;

select spillway.revoke_api_roles();
