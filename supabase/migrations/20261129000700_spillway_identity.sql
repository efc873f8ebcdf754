-- Replica identities Spillway changed on the app's tables: a replicated table without a
-- primary key is made REPLICA IDENTITY FULL on the active (Postgres refuses updates of a
-- published table that has no identity). Each change is recorded here, in the project
-- where it was made, so that it is put back (REPLICA IDENTITY DEFAULT) once Spillway no
-- longer needs it: the table gained a primary key or left the replicated schemas, or the
-- project feeds no backup any more.
create table if not exists spillway.identity_changes (
  relid oid primary key,
  -- The table's name when it was changed, for operators reading this table.
  qualified text not null,
  changed_at timestamptz not null default now()
);
alter table spillway.identity_changes enable row level security;
revoke all on spillway.identity_changes from public;

select spillway.revoke_api_roles();
