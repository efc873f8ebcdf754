-- What each project's Auth capture followed, as a number: `auth_generation` moves on, in the
-- same transaction, whenever the project's own settings row changes what its capture
-- trigger records (`auth`, `authSessions`), whoever writes it (a patch, or the convergence
-- of a project that missed one). The standby's Auth copy record keeps the active's number
-- it was made under; an incremental backup builds on it only while the active's number is
-- still the same, so a capture turned off and on again on the active, even while the
-- standby could not be told, makes the next backup a full one.
alter table spillway.settings add column if not exists auth_generation bigint not null default 0;
alter table spillway.auth_copy add column if not exists source_generation bigint;

create or replace function spillway.settings_auth_generation()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if coalesce((old.data->>'auth')::boolean, true) is distinct from coalesce((new.data->>'auth')::boolean, true)
     or coalesce((old.data->>'authSessions')::boolean, false) is distinct from coalesce((new.data->>'authSessions')::boolean, false) then
    new.auth_generation := old.auth_generation + 1;
  end if;
  return new;
end
$$;
revoke all on function spillway.settings_auth_generation() from public;

drop trigger if exists spillway_settings_auth_generation on spillway.settings;
create trigger spillway_settings_auth_generation before update on spillway.settings
  for each row execute function spillway.settings_auth_generation();

select spillway.revoke_api_roles();
