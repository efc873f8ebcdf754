-- Supabase Storage's objects are fenced with the tables (setting `storage`, on by default):
-- an upload or delete on a fenced project writes a row of storage.objects, which the fence
-- trigger refuses, so that nothing is stored where no app reads any more. Only the objects
-- table: Storage's own tables (its migrations, multipart uploads in progress) stay writable,
-- so that the Storage service of a fenced project still starts and upgrades.

-- The fence guard of storage.objects: as spillway.fence_guard, while `storage` is on. The
-- trigger stays when the setting is turned off (dropping it takes the table's owner,
-- Storage's own role); the guard then lets every write through.
create or replace function spillway.storage_fence_guard()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  s record;
begin
  select st.fenced, st.fenced_for, st.fenced_epoch,
         coalesce((select p.name from spillway.project p), pg_catalog.current_database()) as project,
         coalesce((select (t.data ->> 'storage')::boolean from spillway.settings t where t.id), true) as storage
    into s
    from spillway.state st
   where st.id
     for share;
  if s.fenced and s.storage then
    raise exception using
      errcode = 'SPWFN',
      message = pg_catalog.format('spillway: project %s is fenced; the active project is %s (epoch %s)',
        s.project, coalesce(s.fenced_for, 'being chosen'), coalesce(s.fenced_epoch::text, 'unknown')),
      hint = 'Upload to the active project and retry; createSpillwayClient() does this by itself.';
  end if;
  return null;
end
$$;

-- Puts the guard on storage.objects where Storage is installed and this role may; answers
-- how many triggers it added (0 or 1).
create or replace function spillway.ensure_storage_fence()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  objects oid := pg_catalog.to_regclass('storage.objects');
begin
  if objects is null
     or not coalesce((select (s.data ->> 'storage')::boolean from spillway.settings s where s.id), true)
     or not pg_catalog.has_table_privilege(objects, 'TRIGGER')
     or exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = objects and g.tgname = 'spillway_storage_fence') then
    return 0;
  end if;
  create trigger spillway_storage_fence before insert or update or delete or truncate on storage.objects
    for each statement execute function spillway.storage_fence_guard();
  return 1;
end
$$;

revoke all on function spillway.storage_fence_guard() from public;
revoke all on function spillway.ensure_storage_fence() from public;
select spillway.revoke_api_roles();
