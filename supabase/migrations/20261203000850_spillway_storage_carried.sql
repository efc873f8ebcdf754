-- The objects Spillway carried to this project, from which project and as which etag. A
-- backup deletes an object on the standby only when it was carried there (or from there)
-- as it is now: an object the standby holds of its own (uploaded while it was the active,
-- before a failover) is never destroyed for being absent from the active.
create table if not exists spillway.storage_carried (
  bucket_id text not null,
  name text not null,
  source text not null check (source in ('primary', 'secondary')),
  etag text not null,
  carried_at timestamptz not null default now(),
  primary key (bucket_id, name)
);
alter table spillway.storage_carried enable row level security;

select spillway.revoke_api_roles();
