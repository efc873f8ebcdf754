// The client's session handover (keepSession): a handover that outlasts its time limit is
// reported lost and must not later replace whatever the new active's client holds by then.
// With STAND-INS for Supabase Auth (test/support/gotrue.ts, gotrue-api.ts) and PostgREST
// (test/support/postgrest.ts), which cannot run here.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { getActiveClient, onSwitch, type SwitchEvent } from "../../client/index.ts";
import { call, type TestApp, testApp } from "../support/app.ts";
import { APP_SCHEMA, installAuth, signUp } from "../support/gotrue.ts";
import { startAuthApi } from "../support/gotrue-api.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";

const SECRET = "a-jwt-secret-both-projects-share-0123456789";
// The answer to one refresh comes back this late (a slow network, a busy gateway): longer
// than the handover's limit (the client's timeoutMs).
const SLOW_ANSWER_MS = 3_000;
const TIMEOUT_MS = 1_000;

describe("review: keepSession, a handover that outlasts timeoutMs", () => {
  let pair: TestPair;
  let t: TestApp;
  const fronts: Array<{ close(): Promise<void> }> = [];
  const urls = {} as Record<"primary" | "secondary", string>;
  const anonKeys = {} as Record<"primary" | "secondary", string>;
  let slowRefresh = false;
  let refreshSent: () => void = () => undefined;
  before(async () => {
    pair = await startTestPair();
    await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
    await applyToBoth(pair, APP_SCHEMA);
    t = await testApp(pair);
    for (const name of ["primary", "secondary"] as const) {
      const data = await startDataApi(pair.urls[name], SECRET);
      anonKeys[name] = data.anonKey;
      const auth = await startAuthApi(pair[name], { jwtSecret: SECRET, next: data.url });
      fronts.push(auth, data);
      urls[name] = auth.url;
    }
  });
  after(async () => {
    for (const f of fronts) await f.close();
    await t?.close();
    await pair?.destroy();
  });

  test("does not replace the session of the user who signed in on the new active meanwhile", async () => {
    // The refresh reaches the project and takes effect at once; only its answer is late.
    const slowFetch: typeof fetch = async (input, init) => {
      const request = new Request(input, init);
      const refresh = slowRefresh && request.url.includes("grant_type=refresh_token");
      const response = await fetch(request);
      if (!refresh) return response;
      slowRefresh = false;
      refreshSent();
      await new Promise((done) => setTimeout(done, SLOW_ANSWER_MS));
      return response;
    };
    const options = {
      projects: {
        primary: { url: urls.primary, anonKey: anonKeys.primary },
        secondary: { url: urls.secondary, anonKey: anonKeys.secondary },
      },
      cacheTtlMs: 0,
      timeoutMs: TIMEOUT_MS,
      keepSession: true,
      fetch: slowFetch,
      clientOptions: { auth: { autoRefreshToken: false } },
    };
    const events: SwitchEvent[] = [];
    const off = onSwitch((e) => events.push(e));
    try {
      await signUp(pair.primary, "ana@example.com", "pw-ana");
      const bob = await signUp(pair.primary, "bob@example.com", "pw-bob");
      assert.equal((await call(t, "PATCH", "/config", { authSessions: true })).status, 200);
      const onPrimary = await getActiveClient(options);
      assert.equal((await onPrimary.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" })).error, null);
      assert.equal((await call(t, "POST", "/force-backup", { mode: "auto" })).status, 200);

      slowRefresh = true;
      const sent = new Promise<void>((done) => (refreshSent = done));
      const refreshing = onPrimary.auth.refreshSession();
      await sent;
      assert.equal((await call(t, "POST", "/force-switch", { to: "secondary" })).status, 200);
      // The handover waits for Ana's refresh, gives up after timeoutMs and says so.
      const onSecondary = await getActiveClient(options);
      assert.deepEqual(
        events.map((e) => e.session),
        ["lost"],
      );
      // The app asks for a sign-in: Bob signs in on this device.
      assert.equal((await onSecondary.auth.signInWithPassword({ email: "bob@example.com", password: "pw-bob" })).error, null);
      await refreshing;
      await new Promise((done) => setTimeout(done, 1_000));
      assert.equal((await onSecondary.auth.getUser()).data.user?.id, bob, "the new active's client is still signed in as Bob");
    } finally {
      off();
    }
  });
});
