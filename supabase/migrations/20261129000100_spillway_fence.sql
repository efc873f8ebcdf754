-- The fence: once a project is no longer the one apps must use, writes to its replicated
-- tables fail at once with SQLSTATE SPWFN and a message naming the active project and epoch.
-- A statement-level trigger on each replicated table asks spillway.state; it does not fire
-- for Spillway's own loads, which run with session_replication_role = replica.

create or replace function spillway.fence_guard()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  s record;
begin
  select st.fenced, st.fenced_for, st.fenced_epoch,
         coalesce((select p.name from spillway.project p), pg_catalog.current_database()) as project
    into s
    from spillway.state st
   where st.id;
  if s.fenced then
    raise exception using
      errcode = 'SPWFN',
      message = pg_catalog.format('spillway: project %s is fenced; the active project is %s (epoch %s)',
        s.project, coalesce(s.fenced_for, 'being chosen'), coalesce(s.fenced_epoch::text, 'unknown')),
      hint = 'Connect to the active project and retry; getActiveClient() does this by itself.';
  end if;
  return null;
end
$$;

comment on function spillway.fence_guard() is 'Spillway: refuses app writes on a fenced project (SQLSTATE SPWFN)';

-- Puts the fence trigger on every table of the given schemas that lacks it; returns how
-- many it added. Identifiers are quoted with %I.
create or replace function spillway.ensure_fence(schemas text[])
returns integer
language plpgsql
set search_path = ''
as $$
declare
  t record;
  added integer := 0;
begin
  for t in
    select n.nspname, c.relname
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname = any(schemas)
       and c.relkind in ('r', 'p')
       and not (n.nspname = 'public' and c.relname = 'spillway_active')
       and not exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = c.oid and g.tgname = 'spillway_fence')
  loop
    execute pg_catalog.format(
      'create trigger spillway_fence before insert or update or delete or truncate on %I.%I for each statement execute function spillway.fence_guard()',
      t.nspname, t.relname);
    added := added + 1;
  end loop;
  return added;
end
$$;

revoke all on function spillway.fence_guard() from public;
revoke all on function spillway.ensure_fence(text[]) from public;

do $$
declare
  api_role text;
begin
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
      execute format('revoke all on function spillway.fence_guard() from %I', api_role);
      execute format('revoke all on function spillway.ensure_fence(text[]) from %I', api_role);
    end if;
  end loop;
end
$$;
