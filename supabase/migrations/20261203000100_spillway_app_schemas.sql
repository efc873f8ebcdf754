-- Spillway carries every schema that holds the app's tables by default (setting `schemas`
-- null), not only `public`: apps keep accounts, billing or private data in schemas of their
-- own, and those were left behind while backups reported success.

-- Whether a schema may hold the app's data: every schema but Postgres's and Supabase's own
-- (`auth` and `storage` have their own handling) and Spillway's.
create or replace function spillway.is_app_schema(schema_name text)
returns boolean
language sql
immutable
set search_path = ''
as $$
  select not (
    schema_name = any (array['auth', 'storage', 'extensions', 'realtime', 'vault', 'cron', 'net', 'pgbouncer',
                             'information_schema', 'spillway'])
    or pg_catalog.starts_with(schema_name, 'pg_')
    or pg_catalog.starts_with(schema_name, 'graphql')
    or pg_catalog.starts_with(schema_name, 'pgsodium')
    or pg_catalog.starts_with(schema_name, 'supabase_'))
$$;

-- The schemas a null `schemas` setting carries in this database: `public`, and every app
-- schema holding a table of the app's (a table an extension created is the extension's).
create or replace function spillway.app_schemas()
returns text[]
language sql
stable
set search_path = ''
as $$
  select array['public'] || coalesce(pg_catalog.array_agg(n.nspname::text order by n.nspname), array[]::text[])
    from pg_catalog.pg_namespace n
   where n.nspname <> 'public'
     and spillway.is_app_schema(n.nspname)
     and exists (
       select 1 from pg_catalog.pg_class c
        where c.relnamespace = n.oid and c.relkind in ('r', 'p')
          and not exists (
            select 1 from pg_catalog.pg_depend d
             where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid and d.deptype = 'e'))
$$;

-- The fenced schemas: every app schema of this database, and those the setting names (a
-- list that leaves an app schema out still fences it: on a fenced project no app table
-- takes writes, whatever is carried); and Supabase Auth's where it is carried (setting
-- `auth`, by default wherever the schema exists). Tables created later in any of them get
-- the fence from the event trigger.
create or replace function spillway.fenced_schemas()
returns text[]
language sql
stable
set search_path = ''
as $$
  select array(select distinct x from pg_catalog.unnest(
           case when pg_catalog.jsonb_typeof(s.data -> 'schemas') = 'array'
                then array(select pg_catalog.jsonb_array_elements_text(s.data -> 'schemas'))
                else array[]::text[] end
           || spillway.app_schemas()
           || case when coalesce((s.data ->> 'auth')::boolean, true)
                     and exists (select 1 from pg_catalog.pg_namespace n where n.nspname = 'auth')
                   then array['auth'] else array[]::text[] end) x order by x)
    from spillway.settings s
   where s.id
$$;

-- A stored `["public"]` takes the new default unless the operator ever patched `schemas`
-- itself: a patch of any other setting stored every setting, the old default included, so
-- the version cannot tell a choice; the `config.changed` events name the patched fields
-- (`data.patch`, and `data.changed` on newer ones). A list the operator chose and that
-- leaves an app schema out makes backups, switches and /verify name it (TABLES_LEFT_BEHIND).
update spillway.settings
set data = pg_catalog.jsonb_set(data, '{schemas}', 'null'::jsonb)
where id and data -> 'schemas' = '["public"]'::jsonb
  and not exists (
    select 1 from spillway.events e
     where e.kind = 'config.changed'
       and (coalesce(e.data -> 'patch', '{}') ? 'schemas' or coalesce(e.data -> 'changed', '{}') ? 'schemas'));

-- Auth's changes are applied on the columns both projects have: a change captured on an
-- active whose GoTrue is newer carries keys the standby lacks (ignored), and a column only
-- the standby has takes its default instead of a null.
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
  by_key := pg_catalog.format('delete from %s where (%s) = (select %s from pg_catalog.jsonb_populate_record(null::%s, $1))', rel, key_cols, key_cols, rel);
  if old_row is not null then
    execute by_key using old_row;
  end if;
  if new_row is not null then
    select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by a.attnum)
      into stored_cols
      from pg_catalog.pg_attribute a
     where a.attrelid = rel and a.attnum > 0 and not a.attisdropped and a.attgenerated = '' and new_row ? a.attname;
    execute by_key using new_row;
    execute pg_catalog.format('insert into %s (%s) overriding system value select %s from pg_catalog.jsonb_populate_record(null::%s, $1)', rel, stored_cols, stored_cols, rel)
      using new_row;
  end if;
end
$$;

-- A captured Auth change is applied on the standby only while it holds a copy of the
-- active's Auth to build on: a run that does not carry Auth (the standby's Auth cannot hold
-- the active's users yet) forgets that copy first, and the app's changes still go through.
create or replace function spillway.auth_apply()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if spillway.auth_carried() and exists (select 1 from spillway.auth_copy c where c.id) then
    perform spillway.apply_auth_change(new.tbl, new.op, new.old, new.new);
  end if;
  return null;
end
$$;

revoke all on function spillway.is_app_schema(text) from public;
revoke all on function spillway.app_schemas() from public;
revoke all on function spillway.apply_auth_change(text, text, jsonb, jsonb) from public;
revoke all on function spillway.auth_apply() from public;

select spillway.revoke_api_roles();
