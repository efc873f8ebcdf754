-- The policy's phase moves out of spillway.state into a row of its own: the fence guard
-- locks the state row `for share` in every app write transaction, so the state row must
-- change only when the fence does (fence, lift, publish). A phase written there made a tick
-- wait for open app transactions and failed REPEATABLE READ writers at their next write.
-- The phase belongs to an epoch: a switch starts the new active at 'normal'.
create table if not exists spillway.phase (
  id boolean primary key default true check (id),
  epoch bigint not null,
  phase text not null default 'normal' check (phase in ('normal', 'backup', 'critical')),
  updated_at timestamptz not null default now()
);
insert into spillway.phase (id, epoch, phase)
select true, s.epoch, s.phase from spillway.state s where s.id
on conflict (id) do nothing;
alter table spillway.phase enable row level security;
revoke all on spillway.phase from public;

-- A sequence's own position: pg_sequences shows last_value as null after `restart` or
-- `setval(s, n, false)` (is_called false), which is not the same as never used.
create or replace function spillway.sequence_state(seq regclass, out last_value bigint, out is_called boolean)
language plpgsql
stable
set search_path = ''
as $$
begin
  execute pg_catalog.format('select last_value, is_called from %s', seq) into last_value, is_called;
end
$$;
revoke all on function spillway.sequence_state(regclass) from public;

select spillway.revoke_api_roles();
