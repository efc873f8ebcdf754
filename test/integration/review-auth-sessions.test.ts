// Auth sessions and keepSession: sequences that could leave the two projects' sessions
// different, or a client signed in as a user who signed out, end with the same sessions on
// both. With STAND-INS for Supabase Auth (test/support/gotrue.ts, gotrue-api.ts) and
// PostgREST (test/support/postgrest.ts), which cannot run here.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { getActiveClient } from "../../client/index.ts";
import { runBackup } from "../../functions/backup.ts";
import { switchOver } from "../../functions/switchover.ts";
import { call, forceBackup, patchWithOneDown } from "../support/app.ts";
import { startAuthApp } from "../support/auth-app.ts";
import { authFingerprint, passwordSignIn, refreshToken, signOut, signUp } from "../support/gotrue.ts";
import { applyToBoth } from "../support/postgres.ts";

const ALL_AUTH = ["users", "identities", "mfa_factors", "sessions", "refresh_tokens", "mfa_amr_claims"];
const SECRET = "a-jwt-secret-both-projects-share-0123456789";

async function setUp() {
  const { pair, t, urls, anonKeys, close } = await startAuthApp({ primary: SECRET, secondary: SECRET });
  // Every request the app's clients send, with the token it carries.
  const sent: Array<{ url: string; authorization: string | null }> = [];
  const recording: typeof fetch = (input, init) => {
    const request = new Request(input, init);
    sent.push({ url: request.url, authorization: request.headers.get("Authorization") });
    return fetch(request);
  };
  const options = {
    projects: {
      primary: { url: urls.primary, anonKey: anonKeys.primary },
      secondary: { url: urls.secondary, anonKey: anonKeys.secondary },
    },
    cacheTtlMs: 0,
    keepSession: true,
    fetch: recording,
    clientOptions: { auth: { autoRefreshToken: false } },
  };
  return { pair, t, options, sent, anonKeys, close };
}

describe("review: authSessions turned on while a full backup is staged", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("the staged copy still publishes, with the sessions", async () => {
    const { pair, t } = env;
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    await passwordSignIn(pair.primary, "ana@example.com", "pw-ana");
    const ctx = { projects: t.projects, events: t.events };
    const first = await runBackup(ctx, { mode: "full", verify: false, staged: true, budgetMs: 0 });
    assert.equal(first.status, "running", "the copy is staged over several calls");
    // The operator turns the setting on while the copy is staged (Auth's stage holds no session tables).
    assert.equal((await call(t, "PATCH", "/config", { authSessions: true })).status, 200);
    await passwordSignIn(pair.primary, "ana@example.com", "pw-ana");
    const errors: string[] = [];
    let published = false;
    for (let n = 0; n < 8 && !published; n++) {
      try {
        published = (await runBackup(ctx, { mode: "full", verify: false, staged: true, budgetMs: 0 })).status === "succeeded";
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    assert.ok(published, `the staged copy never published; every call failed: ${errors.slice(0, 2).join(" | ")}`);
    assert.deepEqual(await authFingerprint(pair.secondary.admin, ALL_AUTH), await authFingerprint(pair.primary.admin, ALL_AUTH));
  });
});

describe("review: authSessions turned on while the active could not be reached", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("a sign-out on the active after the setting changed reaches the standby, and does not come back after a switch", async () => {
    const { pair, t } = env;
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await forceBackup(t, "full")).kind, "full");
    // PATCH /config while the active (primary) is unreachable: stored on the standby only,
    // under a newer version, which wins for every later run.
    await patchWithOneDown(pair, "primary", { authSessions: true });
    assert.equal((await call(t, "GET", "/config")).body.settings.authSessions, true);

    const anas = (await passwordSignIn(pair.primary, "ana@example.com", "pw-ana"))!;
    assert.equal((await forceBackup(t, "auto")).kind, "full");
    assert.equal(await pair.secondary.admin`select 1 from auth.sessions where id = ${anas.sessionId}`.then((r) => r.length), 1);
    // Ana signs out on the active; the next backups carry it.
    await signOut(pair.primary, anas.sessionId);
    assert.equal((await forceBackup(t, "auto")).kind, "incremental");
    assert.deepEqual(
      await authFingerprint(pair.secondary.admin, ALL_AUTH),
      await authFingerprint(pair.primary.admin, ALL_AUTH),
      "the standby's sessions equal the active's",
    );
    const switched = await call(t, "POST", "/force-switch", { to: "secondary" });
    assert.equal(switched.status, 200, JSON.stringify(switched.body));
    assert.equal(await refreshToken(pair.secondary, anas.refreshToken), null, "ana signed out before the switch");
  });
});

describe("review: keepSession after a sign-out on the new active and a failback", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("the old project's client does not come back signed in as the user who signed out", async () => {
    const { pair, t } = env;
    const ana = await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await call(t, "PATCH", "/config", { authSessions: true })).status, 200);
    const onPrimary = await getActiveClient(env.options);
    assert.equal((await onPrimary.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" })).error, null);
    assert.equal((await forceBackup(t, "auto")).kind, "full");
    assert.equal((await call(t, "POST", "/force-switch", { to: "secondary" })).status, 200);

    const onSecondary = await getActiveClient(env.options);
    assert.notEqual(onSecondary, onPrimary);
    assert.equal((await onSecondary.auth.getUser()).data.user?.id, ana, "kept across the switch");
    // Ana signs out on the new active; the backup the other way carries it.
    assert.equal((await onSecondary.auth.signOut()).error, null);
    assert.equal((await onSecondary.auth.getSession()).data.session, null);
    (await forceBackup(t, "auto")).kind;
    assert.equal(await pair.primary.admin`select 1 from auth.sessions where user_id = ${ana}`.then((r) => r.length), 0);

    // Failback.
    assert.equal((await call(t, "POST", "/force-switch", { to: "primary" })).status, 200);
    const back = await getActiveClient(env.options);
    const session = (await back.auth.getSession()).data.session;
    env.sent.length = 0;
    await back.from("notes").insert({ owner: ana, body: "after ana signed out" });
    const carried = env.sent.filter((s) => s.url.includes("/rest/v1/notes") && s.authorization !== `Bearer ${env.anonKeys.primary}`);
    assert.equal(session?.user.id ?? null, null, "ana signed out: nobody is signed in after the failback");
    assert.deepEqual(carried, [], "no request carries ana's token after she signed out");
  });
});

describe("review: refresh_tokens ids after an incremental run that failed part-way, and a forced switch", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("every committed batch leaves the standby's refresh_tokens sequence past the ids it holds", async () => {
    const { pair, t } = env;
    await applyToBoth(pair, "create table public.bulk (id int primary key, code text unique)");
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await call(t, "PATCH", "/config", { authSessions: true })).status, 200);
    assert.equal((await forceBackup(t, "auto")).kind, "full");
    // Sign-ins on the active, then more changes than one batch holds, then a row the
    // standby already holds under another key (the run fails in its second batch).
    for (let i = 0; i < 5; i++) await passwordSignIn(pair.primary, "ana@example.com", "pw-ana");
    await pair.primary.admin`insert into public.bulk (id, code) select g, 'b' || g from generate_series(1, 25000) g`;
    await pair.primary.admin`insert into public.bulk (id, code) values (0, 'taken')`;
    await pair.secondary.admin`insert into public.bulk (id, code) values (-1, 'taken')`;
    const failed = await call(t, "POST", "/force-backup", { mode: "incremental" });
    assert.notEqual(failed.status, 200);
    const [held] = await pair.secondary.admin`
      select (select count(*)::int from auth.refresh_tokens) as tokens, (select max(id)::int from auth.refresh_tokens) as top,
             (select last_value::int from auth.refresh_tokens_id_seq) as seq`;
    assert.equal(held!.tokens, 5, "the first batch (the sign-ins) committed");

    // The active goes down; the operator forces the switch; ana signs in on the new active.
    await pair.primary.stop();
    try {
      const forced = await call(t, "POST", "/force-switch", { to: "secondary", force: true });
      assert.equal(forced.status, 200, JSON.stringify(forced.body));
      await passwordSignIn(pair.secondary, "ana@example.com", "pw-ana");
    } finally {
      await pair.primary.restart();
    }
    assert.ok(held!.seq >= held!.top, `the sequence (${held!.seq}) is past every id the standby holds (${held!.top})`);
  });
});

describe("review: keepSession and a sign-out made while the switch holds writes", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("the sign-out is held and reaches the new active, as a Data API write is; the user is not signed in after the switch", async () => {
    const { pair, t } = env;
    const ana = await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await call(t, "PATCH", "/config", { authSessions: true })).status, 200);
    const onPrimary = await getActiveClient(env.options);
    assert.equal((await onPrimary.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" })).error, null);
    assert.equal((await forceBackup(t, "auto")).kind, "full");
    let signingOut = null as ReturnType<typeof onPrimary.auth.signOut> | null;
    await switchOver(
      {
        projects: t.projects,
        events: t.events,
        hooks: {
          step(name) {
            // Ana presses "sign out" while the old active is fenced (the switch, another
            // process, does not wait for the app).
            if (name === "fenced") signingOut = onPrimary.auth.signOut();
          },
        },
      },
      { to: "secondary", force: false },
    );
    const signOutError = signingOut ? (await signingOut).error : "not called";
    const now = await getActiveClient(env.options);
    const session = (await now.auth.getSession()).data.session;
    const live = await pair.secondary.admin`select 1 from auth.sessions where user_id = ${ana}`;
    assert.deepEqual(
      { signedIn: session?.user.id ?? null, sessionsOnNewActive: live.length },
      { signedIn: null, sessionsOnNewActive: 0 },
      `ana signed out during the switch (the sign-out answered: ${JSON.stringify(signOutError)})`,
    );
  });
});

describe("review: a settings change the standby missed (it was unreachable)", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("backups stay incremental", async () => {
    const { pair, t } = env;
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await forceBackup(t, "full")).kind, "full");
    await patchWithOneDown(pair, "secondary", { backupThreshold: 0.8 });
    // A change that leaves Auth's copy as it was: nothing asks for a full backup.
    const runs: string[] = [];
    for (const who of ["bob", "cy", "dee"]) {
      await signUp(pair.primary, `${who}@example.com`, `pw-${who}`);
      runs.push((await forceBackup(t, "auto")).kind);
    }
    assert.deepEqual(runs, ["incremental", "incremental", "incremental"]);
  });
});
