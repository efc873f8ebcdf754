-- The scheduler: a pg_cron job `spillway-tick` posts to the function's /tick every minute,
-- with the URL and cron token read from Vault (where present) or from spillway.secrets, which
-- no API role can read. Where pg_cron or pg_net is absent, this does nothing.

create table if not exists spillway.secrets (
  name text primary key check (name in ('spillway_function_url', 'spillway_cron_token')),
  value text not null,
  updated_at timestamptz not null default now()
);
alter table spillway.secrets enable row level security;
revoke all on spillway.secrets from public;

-- A secret by name: Vault first, then spillway.secrets.
create or replace function spillway.secret(secret_name text)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  found text;
begin
  if pg_catalog.to_regclass('vault.decrypted_secrets') is not null then
    execute 'select decrypted_secret from vault.decrypted_secrets where name = $1 order by created_at desc limit 1'
      into found using secret_name;
    if found is not null then
      return found;
    end if;
  end if;
  select s.value into found from spillway.secrets s where s.name = secret_name;
  return found;
end
$$;

-- What the job runs: one POST to <function url>/tick with the cron token. Returns pg_net's
-- request id, or null (with a warning) when something it needs is missing.
create or replace function spillway.call_tick()
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  url text := spillway.secret('spillway_function_url');
  token text := spillway.secret('spillway_cron_token');
  request_id bigint;
begin
  if url is null or token is null then
    raise warning 'spillway: no function URL or cron token stored; run `spillway init`';
    return null;
  end if;
  if pg_catalog.to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is null then
    raise warning 'spillway: pg_net is not enabled; enable it to let pg_cron reach the function';
    return null;
  end if;
  execute 'select net.http_post(url := $1, body := $2, params := $3, headers := $4, timeout_milliseconds := $5)'
    into request_id
    using pg_catalog.rtrim(url, '/') || '/tick', '{}'::jsonb, '{}'::jsonb,
      pg_catalog.jsonb_build_object('Authorization', 'Bearer ' || token, 'Content-Type', 'application/json'), 60000;
  return request_id;
end
$$;

-- Schedules (or re-schedules) the job where pg_cron exists; returns whether it did.
create or replace function spillway.schedule_tick()
returns boolean
language plpgsql
set search_path = ''
as $$
begin
  if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
    return false;
  end if;
  perform cron.schedule('spillway-tick', '* * * * *', 'select spillway.call_tick()');
  return true;
end
$$;

select spillway.schedule_tick();

revoke all on function spillway.secret(text) from public;
revoke all on function spillway.call_tick() from public;
revoke all on function spillway.schedule_tick() from public;

do $$
declare
  api_role text;
begin
  foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
      execute format('revoke all on spillway.secrets from %I', api_role);
      execute format('revoke all on function spillway.secret(text) from %I', api_role);
      execute format('revoke all on function spillway.call_tick() from %I', api_role);
      execute format('revoke all on function spillway.schedule_tick() from %I', api_role);
    end if;
  end loop;
end
$$;
