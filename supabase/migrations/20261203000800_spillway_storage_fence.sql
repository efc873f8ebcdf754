-- Supabase Storage's objects are fenced with the tables (setting `storage`, on by default):
-- an upload or delete on a fenced project writes a row of storage.objects, which the fence
-- trigger refuses, so that nothing is stored where no app reads any more. Only the objects
-- table: Storage's own tables (its migrations, multipart uploads in progress) stay writable,
-- so that the Storage service of a fenced project still starts and upgrades.

-- Objects Spillway is copying to this project through its Storage API: the fence lets
-- Storage write these rows (and no others) until `until`.
create table if not exists spillway.storage_copying (
  bucket_id text not null,
  name text not null,
  until timestamptz not null,
  primary key (bucket_id, name)
);
alter table spillway.storage_copying enable row level security;

-- When Storage was last carried to this project, from where, and what the active held then.
create table if not exists spillway.storage_copy (
  id boolean primary key default true check (id),
  copied_at timestamptz not null,
  source text not null check (source in ('primary', 'secondary')),
  objects bigint not null,
  bytes bigint not null
);
alter table spillway.storage_copy enable row level security;

-- The fence guard of storage.objects, row by row: as spillway.fence_guard while `storage`
-- is on, except for the objects Spillway is copying here. The trigger stays when the
-- setting is turned off (dropping it takes the table's owner, Storage's own role); the
-- guard then lets every write through.
create or replace function spillway.storage_fence_guard()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  s record;
  o record;
begin
  o := case when tg_op = 'DELETE' then old else new end;
  select st.fenced, st.fenced_for, st.fenced_epoch,
         coalesce((select p.name from spillway.project p), pg_catalog.current_database()) as project,
         coalesce((select (t.data ->> 'storage')::boolean from spillway.settings t where t.id), true) as storage
    into s
    from spillway.state st
   where st.id
     for share;
  if s.fenced and s.storage
     and not exists (select 1 from spillway.storage_copying c
                      where c.bucket_id = o.bucket_id and c.name = o.name and c.until > pg_catalog.now()) then
    raise exception using
      errcode = 'SPWFN',
      message = pg_catalog.format('spillway: project %s is fenced; the active project is %s (epoch %s)',
        s.project, coalesce(s.fenced_for, 'being chosen'), coalesce(s.fenced_epoch::text, 'unknown')),
      hint = 'Upload to the active project and retry; createSpillwayClient() does this by itself.';
  end if;
  return o;
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
  -- Read from the catalog: to_regclass needs usage on a schema the role may not have.
  objects oid := (select c.oid from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = 'storage' and c.relname = 'objects' and c.relkind = 'r');
begin
  if objects is null
     or not coalesce((select (s.data ->> 'storage')::boolean from spillway.settings s where s.id), true)
     or not pg_catalog.has_table_privilege(objects, 'TRIGGER')
     or exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = objects and g.tgname = 'spillway_storage_fence') then
    return 0;
  end if;
  create trigger spillway_storage_fence before insert or update or delete on storage.objects
    for each row execute function spillway.storage_fence_guard();
  return 1;
end
$$;

revoke all on function spillway.storage_fence_guard() from public;
revoke all on function spillway.ensure_storage_fence() from public;
select spillway.revoke_api_roles();
