-- How many ticks in a row found a project unreachable, kept in the other project (the one
-- the tick could reach), so that an operator is alerted once a project stays down for more
-- than one tick, on the Edge runtime too, where nothing survives between ticks in memory.
create table if not exists spillway.unreachable (
  project text primary key check (project in ('primary', 'secondary')),
  since timestamptz not null default now(),
  ticks integer not null default 1 check (ticks > 0)
);
alter table spillway.unreachable enable row level security;
revoke all on spillway.unreachable from public;

select spillway.revoke_api_roles();
