-- A table's key can also go with a DROP of something else, CASCADE (DROP TYPE, DROP DOMAIN,
-- DROP EXTENSION taking the key's column with it): the identity guard also runs on sql_drop,
-- which fires for every object a DROP removes, whatever the command's tag.

create or replace function spillway.install_identity_event_trigger()
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  if not exists (select 1 from pg_catalog.pg_event_trigger where evtname = 'spillway_keep_app_writes') then
    create event trigger spillway_keep_app_writes on ddl_command_end
      when tag in ('ALTER TABLE', 'DROP INDEX')
      execute function spillway.keep_app_writes();
  end if;
  if not exists (select 1 from pg_catalog.pg_event_trigger where evtname = 'spillway_keep_app_writes_drops') then
    create event trigger spillway_keep_app_writes_drops on sql_drop
      execute function spillway.keep_app_writes();
  end if;
  return true;
exception when insufficient_privilege then
  return false;
end
$$;

revoke all on function spillway.install_identity_event_trigger() from public;

select spillway.install_identity_event_trigger();

select spillway.revoke_api_roles();
