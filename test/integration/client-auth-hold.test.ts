// Auth requests during a switch, as the app's clients send them: refused by the fenced old
// active, they are held and sent to the new one; a 5xx with no switch is answered after
// switchWaitMs. With STAND-INS for Supabase Auth (test/support/gotrue.ts, gotrue-api.ts) and
// PostgREST (test/support/postgrest.ts), which cannot run here.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createSpillwayClient, getActiveClient } from "../../client/index.ts";
import { switchOver } from "../../functions/switchover.ts";
import { call } from "../support/app.ts";
import { startAuthApp } from "../support/auth-app.ts";
import { signUp } from "../support/gotrue.ts";

const SECRET = "a-jwt-secret-both-projects-share-0123456789";
const SWITCH_WAIT_MS = 1_500;
// Long enough for a whole switch on a busy machine: the hold must outlast fence to publish.
const SWITCH_WAIT_THROUGH_A_SWITCH_MS = 20_000;

async function setUp(switchWaitMs = SWITCH_WAIT_MS) {
  const { pair, t, urls, anonKeys, close } = await startAuthApp({ primary: SECRET, secondary: SECRET });
  // Every Auth request the app's clients send, and where.
  const sent: string[] = [];
  const recording: typeof fetch = (input, init) => {
    const request = new Request(input, init);
    if (request.url.includes("/auth/v1/")) sent.push(request.url);
    return fetch(request);
  };
  const options = {
    projects: {
      primary: { url: urls.primary, anonKey: anonKeys.primary },
      secondary: { url: urls.secondary, anonKey: anonKeys.secondary },
    },
    cacheTtlMs: 0,
    switchWaitMs,
    fetch: recording,
    clientOptions: { auth: { autoRefreshToken: false } },
  };
  return { pair, t, urls, options, sent, close };
}

describe("client: a sign-in refused by the fenced old active", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp(SWITCH_WAIT_THROUGH_A_SWITCH_MS);
  });
  after(async () => {
    await env?.close();
  });

  test("is held and sent to the new active (createSpillwayClient, without keepSession)", async () => {
    const { pair, t } = env;
    const ana = await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await call(t, "POST", "/force-backup", { mode: "full" })).status, 200);
    const app = createSpillwayClient(env.options);
    let signingIn = null as ReturnType<typeof app.auth.signInWithPassword> | null;
    await switchOver(
      {
        projects: t.projects,
        events: t.events,
        hooks: {
          step(name) {
            if (name === "fenced") signingIn = app.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" });
          },
        },
      },
      { to: "secondary", force: false },
    );
    const signedIn = await signingIn!;
    assert.equal(signedIn.error, null, "the sign-in succeeded");
    assert.equal(signedIn.data.user?.id, ana);
    const sessions = await pair.secondary.admin`select 1 from auth.sessions where user_id = ${ana}`;
    assert.equal(sessions.length, 1, "the session was made on the new active");
    assert.ok(
      env.sent.some((url) => url.startsWith(env.urls.secondary)),
      "the request went to the new active",
    );
  });
});

describe("client: an Auth 5xx while no switch is under way", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("is answered after switchWaitMs and sent nowhere else", async () => {
    const { pair } = env;
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    // The active's database refuses new sessions (a failure of the project, not the fence).
    await pair.primary.admin.unsafe(`
      create function public.refuse_sessions() returns trigger language plpgsql as $$
      begin raise exception 'disk full'; end $$;
      create trigger refuse_sessions before insert on auth.sessions for each row execute function public.refuse_sessions();`);
    const app = await getActiveClient(env.options);
    env.sent.length = 0;
    const started = Date.now();
    const { error } = await app.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" });
    const waited = Date.now() - started;
    assert.equal(error?.status, 500, "the project's own answer");
    assert.ok(waited >= SWITCH_WAIT_MS, `held while a switch could be under way (${waited} ms)`);
    assert.ok(waited < SWITCH_WAIT_MS + 3_000, `not held longer (${waited} ms)`);
    assert.deepEqual(
      env.sent.map((url) => url.startsWith(env.urls.primary)),
      [true],
      "sent once, to the active",
    );
  });
});

describe("client: keepSession with persistSession false, after a sign-out on the new active and a failback", () => {
  let env: Awaited<ReturnType<typeof setUp>>;
  before(async () => {
    env = await setUp();
  });
  after(async () => {
    await env?.close();
  });

  test("the old project's client does not come back signed in", async () => {
    const { pair, t } = env;
    const options = { ...env.options, keepSession: true, clientOptions: { auth: { autoRefreshToken: false, persistSession: false } } };
    const ana = await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await call(t, "PATCH", "/config", { authSessions: true })).status, 200);
    const onPrimary = await getActiveClient(options);
    assert.equal((await onPrimary.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" })).error, null);
    assert.equal((await call(t, "POST", "/force-backup", { mode: "auto" })).status, 200);
    assert.equal((await call(t, "POST", "/force-switch", { to: "secondary" })).status, 200);
    const onSecondary = await getActiveClient(options);
    assert.equal((await onSecondary.auth.getUser()).data.user?.id, ana, "kept across the switch");
    assert.equal((await onSecondary.auth.signOut()).error, null);
    assert.equal((await call(t, "POST", "/force-backup", { mode: "auto" })).status, 200);

    assert.equal((await call(t, "POST", "/force-switch", { to: "primary" })).status, 200);
    const back = await getActiveClient(options);
    assert.equal((await back.auth.getSession()).data.session, null, "nobody is signed in after the failback");
  });
});
