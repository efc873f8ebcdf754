-- The WAL a change capture slot holds is capped by the setting maxRetainedBytes even when no
-- tick runs (the function is down, its schedule stopped, the project paused behind it): a
-- pg_cron job inside the database, `spillway-retention`, drops any Spillway slot holding more
-- and records why in spillway.events; the next backup is then a full one. On a Free project
-- (1 GB of disk) a slot nobody reads is the classic way to fill it. Where pg_cron is absent,
-- nothing is scheduled (the tick's own retention guard still runs).

-- Drops Spillway's slots (named spillway_<from>_to_<to>_…, never an app's own) that hold
-- more WAL than maxRetainedBytes; returns their names. A slot being read at that moment is
-- left for the next pass.
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
      perform pg_catalog.pg_drop_replication_slot(s.slot_name);
    exception when object_in_use or undefined_object then
      continue;
    end;
    insert into spillway.events (id, level, kind, message, project, data)
    values (
      pg_catalog.gen_random_uuid(), 'warn', 'backup.retention_guard',
      pg_catalog.format('the change capture slot %s held %s bytes of WAL, over the limit of %s (maxRetainedBytes), with no tick to read it: the database''s own job dropped it, and the next backup is a full one',
        s.slot_name, s.retained, cap),
      (select p.name from spillway.project p),
      pg_catalog.jsonb_build_object('slot', s.slot_name, 'retainedBytes', s.retained, 'maxRetainedBytes', cap, 'by', 'spillway-retention'));
    dropped := dropped || s.slot_name;
  end loop;
  return dropped;
end
$$;

-- Schedules (or re-schedules) the job where pg_cron exists; returns whether it did.
create or replace function spillway.schedule_retention_guard()
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    return false;
  end if;
  perform cron.schedule('spillway-retention', '* * * * *', 'select spillway.guard_retention()');
  return true;
end
$$;

select spillway.schedule_retention_guard();

revoke all on function spillway.guard_retention() from public;
revoke all on function spillway.schedule_retention_guard() from public;

select spillway.revoke_api_roles();
