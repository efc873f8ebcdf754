-- The fence, closed on every write path.
--
-- 1. Writers that passed the guard finish before the fence: the guard locks the state row
--    FOR SHARE (held to the end of the writer's transaction), and the switch takes
--    `lock table spillway.state in exclusive mode` before it fences, which waits for every
--    such writer and queues later ones behind it. A REPEATABLE READ transaction whose
--    snapshot predates the fence fails on that lock (the row changed since its snapshot)
--    instead of writing through.
-- 2. The trigger fires in every session_replication_role (ENABLE ALWAYS, where Spillway's
--    role owns the table): a restore in replica mode is fenced too. Spillway's own loads
--    mark their transaction with `set local spillway.writer = 'load'`, which the guard
--    honours for members of the role that owns schema spillway only.
-- 3. Leaf partitions of replicated tables are guarded wherever their schema is, and tables
--    created later get the trigger from an event trigger (where the role may create one:
--    Supabase's supautils lets `postgres` do so) and from every tick.

create or replace function spillway.fence_guard()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  s record;
begin
  if pg_catalog.current_setting('spillway.writer', true) = 'load'
     and pg_catalog.pg_has_role(session_user,
           (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'spillway'), 'member') then
    return null;
  end if;
  select st.fenced, st.fenced_for, st.fenced_epoch,
         coalesce((select p.name from spillway.project p), pg_catalog.current_database()) as project
    into s
    from spillway.state st
   where st.id
     for share;
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

-- Puts the fence trigger on every table of the given schemas, and on every leaf partition
-- of such a table wherever it lives, that lacks it, and makes it fire in every
-- session_replication_role where this role may alter the table (Supabase Auth's tables,
-- owned by another role, keep a plain trigger). Returns how many triggers it added.
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
    select c.oid, n.nspname, c.relname, pg_catalog.pg_has_role(c.relowner, 'USAGE') as owned,
           (select g.tgenabled from pg_catalog.pg_trigger g where g.tgrelid = c.oid and g.tgname = 'spillway_fence') as enabled
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p')
       and not (n.nspname = 'public' and c.relname = 'spillway_active')
       and pg_catalog.has_table_privilege(c.oid, 'TRIGGER')
       and (n.nspname = any(schemas)
            or (c.relispartition and exists (
                  select 1 from pg_catalog.pg_class r join pg_catalog.pg_namespace rn on rn.oid = r.relnamespace
                   where r.oid = pg_catalog.pg_partition_root(c.oid) and rn.nspname = any(schemas))))
  loop
    -- Read again: creating or altering a trigger fires the event trigger, whose own pass may
    -- have guarded this table since the loop's query ran.
    select g.tgenabled into t.enabled from pg_catalog.pg_trigger g where g.tgrelid = t.oid and g.tgname = 'spillway_fence';
    if not found then
      t.enabled := null;
    end if;
    if t.enabled is null then
      execute pg_catalog.format(
        'create trigger spillway_fence before insert or update or delete or truncate on %I.%I for each statement execute function spillway.fence_guard()',
        t.nspname, t.relname);
      added := added + 1;
    end if;
    if t.owned and t.enabled is distinct from 'A' then
      execute pg_catalog.format('alter table %I.%I enable always trigger spillway_fence', t.nspname, t.relname);
    end if;
  end loop;
  return added;
end
$$;

-- The replicated schemas as the settings name them, and Supabase Auth's where it is carried
-- (setting `auth`, by default wherever the schema exists).
create or replace function spillway.fenced_schemas()
returns text[]
language sql
stable
set search_path = ''
as $$
  select coalesce(array(select pg_catalog.jsonb_array_elements_text(s.data -> 'schemas')), array['public'])
         || case when coalesce((s.data ->> 'auth')::boolean, true)
                   and exists (select 1 from pg_catalog.pg_namespace n where n.nspname = 'auth')
                 then array['auth'] else array[]::text[] end
    from spillway.settings s
   where s.id
$$;

-- Guards the tables a DDL command just created or attached. A failure here only warns: it
-- must never make the app's own migration fail (the next tick guards the table then).
create or replace function spillway.fence_new_tables()
returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if exists (select 1 from pg_catalog.pg_event_trigger_ddl_commands() d where d.object_type = 'table') then
    perform spillway.ensure_fence(spillway.fenced_schemas());
  end if;
exception when others then
  raise warning 'spillway: could not put the fence trigger on a new table: %', sqlerrm;
end
$$;

create or replace function spillway.install_fence_event_trigger()
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  if exists (select 1 from pg_catalog.pg_event_trigger where evtname = 'spillway_fence_new_tables') then
    return true;
  end if;
  create event trigger spillway_fence_new_tables on ddl_command_end
    when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
    execute function spillway.fence_new_tables();
  return true;
exception when insufficient_privilege then
  return false;
end
$$;

revoke all on function spillway.fenced_schemas() from public;
revoke all on function spillway.fence_new_tables() from public;
revoke all on function spillway.install_fence_event_trigger() from public;

select spillway.install_fence_event_trigger();

select spillway.revoke_api_roles();
