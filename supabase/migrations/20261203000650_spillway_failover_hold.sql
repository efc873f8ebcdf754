-- A failover whose old active's changes could not be listed (its slot is gone, or the listing
-- failed) holds that project: no backup or switch writes to it until an operator acknowledges
-- the failover (POST /failover/ack), as its rows are then the only record of what it committed.
alter table spillway.failover add column if not exists acked_at timestamptz;

-- The retention job keeps, besides what 20261203000310 kept, the slots from this project while
-- it may have been failed away from: failover is on, this project is the active one by its own
-- state, and no tick reached it for longer than failover.afterSeconds. The other project's
-- spillway.failover cannot be read from here; the slot is what lists the changes this project
-- committed that the failover did not carry (docs/failover.md). Its WAL then grows until a
-- tick reaches the project again.
create or replace function spillway.guard_retention()
returns text[]
language plpgsql
set search_path = ''
as $$
declare
  cap bigint;
  me text;
  held boolean;
  s record;
  dropped text[] := array[]::text[];
begin
  -- As 20261203000350: nothing while the lease is held, nothing in a read-only transaction.
  if exists (select 1 from spillway.lease l where l.id and l.holder is not null and l.expires_at > pg_catalog.now()) then
    return dropped;
  end if;
  if pg_catalog.current_setting('transaction_read_only') = 'on' then
    raise warning 'spillway.guard_retention: the transaction is read-only, no slot dropped (run it after set transaction read write)';
    return dropped;
  end if;
  select (st.data ->> 'maxRetainedBytes')::bigint into cap from spillway.settings st where st.id;
  cap := coalesce(cap, 134217728);
  select p.name into me from spillway.project p;
  select coalesce(
           pg_catalog.jsonb_typeof(st.data -> 'failover') = 'object'
           and exists (select 1 from spillway.state s2 where s2.id and s2.active = me and not s2.fenced)
           and coalesce((select a.at from spillway.activity a where a.project = me), '-infinity'::timestamptz)
               < pg_catalog.now() - pg_catalog.make_interval(secs => coalesce((st.data -> 'failover' ->> 'afterSeconds')::float8, 0)),
           false)
    into held from spillway.settings st where st.id;
  for s in
    select r.slot_name, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn)::bigint as retained
      from pg_catalog.pg_replication_slots r
     where r.slot_type = 'logical' and r.database = pg_catalog.current_database() and not r.active
       and r.slot_name ~ '^spillway_(primary|secondary)_to_(primary|secondary)_'
       and not (coalesce(held, false) and r.slot_name like 'spillway\_' || me || '\_to\_%')
       and r.restart_lsn is not null
       and pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn) > cap
  loop
    -- The event first, in one subtransaction with the drop: a slot that cannot be dropped leaves none.
    begin
      insert into spillway.events (id, level, kind, message, project, data)
      values (
        pg_catalog.gen_random_uuid(), 'warn', 'backup.retention_guard',
        pg_catalog.format('the change capture slot %s held %s bytes of WAL, over the limit of %s (maxRetainedBytes), with no tick to read it: the database''s own job dropped it, and the next backup is a full one',
          s.slot_name, s.retained, cap),
        me,
        pg_catalog.jsonb_build_object('slot', s.slot_name, 'retainedBytes', s.retained, 'maxRetainedBytes', cap, 'by', 'spillway-retention'));
      perform pg_catalog.pg_drop_replication_slot(s.slot_name);
    exception when object_in_use or undefined_object then
      continue;
    end;
    dropped := dropped || s.slot_name;
  end loop;
  return dropped;
end
$$;

-- The tables of an old active whose changes could not be listed are copied aside on it into
-- spillway_divergent_<epoch> (docs/failover.md): Spillway's own, never carried nor fenced.
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
    or pg_catalog.starts_with(schema_name, 'supabase_')
    or pg_catalog.starts_with(schema_name, 'spillway_divergent_'))
$$;

revoke all on function spillway.is_app_schema(text) from public;

revoke all on function spillway.guard_retention() from public;

select spillway.revoke_api_roles();
