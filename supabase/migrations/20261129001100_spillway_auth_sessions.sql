-- Auth's sessions across a switch: with the setting `authSessions` (default false, turned on
-- once both projects share one JWT secret) Auth's session tables (sessions, refresh_tokens,
-- mfa_amr_claims) are carried like its other tables. Their capture trigger stays on them
-- when the setting is turned off again (Spillway's role may not drop a trigger on a table
-- it does not own): it then captures nothing of them.

-- Whether a change to the named Auth table is captured: every carried table while `auth`
-- is on (default true), the session tables only while `authSessions` is on too.
create or replace function spillway.auth_captures(tbl text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (select coalesce((s.data->>'auth')::boolean, true)
        and (tbl <> all (array['sessions', 'refresh_tokens', 'mfa_amr_claims'])
             or coalesce((s.data->>'authSessions')::boolean, false))
       from spillway.settings s where s.id),
    true)
$$;

-- Row trigger on the carried Auth tables of the active (as in 20261129000900, now asking
-- per table). Security definer: it runs for GoTrue's role, which has no rights on schema
-- spillway.
create or replace function spillway.auth_capture()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if spillway.auth_captures(tg_table_name) then
    insert into spillway.auth_changes (tbl, op, old, new)
    values (tg_table_name, tg_op,
      case when tg_op <> 'INSERT' then pg_catalog.to_jsonb(old) end,
      case when tg_op <> 'DELETE' then pg_catalog.to_jsonb(new) end);
  end if;
  return null;
end
$$;

-- After a copy of the named Auth tables is loaded or caught up on the standby: each
-- sequence they own (refresh_tokens.id is a bigserial) moves to at least the largest value
-- its column holds, never back, so that GoTrue on the new active hands out ids no carried
-- row has. Returns how many sequences it looked at.
create or replace function spillway.settle_auth_sequences(tables text[])
returns integer
language plpgsql
set search_path = ''
as $$
declare
  q record;
  n integer := 0;
  top bigint;
begin
  for q in
    select s.oid::regclass as seq, c.oid::regclass as rel, a.attname
      from pg_catalog.pg_depend d
      join pg_catalog.pg_class s on s.oid = d.objid and s.relkind = 'S'
      join pg_catalog.pg_class c on c.oid = d.refobjid
      join pg_catalog.pg_namespace ns on ns.oid = c.relnamespace
      join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum = d.refobjsubid
     where d.classid = 'pg_catalog.pg_class'::regclass and d.refclassid = 'pg_catalog.pg_class'::regclass
       and d.deptype in ('a', 'i') and ns.nspname = 'auth' and c.relname = any(tables)
  loop
    execute pg_catalog.format('select max(%I)::int8 from %s', q.attname, q.rel) into top;
    if top is not null then
      execute pg_catalog.format('select pg_catalog.setval(%L::regclass, greatest(%s, (select last_value from %s)))', q.seq, top, q.seq);
    end if;
    n := n + 1;
  end loop;
  return n;
end
$$;

revoke all on function spillway.auth_captures(text) from public;
revoke all on function spillway.settle_auth_sequences(text[]) from public;

select spillway.revoke_api_roles();
