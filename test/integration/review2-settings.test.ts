// Settings convergence under the lease: sequences in which the standby's Auth copy record
// outlives a window in which the active did not capture Auth's changes. With a STAND-IN for
// Supabase Auth (test/support/gotrue.ts).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { call, forceBackup, patchWithOneDown, type TestApp, testApp } from "../support/app.ts";
import { authFingerprint, installAuth, signUp } from "../support/gotrue.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";

describe("review: auth turned off and on again while the standby could not be reached", () => {
  let pair: TestPair;
  let t: TestApp;
  before(async () => {
    pair = await startTestPair();
    await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
    t = await testApp(pair);
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  test("the user who signed up in the off window reaches the standby", async () => {
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await forceBackup(t, "full")).kind, "full");
    await patchWithOneDown(pair, "secondary", { auth: false });
    // Not captured: the active's trigger follows its own settings (auth off).
    await signUp(pair.primary, "bob@example.com", "pw-bob");
    await patchWithOneDown(pair, "secondary", { auth: true });
    await signUp(pair.primary, "cy@example.com", "pw-cy");
    const kind = (await forceBackup(t, "auto")).kind;
    assert.deepEqual(
      await authFingerprint(pair.secondary.admin),
      await authFingerprint(pair.primary.admin),
      `the standby's Auth tables equal the active's (the backup was ${kind})`,
    );
  });
});

describe("review: two settings changes, each made while the other project could not be reached", () => {
  let pair: TestPair;
  let t: TestApp;
  before(async () => {
    pair = await startTestPair();
    await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
    t = await testApp(pair);
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  test("the user who signed up on the active reaches the standby", async () => {
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await forceBackup(t, "full")).kind, "full");
    const switched = await call(t, "POST", "/force-switch", { to: "secondary" });
    assert.equal(switched.status, 200, JSON.stringify(switched.body));
    // The active (secondary) alone takes `auth: false`, as version 2: it stops capturing Auth.
    await patchWithOneDown(pair, "primary", { auth: false });
    await signUp(pair.secondary, "bob@example.com", "pw-bob");
    // The standby (primary) alone takes another change, also as version 2, with `auth: true`.
    await patchWithOneDown(pair, "secondary", { backupThreshold: 0.8 });
    const versions = [
      await pair.primary.admin`select version, data->>'auth' as auth from spillway.settings`,
      await pair.secondary.admin`select version, data->>'auth' as auth from spillway.settings`,
    ];
    const kind = (await forceBackup(t, "auto")).kind;
    assert.deepEqual(
      await authFingerprint(pair.primary.admin),
      await authFingerprint(pair.secondary.admin),
      `the standby's Auth tables equal the active's (the backup was ${kind}; settings ${JSON.stringify(versions)})`,
    );
  });
});
