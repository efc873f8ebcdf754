// Every schema holding the app's tables is carried by default, shaped like a SaaS starter
// (basejump): accounts, memberships and invitations in their own schema, referenced from
// `public.projects` and referencing Auth's users, and order numbers from a sequence in a
// private schema. Auth is the GoTrue STAND-IN (test/support/gotrue.ts).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import postgres from "postgres";
import { call, forceBackup, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { installAuth, signUp } from "../support/gotrue.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

const APP = `
create schema basejump;
create schema app_private;
create sequence app_private.order_no;
create table basejump.accounts (
  id uuid primary key default gen_random_uuid(),
  primary_owner_user_id uuid not null references auth.users (id),
  name text not null,
  slug text unique
);
create table basejump.account_user (
  user_id uuid not null references auth.users (id) on delete cascade,
  account_id uuid not null references basejump.accounts (id) on delete cascade,
  account_role text not null,
  primary key (user_id, account_id)
);
create table basejump.invitations (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references basejump.accounts (id) on delete cascade,
  token text not null unique,
  invited_by_user_id uuid not null references auth.users (id)
);
create table public.projects (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references basejump.accounts (id),
  name text not null
);
create table public.orders (
  id bigint primary key default nextval('app_private.order_no'),
  project_id uuid not null references public.projects (id),
  total numeric not null
);
`;
const SCHEMAS = ["public", "basejump"];

let pair: TestPair;
let t: TestApp;
let owners: string[];

before(async () => {
  pair = await startTestPair();
  await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
  await applyToBoth(pair, APP);
  owners = [await signUp(pair.primary, "ana@example.com", "pw-ana"), await signUp(pair.primary, "ben@example.com", "pw-ben")];
  await pair.primary.admin.unsafe(`
    insert into basejump.accounts (primary_owner_user_id, name, slug)
      select ('{${owners.join(",")}}'::uuid[])[1 + i % 2], 'team ' || i, 'team-' || i from generate_series(1, 6) i;
    insert into basejump.account_user (user_id, account_id, account_role)
      select primary_owner_user_id, id, 'owner' from basejump.accounts;
    insert into basejump.invitations (account_id, token, invited_by_user_id)
      select id, md5(slug), primary_owner_user_id from basejump.accounts;
    insert into public.projects (account_id, name) select a.id, a.name || ' project ' || g from basejump.accounts a, generate_series(1, 5) g;
    insert into public.orders (project_id, total) select id, 9.90 from public.projects;`);
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

// The app's write as its own role on `name`: null, or the error it met.
async function appWrite(name: "primary" | "secondary", statement: string): Promise<{ code?: string; message: string } | null> {
  const sql = postgres(pair.urls[name], { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(statement);
    return null;
  } catch (e) {
    return e as { code?: string; message: string };
  } finally {
    await sql.end();
  }
}

async function assertSame(message: string): Promise<void> {
  assert.deepEqual(await fingerprint(pair.secondary.admin, SCHEMAS), await fingerprint(pair.primary.admin, SCHEMAS), message);
}

const newOrder = "insert into public.orders (project_id, total) select id, 1 from public.projects limit 1";

test("Supabase's and Postgres's own schemas are never among the app's, even holding tables", async () => {
  const own = ["realtime", "supabase_functions", "graphql", "pgsodium_masks", "vault", "storage", "net"];
  const existing = (await pair.primary.admin<{ nspname: string }[]>`select nspname from pg_namespace where nspname = any (${own})`).map(
    (r) => r.nspname,
  );
  const created = own.filter((s) => !existing.includes(s));
  await pair.primary.admin.unsafe(created.map((s) => `create schema ${s}; create table ${s}.own_table (id int);`).join("\n"));
  try {
    const [row] = await pair.primary.admin`select spillway.app_schemas() as schemas`;
    assert.deepEqual(row!.schemas, ["public", "basejump"]);
  } finally {
    // A `storage` schema without Storage's grants is not one a switch can meet on Supabase.
    await pair.primary.admin.unsafe(created.map((s) => `drop schema ${s} cascade;`).join("\n"));
  }
});

test("an upgraded install whose `schemas` was never patched takes the null default, even after other settings were patched; a patched list is kept", async () => {
  const migration = readFileSync(new URL("../../supabase/migrations/20261203000100_spillway_app_schemas.sql", import.meta.url), "utf8");
  const db = pair.primary.admin;
  const [before] = await db`select data, version from spillway.settings`;
  // The old default, stored again by a patch of another setting (version 2), told by an event of the older form (data.patch only).
  const event = (patch: Record<string, string[] | Record<string, number>>) =>
    db`insert into spillway.events (id, level, kind, message, data) values (gen_random_uuid(), 'info', 'config.changed', 'settings changed', ${db.json({ patch })})`;
  try {
    await db`delete from spillway.events where kind = 'config.changed'`;
    await event({ quotaBytes: { primary: 524288000, secondary: 524288000 } });
    await db`update spillway.settings set data = jsonb_set(data, '{schemas}', '["public"]'), version = 2 where id`;
    await db.unsafe(migration);
    assert.equal((await db`select data->'schemas' as s from spillway.settings`)[0]!.s, null);

    await event({ schemas: ["public"] });
    await db`update spillway.settings set data = jsonb_set(data, '{schemas}', '["public"]') where id`;
    await db.unsafe(migration);
    assert.deepEqual((await db`select data->'schemas' as s from spillway.settings`)[0]!.s, ["public"]);
  } finally {
    await db`update spillway.settings set data = ${db.json(before!.data)}, version = ${before!.version} where id`;
    await db`delete from spillway.events where kind = 'config.changed'`;
  }
});

test("out of the box every app schema is carried: accounts, memberships and invitations reach the standby, and /verify holds them", async () => {
  assert.equal((await call(t, "GET", "/config")).body.settings.schemas, null);
  const run = await forceBackup(t, "full");
  assert.equal(run.tables, 5, JSON.stringify(run));
  const [accounts] = await pair.secondary.admin`select count(*)::int as n from basejump.accounts`;
  assert.equal(accounts!.n, 6);
  const verified = await call(t, "POST", "/verify");
  assert.equal(verified.body.verify.ok, true, JSON.stringify(verified.body));
  assert.ok(verified.body.verify.tables.some((x: { table: string }) => x.table.includes("invitations")));
  await assertSame("after the full backup");
  assert.equal(
    await appWrite("primary", "insert into basejump.accounts (primary_owner_user_id, name) select id, 'late' from auth.users limit 1"),
    null,
  );
  assert.equal(await appWrite("primary", newOrder), null);
  assert.equal((await forceBackup(t, "auto")).kind, "incremental");
  await assertSame("after the incremental backup");
});

test("a sequence in a private schema that a carried column uses is carried: set on the standby with each backup", async () => {
  const [active] = await pair.primary.admin`select last_value::int8::text as v from app_private.order_no`;
  const [standby] = await pair.secondary.admin`select last_value::int8::text as v from app_private.order_no`;
  assert.equal(standby!.v, active!.v);
  assert.equal(Number(active!.v), 31);
});

test("a schema left out by the setting: backup, switch and /verify name each table left behind and the setting that carries it", async () => {
  assert.equal((await call(t, "PATCH", "/config", { schemas: ["public"], confirm: true })).status, 200);
  try {
    // A list an operator stored is kept when the migration that made null the default runs again.
    const migration = readFileSync(new URL("../../supabase/migrations/20261203000100_spillway_app_schemas.sql", import.meta.url), "utf8");
    assert.equal(await appWrite("primary", migration), null);
    const [stored] = await pair.primary.admin`select data->'schemas' as schemas from spillway.settings`;
    assert.deepEqual(stored!.schemas, ["public"]);

    const backup = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(backup.status, 409, JSON.stringify(backup.body));
    assert.equal(backup.body.error.code, "TABLES_LEFT_BEHIND");
    assert.match(backup.body.error.message, /basejump\.accounts \([^;]*public\.projects references it/);
    assert.match(backup.body.error.message, /basejump\.account_user \(it references auth\.users/);
    assert.match(backup.body.error.message, /add "basejump" to the setting schemas/);
    assert.deepEqual(backup.body.error.details.schemas, ["public", "basejump"]);
    const switched = await call(t, "POST", "/force-switch", {});
    assert.equal(switched.status, 409, JSON.stringify(switched.body));
    assert.equal(switched.body.error.code, "TABLES_LEFT_BEHIND");
    const [state] = await pair.primary.admin`select active, fenced from spillway.state`;
    assert.deepEqual({ ...state }, { active: "primary", fenced: false });
    const verified = (await call(t, "POST", "/verify")).body.verify;
    assert.equal(verified.ok, false);
    assert.deepEqual(
      verified.leftBehind.map((l: { table: string }) => l.table),
      ["basejump.account_user", "basejump.accounts", "basejump.invitations"],
    );
  } finally {
    assert.equal((await call(t, "PATCH", "/config", { schemas: null })).status, 200);
  }
});

test("after a switch every account is there, no project is orphaned, order numbers go on, and the fenced old active refuses writes to the accounts", async () => {
  await appWrite("primary", newOrder);
  const switched = await call(t, "POST", "/force-switch", {});
  assert.equal(switched.status, 200, JSON.stringify(switched.body));
  await assertSame("after the switch");
  const [orphans] = await pair.secondary.admin`
    select count(*)::int as n from public.projects p where not exists (select 1 from basejump.accounts a where a.id = p.account_id)`;
  assert.equal(orphans!.n, 0);
  // The first order on the new active takes a number the old active never handed out.
  assert.equal(await appWrite("secondary", newOrder), null);
  const refused = await appWrite("primary", "update basejump.accounts set name = 'stale write'");
  assert.equal(refused?.code, "SPWFN", JSON.stringify(refused));
  assert.equal(
    (
      await appWrite(
        "primary",
        "insert into basejump.invitations (account_id, token, invited_by_user_id) select id, 'x', primary_owner_user_id from basejump.accounts limit 1",
      )
    )?.code,
    "SPWFN",
  );
  // The app keeps writing on the new active, and the next backup carries it back.
  assert.equal(
    await appWrite("secondary", "insert into basejump.accounts (primary_owner_user_id, name) select id, 'after' from auth.users limit 1"),
    null,
  );
  assert.equal((await forceBackup(t, "auto")).kind, "incremental");
  await assertSame("after the first backup from the new active");
});

test("a schemas list that leaves out an untied app schema: its tables are fenced on the old active, and backup, switch and /verify name them until a PATCH of the list leaves them out", async () => {
  // The list an older default or a hand edit leaves: stored, never patched through /config.
  for (const p of [pair.primary, pair.secondary])
    await p.admin`update spillway.settings set data = jsonb_set(data, '{schemas}', '["public", "basejump"]'), version = version + 1 where id`;
  try {
    await applyToBoth(pair, "create schema billing; create table billing.invoices (id int primary key, amount int)");
    // No event trigger here (Spillway's role may not make one, as on Supabase): the tick fences it.
    assert.equal((await t.request("/spillway/tick", { method: "POST" })).status, 200);
    // The old active (fenced by the switch before) refuses writes to a table outside the list.
    assert.equal((await appWrite("primary", "insert into billing.invoices values (1, 10)"))?.code, "SPWFN");
    assert.equal(await appWrite("secondary", "insert into billing.invoices values (1, 10)"), null);

    const backup = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(backup.status, 409, JSON.stringify(backup.body));
    assert.equal(backup.body.error.code, "TABLES_LEFT_BEHIND");
    assert.match(backup.body.error.message, /billing\.invoices \(schema billing is not in the setting schemas/);
    assert.match(backup.body.error.message, /PATCH \/config \{"schemas": \["public","basejump"\]\} again/);
    const verified = (await call(t, "POST", "/verify")).body.verify;
    assert.equal(verified.ok, false);
    assert.deepEqual(
      verified.leftBehind.map((l: { table: string }) => l.table),
      ["billing.invoices"],
    );
    const switched = await call(t, "POST", "/force-switch", {});
    assert.equal(switched.status, 409, JSON.stringify(switched.body));
    assert.equal(switched.body.error.code, "TABLES_LEFT_BEHIND");

    // The operator stores the list through /config: billing stays behind on purpose.
    assert.equal((await call(t, "PATCH", "/config", { schemas: ["public", "basejump"] })).status, 200);
    assert.equal((await forceBackup(t, "auto")).status, "succeeded");
    assert.equal((await call(t, "POST", "/verify")).body.verify.ok, true);
  } finally {
    assert.equal((await call(t, "PATCH", "/config", { schemas: null })).status, 200);
    await applyToBoth(pair, "drop schema billing cascade");
  }
  assert.equal(await appWrite("secondary", newOrder), null);
  assert.equal((await forceBackup(t, "auto")).status, "succeeded");
  await assertSame("after billing is gone");
});

test("a carried sequence the role may not read is a 409 naming it, never skipped", async () => {
  // Owned by another role: Spillway's role may call nextval (usage) but not read it.
  const statements = `
    create role ticket_owner;
    create sequence app_private.ticket_no;
    alter sequence app_private.ticket_no owner to ticket_owner;
    grant usage on sequence app_private.ticket_no to postgres;`;
  await pair.primary.admin.unsafe(statements);
  await pair.secondary.admin.unsafe(statements);
  await applyToBoth(pair, "alter table public.orders add column ticket bigint default nextval('app_private.ticket_no')");
  assert.equal(await appWrite("secondary", newOrder), null);
  const r = await call(t, "POST", "/force-backup", { mode: "auto" });
  assert.equal(r.status, 409, JSON.stringify(r.body));
  assert.equal(r.body.error.code, "SEQUENCE_UNREADABLE");
  assert.match(r.body.error.message, /app_private\.ticket_no/);
});
