-- The retention job, `spillway-retention`, leaves the slots alone while a backup or a switch
-- holds the operation lease (one reading the slot, or about to, would find it gone), and on a
-- project read-only by default (over its quota) it records why before it drops anything.

-- As before (20261203000310), with: nothing while spillway.lease is held and unexpired; the
-- event is written before the slot is dropped, in one subtransaction (a slot that cannot be
-- dropped leaves no event); in a read-only transaction nothing is dropped (nothing could
-- say so): the job's command opens its transaction read write for that.
create or replace function spillway.guard_retention()
returns text[]
language plpgsql
set search_path = ''
as $$
declare
  cap bigint;
  s record;
  dropped text[] := array[]::text[];
begin
  if exists (select 1 from spillway.lease l where l.id and l.holder is not null and l.expires_at > pg_catalog.now()) then
    return dropped;
  end if;
  if pg_catalog.current_setting('transaction_read_only') = 'on' then
    raise warning 'spillway.guard_retention: the transaction is read-only, no slot dropped (run it after set transaction read write)';
    return dropped;
  end if;
  select (st.data ->> 'maxRetainedBytes')::bigint into cap from spillway.settings st where st.id;
  cap := coalesce(cap, 134217728);
  for s in
    select r.slot_name, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn)::bigint as retained
      from pg_catalog.pg_replication_slots r
     where r.slot_type = 'logical' and r.database = pg_catalog.current_database() and not r.active
       and r.slot_name ~ '^spillway_(primary|secondary)_to_(primary|secondary)_'
       and r.restart_lsn is not null
       and pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), r.restart_lsn) > cap
  loop
    begin
      insert into spillway.events (id, level, kind, message, project, data)
      values (
        pg_catalog.gen_random_uuid(), 'warn', 'backup.retention_guard',
        pg_catalog.format('the change capture slot %s held %s bytes of WAL, over the limit of %s (maxRetainedBytes), with no tick to read it: the database''s own job dropped it, and the next backup is a full one',
          s.slot_name, s.retained, cap),
        (select p.name from spillway.project p),
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

-- The job's transaction is read write even where the database's default is read-only.
create or replace function spillway.schedule_retention_guard()
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    return false;
  end if;
  perform cron.schedule('spillway-retention', '* * * * *', 'set transaction read write; select spillway.guard_retention()');
  return true;
end
$$;

select spillway.schedule_retention_guard();

revoke all on function spillway.guard_retention() from public;
revoke all on function spillway.schedule_retention_guard() from public;

select spillway.revoke_api_roles();
