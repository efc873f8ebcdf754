import type { Sql } from "postgres";
import type { TestServer } from "./postgres.ts";

/**
 * STAND-IN for Supabase Auth (GoTrue), which cannot run here: its schema `auth`, shaped
 * like GoTrue's current tables (users, identities, sessions, refresh_tokens,
 * mfa_amr_claims, mfa_factors, their enums, and `auth.uid()`), owned by GoTrue's role `supabase_auth_admin`, with the rights hosted
 * Supabase gives `postgres` on them (read, write, truncate, reference, put triggers on;
 * never alter or publish). Its writes below run as `supabase_auth_admin`, as GoTrue's do;
 * passwords are bcrypt hashes (pgcrypto), as GoTrue stores them.
 */
const AUTH_SCHEMA = `
create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;
do $$ begin
  if not exists (select 1 from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin noinherit createrole;
  end if;
end $$;
create schema auth authorization supabase_auth_admin;
grant usage on schema extensions to supabase_auth_admin;
set role supabase_auth_admin;
create type auth.aal_level as enum ('aal1', 'aal2', 'aal3');
create type auth.factor_type as enum ('totp', 'webauthn', 'phone');
create type auth.factor_status as enum ('unverified', 'verified');
create table auth.users (
  instance_id uuid,
  id uuid not null primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text unique default null,
  phone_confirmed_at timestamptz,
  phone_change text default '',
  phone_change_token varchar(255) default '',
  phone_change_sent_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current varchar(255) default '',
  email_change_confirm_status smallint default 0 check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
  banned_until timestamptz,
  reauthentication_token varchar(255) default '',
  reauthentication_sent_at timestamptz,
  is_sso_user boolean not null default false,
  deleted_at timestamptz,
  is_anonymous boolean not null default false
);
create unique index users_email_partial_key on auth.users (email) where is_sso_user = false;
create table auth.identities (
  provider_id text not null,
  user_id uuid not null references auth.users (id) on delete cascade,
  identity_data jsonb not null,
  provider text not null,
  last_sign_in_at timestamptz,
  created_at timestamptz,
  updated_at timestamptz,
  email text generated always as (lower(identity_data->>'email')) stored,
  id uuid not null default gen_random_uuid() primary key,
  constraint identities_provider_id_provider_unique unique (provider_id, provider)
);
create table auth.sessions (
  id uuid not null primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz,
  updated_at timestamptz,
  factor_id uuid,
  aal auth.aal_level,
  not_after timestamptz,
  refreshed_at timestamp,
  user_agent text,
  ip inet,
  tag text
);
create table auth.refresh_tokens (
  instance_id uuid,
  id bigserial primary key,
  token varchar(255) unique,
  user_id varchar(255),
  revoked boolean,
  created_at timestamptz,
  updated_at timestamptz,
  parent varchar(255),
  session_id uuid references auth.sessions (id) on delete cascade
);
create table auth.mfa_amr_claims (
  session_id uuid not null references auth.sessions (id) on delete cascade,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  authentication_method text not null,
  id uuid not null primary key,
  constraint mfa_amr_claims_session_id_authentication_method_pkey unique (session_id, authentication_method)
);
create table auth.mfa_factors (
  id uuid not null primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  friendly_name text,
  factor_type auth.factor_type not null,
  status auth.factor_status not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  secret text,
  phone text,
  last_challenged_at timestamptz unique,
  web_authn_credential jsonb,
  web_authn_aaguid uuid
);
alter table auth.users enable row level security;
alter table auth.identities enable row level security;
alter table auth.sessions enable row level security;
alter table auth.refresh_tokens enable row level security;
alter table auth.mfa_amr_claims enable row level security;
alter table auth.mfa_factors enable row level security;
-- The request's user, from the claims the Data API sets for each request (GoTrue's own).
create function auth.uid() returns uuid language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
reset role;
grant usage on schema auth to anon, authenticated, service_role;
grant usage on schema auth to postgres;
grant select, insert, update, delete, truncate, references, trigger on all tables in schema auth to postgres;
grant usage, select, update on all sequences in schema auth to postgres;
`;

/**
 * Builds the stand-in `auth` schema on a test server (as the superuser, like the
 * platform does before the app's migrations run).
 *
 * @example
 * await installAuth(pair.primary);
 */
export async function installAuth(server: TestServer): Promise<void> {
  await server.admin.unsafe(AUTH_SCHEMA);
}

// GoTrue's writes: as its own role, in one transaction each. Its statistics reach the
// counters at commit (a backend otherwise holds them up to 10 s), as a busy server's do.
async function asGoTrue<T>(server: TestServer, work: (tx: Sql) => Promise<T>): Promise<T> {
  return (await server.admin.begin(async (tx) => {
    await tx`select pg_stat_force_next_flush()`;
    await tx`set local role supabase_auth_admin`;
    return await work(tx as unknown as Sql);
  })) as T;
}

/**
 * GoTrue's sign-up with email and password: the user (bcrypt hash) and its email identity.
 * Returns the new user's id.
 *
 * @example
 * const id = await signUp(pair.primary, "ana@example.com", "pw-1", { username: "ana" });
 */
export async function signUp(server: TestServer, email: string, password: string, meta: Record<string, unknown> = {}): Promise<string> {
  return await asGoTrue(server, async (tx) => {
    const [user] = await tx<{ id: string }[]>`
      insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
      values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated', ${email},
        extensions.crypt(${password}, extensions.gen_salt('bf')), now(), ${tx.json({ provider: "email", providers: ["email"] })}, ${tx.json(meta as never)}, now(), now())
      returning id`;
    await tx`
      insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
      values (${user!.id}::text, ${user!.id}, ${tx.json({ sub: user!.id, email, email_verified: true })}, 'email', now(), now())`;
    return user!.id;
  });
}

/** A session GoTrue's sign-in made: its row's id and its first refresh token. */
export interface SignedIn {
  userId: string;
  sessionId: string;
  refreshToken: string;
}

/**
 * GoTrue's password sign-in: finds the user whose bcrypt hash matches, then records the
 * sign-in (last_sign_in_at on the user and identity, a session, its refresh token and its
 * `password` AMR claim). Returns them, or null when the password does not match.
 *
 * @example
 * const signedIn = await passwordSignIn(pair.primary, "ana@example.com", "pw-1");
 */
export async function passwordSignIn(server: TestServer, email: string, password: string): Promise<SignedIn | null> {
  return await asGoTrue(server, async (tx) => {
    const [user] = await tx<{ id: string }[]>`
      select id from auth.users where email = ${email} and encrypted_password = extensions.crypt(${password}, encrypted_password) and deleted_at is null`;
    if (!user) return null;
    await tx`update auth.users set last_sign_in_at = now(), updated_at = now() where id = ${user.id}`;
    await tx`update auth.identities set last_sign_in_at = now(), updated_at = now() where user_id = ${user.id} and provider = 'email'`;
    const [session] = await tx<{ id: string }[]>`
      insert into auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip)
      values (gen_random_uuid(), ${user.id}, now(), now(), 'aal1', 'test', '203.0.113.7') returning id`;
    const [token] = await tx<{ token: string }[]>`
      insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, session_id)
      values ('00000000-0000-0000-0000-000000000000', md5(random()::text), ${user.id}, false, now(), now(), ${session!.id})
      returning token`;
    await tx`
      insert into auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method, id)
      values (${session!.id}, now(), now(), 'password', gen_random_uuid())`;
    return { userId: user.id, sessionId: session!.id, refreshToken: token!.token };
  });
}

/**
 * GoTrue's password sign-in (see `passwordSignIn`). Returns the user's id, or null when
 * the password does not match.
 *
 * @example
 * assert.equal(await signIn(pair.secondary, "ana@example.com", "pw-1"), id);
 */
export async function signIn(server: TestServer, email: string, password: string): Promise<string | null> {
  return (await passwordSignIn(server, email, password))?.userId ?? null;
}

/**
 * GoTrue's refresh-token grant: the token must exist, be unrevoked and belong to a live
 * session; it is revoked and a new one (its child) issued in the same session. Returns the
 * new token, or null when GoTrue refuses the old one.
 *
 * @example
 * const next = await refreshToken(pair.secondary, signedIn.refreshToken);
 */
export async function refreshToken(server: TestServer, token: string): Promise<SignedIn | null> {
  return await asGoTrue(server, async (tx) => {
    const [old] = await tx<{ id: string; user_id: string; session_id: string }[]>`
      select r.id::text, r.user_id, r.session_id from auth.refresh_tokens r join auth.sessions s on s.id = r.session_id
      where r.token = ${token} and not r.revoked for update of r`;
    if (!old) return null;
    await tx`update auth.refresh_tokens set revoked = true, updated_at = now() where id = ${old.id}`;
    const [next] = await tx<{ token: string }[]>`
      insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
      values ('00000000-0000-0000-0000-000000000000', md5(random()::text), ${old.user_id}, false, now(), now(), ${token}, ${old.session_id})
      returning token`;
    await tx`update auth.sessions set refreshed_at = now()::timestamp, updated_at = now() where id = ${old.session_id}`;
    return { userId: old.user_id, sessionId: old.session_id, refreshToken: next!.token };
  });
}

/**
 * GoTrue's sign-out: the session goes (its refresh tokens and AMR claims by cascade).
 *
 * @example
 * await signOut(pair.primary, signedIn.sessionId);
 */
export async function signOut(server: TestServer, sessionId: string): Promise<void> {
  await asGoTrue(server, (tx) => tx`delete from auth.sessions where id = ${sessionId}`);
}

/**
 * GoTrue's user update: new metadata, and a new password when given.
 *
 * @example
 * await updateUser(pair.primary, id, { username: "ana2" }, "pw-2");
 */
export async function updateUser(server: TestServer, id: string, meta: Record<string, unknown>, password?: string): Promise<void> {
  await asGoTrue(server, async (tx) => {
    await tx`update auth.users set raw_user_meta_data = ${tx.json(meta as never)}, updated_at = now() where id = ${id}`;
    if (password)
      await tx`update auth.users set encrypted_password = extensions.crypt(${password}, extensions.gen_salt('bf')) where id = ${id}`;
  });
}

/**
 * GoTrue's enrolment of a TOTP factor.
 *
 * @example
 * await enrolFactor(pair.primary, id);
 */
export async function enrolFactor(server: TestServer, id: string): Promise<void> {
  await asGoTrue(
    server,
    (tx) => tx`
    insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, secret)
    values (gen_random_uuid(), ${id}, 'phone app', 'totp', 'verified', now(), now(), 'JBSWY3DPEHPK3PXP')`,
  );
}

/**
 * GoTrue's user deletion (identities, sessions and factors go with it by cascade).
 *
 * @example
 * await deleteUser(pair.primary, id);
 */
export async function deleteUser(server: TestServer, id: string): Promise<void> {
  await asGoTrue(server, (tx) => tx`delete from auth.users where id = ${id}`);
}

/**
 * A fingerprint of the tables Spillway carries (users, identities, mfa_factors, or the
 * given ones): each table's rows as text, sorted, hashed.
 *
 * @example
 * assert.deepEqual(await authFingerprint(pair.primary.admin), await authFingerprint(pair.secondary.admin));
 */
export async function authFingerprint(sql: Sql, tables = ["users", "identities", "mfa_factors"]): Promise<Record<string, string>> {
  return await sql.begin("isolation level repeatable read", async (tx) => {
    await tx`set local timezone = 'UTC'`;
    const out: Record<string, string> = {};
    for (const name of tables) {
      const [row] = await tx.unsafe(
        `select count(*) as n, coalesce(md5(string_agg(t::text, '|' order by t::text)), '') as h from auth."${name}" t`,
      );
      out[name] = `${row!.n}:${row!.h}`;
    }
    return out;
  });
}

/**
 * The app's tables that reference Auth's users, as a Supabase app has them: a profile per
 * user made by the classic `on_auth_user_created` trigger, and notes owned by users.
 */
export const APP_SCHEMA = `
create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  username text,
  created_at timestamptz not null default now()
);
create table public.notes (
  id uuid primary key default gen_random_uuid(),
  owner uuid not null references auth.users (id) on delete cascade,
  body text not null
);
create function public.handle_new_user() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  insert into public.profiles (id, username) values (new.id, new.raw_user_meta_data->>'username');
  return new;
end
$$;
create trigger on_auth_user_created after insert on auth.users for each row execute function public.handle_new_user();
`;
