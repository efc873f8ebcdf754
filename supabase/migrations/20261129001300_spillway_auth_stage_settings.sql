-- A staged full copy's Auth stage records the settings version it was staged under. Auth's
-- changes are captured only while `auth` (and, for the session tables, `authSessions`) is
-- on: after any settings change since (`auth` turned off and on again between two calls
-- holds the same tables, yet its changes meanwhile were never captured) the next call
-- stages Auth anew from a new snapshot.
alter table spillway.auth_stage add column if not exists settings_version bigint;

select spillway.revoke_api_roles();
