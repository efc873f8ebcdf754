-- Spillway never makes the app's own writes fail. Postgres refuses UPDATE and DELETE on a
-- published table that has no replica identity: one whose primary key was dropped (identity
-- DEFAULT), whose identity index was dropped (USING INDEX), or set to NOTHING. When such DDL
-- runs, the table is taken out of Spillway's publication at once, in the same transaction,
-- and an event says why; the next backup finds the publication no longer covers it and is a
-- full one, which publishes it again (REPLICA IDENTITY FULL where it has no key).

-- Takes every published table without a usable replica identity out of the publication;
-- returns their names. Each gets a warn event in this project's spillway.events.
create or replace function spillway.unpublish_unidentified()
returns text[]
language plpgsql
security definer
set search_path = ''
as $$
declare
  t record;
  dropped text[] := array[]::text[];
begin
  for t in
    select n.nspname, c.relname, c.relreplident
      from pg_catalog.pg_publication p
      join pg_catalog.pg_publication_rel r on r.prpubid = p.oid
      join pg_catalog.pg_class c on c.oid = r.prrelid
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where p.pubname = 'spillway'
       and (c.relreplident = 'n'
            or (c.relreplident = 'd' and not exists (
                  select 1 from pg_catalog.pg_index i where i.indrelid = c.oid and i.indisprimary))
            or (c.relreplident = 'i' and not exists (
                  select 1 from pg_catalog.pg_index i where i.indrelid = c.oid and i.indisreplident)))
  loop
    execute pg_catalog.format('alter publication spillway drop table %I.%I', t.nspname, t.relname);
    insert into spillway.events (id, level, kind, message, project, data)
    values (
      pg_catalog.gen_random_uuid(), 'warn', 'backup.identity_lost',
      pg_catalog.format('%s.%s lost its replica identity (%s): it was taken out of change capture so that the app''s updates and deletes keep working; the next backup is a full one',
        t.nspname, t.relname,
        case t.relreplident when 'd' then 'its primary key was dropped' when 'i' then 'its identity index was dropped' else 'REPLICA IDENTITY NOTHING' end),
      (select p.name from spillway.project p),
      pg_catalog.jsonb_build_object('table', t.nspname || '.' || t.relname));
    dropped := dropped || (t.nspname || '.' || t.relname);
  end loop;
  return dropped;
end
$$;

-- Runs it after DDL that can take a table's identity away. A failure only warns: it must
-- never make the app's own migration fail (the next tick tries again).
create or replace function spillway.keep_app_writes()
returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform spillway.unpublish_unidentified();
exception when others then
  raise warning 'spillway: could not take a table without replica identity out of change capture: %', sqlerrm;
end
$$;

-- Where the role may create event triggers (Supabase's supautils lets `postgres` do so).
create or replace function spillway.install_identity_event_trigger()
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  if exists (select 1 from pg_catalog.pg_event_trigger where evtname = 'spillway_keep_app_writes') then
    return true;
  end if;
  create event trigger spillway_keep_app_writes on ddl_command_end
    when tag in ('ALTER TABLE', 'DROP INDEX')
    execute function spillway.keep_app_writes();
  return true;
exception when insufficient_privilege then
  return false;
end
$$;

revoke all on function spillway.unpublish_unidentified() from public;
revoke all on function spillway.keep_app_writes() from public;
revoke all on function spillway.install_identity_event_trigger() from public;

select spillway.install_identity_event_trigger();

select spillway.revoke_api_roles();
