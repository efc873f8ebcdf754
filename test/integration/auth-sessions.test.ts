// Sessions across a switch where both projects share one JWT secret (setting authSessions),
// with STAND-INS for Supabase Auth: its tables and writes (test/support/gotrue.ts) and the
// part of its HTTP API supabase-js calls (test/support/gotrue-api.ts), in front of the
// PostgREST stand-in (test/support/postgrest.ts). GoTrue and PostgREST cannot run here.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { SupabaseClient } from "@supabase/supabase-js";
import { createSpillwayClient, getActiveClient, onSwitch, type SwitchEvent } from "../../client/index.ts";
import { runBackup } from "../../functions/backup.ts";
import { call, forceBackup, stageUntilPublished } from "../support/app.ts";
import { startAuthApp } from "../support/auth-app.ts";
import { fingerprint } from "../support/compare.ts";
import { authFingerprint, passwordSignIn, refreshToken, signOut, signUp } from "../support/gotrue.ts";
import type { TestPair } from "../support/postgres.ts";

const ALL_AUTH = ["users", "identities", "mfa_factors", "sessions", "refresh_tokens", "mfa_amr_claims"];
const SESSION_TABLES = ["sessions", "refresh_tokens", "mfa_amr_claims"];
const SHARED_SECRET = "a-jwt-secret-both-projects-share-0123456789";

type Name = "primary" | "secondary";

async function setUp(secrets: Record<Name, string>) {
  const { pair, t, urls, anonKeys, close } = await startAuthApp(secrets);
  const options = {
    projects: {
      primary: { url: urls.primary, anonKey: anonKeys.primary },
      secondary: { url: urls.secondary, anonKey: anonKeys.secondary },
    },
    cacheTtlMs: 0,
    keepSession: true,
    clientOptions: { auth: { autoRefreshToken: false } },
  };
  return { pair, t, options, close };
}

async function sessionCounts(pair: TestPair, name: Name): Promise<Record<string, number>> {
  const [row] = await pair[name].admin`
    select (select count(*)::int from auth.sessions) as sessions, (select count(*)::int from auth.refresh_tokens) as tokens,
           (select count(*)::int from auth.mfa_amr_claims) as claims`;
  return { ...row } as Record<string, number>;
}

async function assertAuthSame(pair: TestPair, message: string): Promise<void> {
  assert.deepEqual(await authFingerprint(pair.secondary.admin, ALL_AUTH), await authFingerprint(pair.primary.admin, ALL_AUTH), message);
}

describe("authSessions: users stay signed in across a switch", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  const switches: SwitchEvent[] = [];
  let off: () => void;
  let app: SupabaseClient;
  let drop: SupabaseClient;
  let ana = "";
  let anaToken = "";
  before(async () => {
    env = await setUp({ primary: SHARED_SECRET, secondary: SHARED_SECRET });
    off = onSwitch((e) => switches.push(e));
  });
  after(async () => {
    off?.();
    await env?.close();
  });

  test("turning authSessions on makes the next backup full; the standby then holds the active's sessions", async () => {
    const { pair, t } = env;
    ana = await signUp(pair.primary, "ana@example.com", "pw-ana", { username: "ana" });
    await signUp(pair.primary, "dan@example.com", "pw-dan", { username: "dan" });
    assert.equal((await forceBackup(t, "full")).kind, "full");
    assert.deepEqual(await sessionCounts(pair, "secondary"), { sessions: 0, tokens: 0, claims: 0 });

    const bad = await call(t, "PATCH", "/config", { authSessions: "yes" });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.details.authSessions, "must be true or false");
    const on = await call(t, "PATCH", "/config", { authSessions: true });
    assert.equal(on.status, 200, JSON.stringify(on.body));
    assert.equal(on.body.settings.authSessions, true);
    assert.equal((await call(t, "GET", "/config")).body.settings.authSessions, true);

    // The app signs ana in through the client, on the active; dan through the drop-in client.
    app = await getActiveClient(env.options);
    const signedIn = await app.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" });
    assert.equal(signedIn.error, null, JSON.stringify(signedIn.error));
    assert.equal(signedIn.data.user?.id, ana);
    drop = createSpillwayClient(env.options);
    assert.equal((await drop.auth.signInWithPassword({ email: "dan@example.com", password: "pw-dan" })).error, null);
    assert.deepEqual(await sessionCounts(pair, "primary"), { sessions: 2, tokens: 2, claims: 2 });

    const next = await forceBackup(t, "auto");
    assert.equal(next.kind, "full", next.details?.reason);
    await assertAuthSame(pair, "after the full backup");
    assert.deepEqual(await sessionCounts(pair, "secondary"), { sessions: 2, tokens: 2, claims: 2 });
  });

  test("an incremental backup carries a refresh and a sign-out; the switch carries a sign-in made just before it", async () => {
    const { pair, t } = env;
    const bob = await signUp(pair.primary, "bob@example.com", "pw-bob", { username: "bob" });
    const bobs = (await passwordSignIn(pair.primary, "bob@example.com", "pw-bob"))!;
    assert.equal((await forceBackup(t, "incremental")).kind, "incremental");
    assert.equal(await pair.secondary.admin`select 1 from auth.sessions where id = ${bobs.sessionId}`.then((r) => r.length), 1);

    // Ana's token is refreshed on the active; bob signs out there.
    const refreshed = await app.auth.refreshSession();
    assert.equal(refreshed.error, null, JSON.stringify(refreshed.error));
    anaToken = refreshed.data.session!.refresh_token;
    await signOut(pair.primary, bobs.sessionId);
    const inc = await forceBackup(t, "auto");
    assert.equal(inc.kind, "incremental", inc.details?.reason);
    await assertAuthSame(pair, "after the incremental backup");

    // Carol signs in after the last backup: only the switch's final catch-up carries her session.
    await signUp(pair.primary, "carol@example.com", "pw-carol");
    const carols = (await passwordSignIn(pair.primary, "carol@example.com", "pw-carol"))!;
    const switched = await call(t, "POST", "/force-switch", { to: "secondary" });
    assert.equal(switched.status, 200, JSON.stringify(switched.body));
    await assertAuthSame(pair, "after the switch");
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));

    // On the new active: bob's revoked session is gone, carol's refresh token works.
    assert.equal(await pair.secondary.admin`select 1 from auth.sessions where user_id = ${bob}`.then((r) => r.length), 0);
    assert.equal(await refreshToken(pair.secondary, bobs.refreshToken), null, "bob signed out before the switch");
    assert.equal((await refreshToken(pair.secondary, carols.refreshToken))?.sessionId, carols.sessionId);
    // The old active is fenced: a token refresh there is refused.
    await assert.rejects(refreshToken(pair.primary, anaToken), { code: "SPWFN" });
  });

  test("after the switch the app's client is signed in on the new active as the same user, and refreshes there", async () => {
    const { pair } = env;
    const now = await getActiveClient(env.options);
    assert.notEqual(now, app, "the client is the new active's");
    assert.deepEqual(
      switches.map((e) => [e.from, e.to, e.session]),
      [["primary", "secondary", "kept"]],
    );
    const user = await now.auth.getUser();
    assert.equal(user.error, null, JSON.stringify(user.error));
    assert.equal(user.data.user?.id, ana);

    // The carried refresh token is refreshed against the new active's tables.
    const refreshed = await now.auth.refreshSession();
    assert.equal(refreshed.error, null, JSON.stringify(refreshed.error));
    assert.equal(refreshed.data.user?.id, ana);
    const [row] = await pair.secondary.admin`
      select r.parent, r.id > (select max(id) from auth.refresh_tokens where token = ${anaToken}) as newer
      from auth.refresh_tokens r where r.token = ${refreshed.data.session!.refresh_token}`;
    assert.deepEqual({ ...row }, { parent: anaToken, newer: true });

    // The drop-in client's one session works on the new active too.
    assert.equal((await drop.auth.getUser()).data.user?.email, "dan@example.com");
    assert.equal((await drop.auth.refreshSession()).error, null);

    // The app keeps writing on the new active as ana: the notes' RLS policy (owner =
    // auth.uid()) takes her rows and refuses one in dan's name.
    assert.equal((await now.from("notes").insert({ owner: ana, body: "after the switch" })).error, null);
    const [dan] = await pair.secondary.admin`select id from auth.users where email = 'dan@example.com'`;
    const asDan = await now.from("notes").insert({ owner: dan!.id, body: "not ana's to write" });
    assert.equal(asDan.error?.code, "42501", JSON.stringify(asDan));
    const mine = await now.from("notes").select("owner,body");
    assert.deepEqual(mine.data, [{ owner: ana, body: "after the switch" }]);
    // The next backup makes the projects equal again.
    assert.equal((await forceBackup(env.t, "auto")).kind, "incremental");
    await assertAuthSame(pair, "after a backup the other way");
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
    assert.equal((await now.from("notes").insert({ owner: ana, body: "and on" })).error, null);

    // A full backup the other way through the fdw link carries the sessions too.
    assert.equal((await call(env.t, "PATCH", "/config", { strategy: "fdw" })).status, 200);
    try {
      assert.equal((await now.auth.refreshSession()).error, null);
      assert.equal((await forceBackup(env.t, "full")).kind, "full");
      await assertAuthSame(pair, "after an fdw full backup");
      const verified = await call(env.t, "POST", "/verify");
      assert.equal(verified.body.verify.ok, true, JSON.stringify(verified.body));
      assert.ok(verified.body.verify.tables.some((x: { table: string }) => x.table === "auth.refresh_tokens"));
    } finally {
      await call(env.t, "PATCH", "/config", { strategy: "copy" });
    }
  });

  test("turning authSessions off makes the next backup full and empties the standby's sessions again", async () => {
    const { pair, t } = env;
    assert.equal((await call(t, "PATCH", "/config", { authSessions: false })).status, 200);
    const r = await forceBackup(t, "auto");
    assert.equal(r.kind, "full", r.details?.reason);
    assert.deepEqual(await sessionCounts(pair, "primary"), { sessions: 0, tokens: 0, claims: 0 });
    assert.deepEqual(await authFingerprint(pair.primary.admin), await authFingerprint(pair.secondary.admin));
    // The capture trigger stays on the session tables, but captures nothing of them now.
    await passwordSignIn(pair.secondary, "ana@example.com", "pw-ana");
    const [captured] = await pair.secondary
      .admin`select count(*)::int as n from spillway.auth_changes where tbl = any(${SESSION_TABLES}::text[])`;
    assert.equal(captured!.n, 0);
  });
});

describe("authSessions: a full backup staged over several calls", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp({ primary: SHARED_SECRET, secondary: SHARED_SECRET });
  });
  after(async () => {
    await env?.close();
  });

  test("carries the sessions of its snapshot and the sign-ins, refreshes and sign-outs made while it was staged", async () => {
    const { pair, t } = env;
    assert.equal((await call(t, "PATCH", "/config", { authSessions: true })).status, 200);
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    await signUp(pair.primary, "ben@example.com", "pw-ben");
    const anas = (await passwordSignIn(pair.primary, "ana@example.com", "pw-ana"))!;
    const bens = (await passwordSignIn(pair.primary, "ben@example.com", "pw-ben"))!;
    const calls = await stageUntilPublished(t, async () => {
      await refreshToken(pair.primary, anas.refreshToken);
      await signOut(pair.primary, bens.sessionId);
      await passwordSignIn(pair.primary, "ben@example.com", "pw-ben");
    });
    assert.ok(calls > 1);
    await assertAuthSame(pair, "after the staged backup");
    assert.deepEqual(await sessionCounts(pair, "secondary"), { sessions: 2, tokens: 3, claims: 2 });
  });

  test("authSessions turned off while a full backup is staged: it publishes without the sessions, and the next backup builds on it", async () => {
    const { pair, t } = env;
    const ctx = { projects: t.projects, events: t.events };
    const first = await runBackup(ctx, { mode: "full", verify: false, staged: true, budgetMs: 0 });
    assert.equal(first.status, "running", "the copy is staged over several calls");
    assert.equal((await call(t, "PATCH", "/config", { authSessions: false })).status, 200);
    await passwordSignIn(pair.primary, "ana@example.com", "pw-ana");
    await signUp(pair.primary, "cat@example.com", "pw-cat");
    let calls = 1;
    while ((await runBackup(ctx, { mode: "full", verify: false, staged: true, budgetMs: 0 })).status !== "succeeded")
      assert.ok(++calls < 20, "the staged backup never published");
    assert.deepEqual(await authFingerprint(pair.secondary.admin), await authFingerprint(pair.primary.admin));
    assert.deepEqual(await sessionCounts(pair, "secondary"), { sessions: 0, tokens: 0, claims: 0 });
    const [left] = await pair.secondary
      .admin`select count(*)::int as n from pg_tables where schemaname = 'spillway' and tablename like 'auth_stage_%' and tablename <> 'auth_stage_changes'`;
    assert.equal(left!.n, 0, "no stage table is left behind");
    await signUp(pair.primary, "dot@example.com", "pw-dot");
    assert.equal((await forceBackup(t, "auto")).kind, "incremental");
    assert.deepEqual(await authFingerprint(pair.secondary.admin), await authFingerprint(pair.primary.admin));
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  });
});

describe("authSessions off (projects with their own JWT secrets)", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp({ primary: "the-primary-s-own-secret-0123456789", secondary: "the-secondary-s-own-secret-0123456789" });
  });
  after(async () => {
    await env?.close();
  });

  test("sessions stay behind: the standby's session tables stay empty and the user signs in again after a switch", async () => {
    const { pair, t } = env;
    const switches: SwitchEvent[] = [];
    const off = onSwitch((e) => switches.push(e));
    try {
      const ana = await signUp(pair.primary, "ana@example.com", "pw-ana");
      const app = await getActiveClient(env.options);
      assert.equal((await app.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" })).error, null);
      assert.equal((await forceBackup(t, "full")).kind, "full");
      await app.auth.refreshSession();
      assert.equal((await forceBackup(t, "incremental")).kind, "incremental");
      assert.deepEqual(await sessionCounts(pair, "secondary"), { sessions: 0, tokens: 0, claims: 0 });
      assert.equal((await call(t, "POST", "/force-switch", { to: "secondary" })).status, 200);

      const now = await getActiveClient(env.options);
      assert.deepEqual(
        switches.map((e) => e.session),
        ["lost"],
      );
      assert.equal((await now.auth.getSession()).data.session, null, "not signed in on the new active");
      const again = await now.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" });
      assert.equal(again.data.user?.id, ana, "the same user, signed in again");
    } finally {
      off();
    }
  });
});
