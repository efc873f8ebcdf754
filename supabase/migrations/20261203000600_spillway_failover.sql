-- Failover (setting `failover`): the standby is published as the active project when the
-- active stays unreachable. Three tables, each with one writer:
--
-- spillway.failover, in the project failed over to: one row per failover, with the data
-- loss window (the last carried position of the old active's change stream and the time
-- before which every change was carried) and, once the old active answered again and was
-- fenced, when its divergent transactions were listed (resolved_at) and how many.
create table if not exists spillway.failover (
  epoch bigint primary key,
  from_project text not null check (from_project in ('primary', 'secondary')),
  to_project text not null check (to_project in ('primary', 'secondary')),
  slot text,
  base_snapshot text,
  carried_lsn pg_lsn,
  carried_until timestamptz,
  silent_after timestamptz,
  failed_at timestamptz not null default now(),
  resolved_at timestamptz,
  divergent integer,
  note text
);

-- spillway.divergent, in the project failed over to: every change the old active committed
-- after the last carried position, never applied: table, key, operation and commit time,
-- and the row's values as text (the new row; the old one for a delete), for the operator to
-- review (docs/failover.md) after the old active has been backed up to again.
create table if not exists spillway.divergent (
  epoch bigint not null,
  commit_lsn pg_lsn not null,
  seq integer not null,
  project text not null check (project in ('primary', 'secondary')),
  table_name text not null,
  key jsonb,
  "row" jsonb,
  operation text not null check (operation in ('insert', 'update', 'delete', 'truncate')),
  committed_at timestamptz not null,
  listed_at timestamptz not null default now(),
  primary key (epoch, commit_lsn, seq)
);

-- spillway.activity, in both projects: when a tick last reached each project (measured it
-- and wrote its sample there). The standby's row for the active says when it was last
-- seen; `/status` shows it as each project's last activity.
create table if not exists spillway.activity (
  project text primary key check (project in ('primary', 'secondary')),
  at timestamptz not null default now()
);

alter table spillway.failover enable row level security;
alter table spillway.divergent enable row level security;
alter table spillway.activity enable row level security;
revoke all on spillway.failover from public;
revoke all on spillway.divergent from public;
revoke all on spillway.activity from public;

select spillway.revoke_api_roles();
