// Auth continuity under an operator's and GoTrue's changes between runs, with the STAND-IN
// for Supabase Auth (test/support/gotrue.ts): GoTrue cannot run here.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { runBackup } from "../../functions/backup.ts";
import { patchSettings } from "../../functions/settings.ts";
import { switchOver } from "../../functions/switchover.ts";
import { call, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { APP_SCHEMA, authFingerprint, installAuth, signUp } from "../support/gotrue.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

// GoTrue's own migration that recreates a table (rename, create, copy, drop), run on both projects.
const RECREATE_IDENTITIES = `
set role supabase_auth_admin;
alter table auth.identities rename to identities_old;
create table auth.identities (like auth.identities_old including all);
alter table auth.identities add foreign key (user_id) references auth.users (id) on delete cascade;
insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at, id)
  select provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at, id from auth.identities_old;
drop table auth.identities_old;
reset role;
grant select, insert, update, delete, truncate, references, trigger on auth.identities to postgres;
`;

describe("Auth's changes between runs", () => {
  let pair: TestPair;
  let t: TestApp;
  before(async () => {
    pair = await startTestPair();
    await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
    await applyToBoth(pair, APP_SCHEMA);
    t = await testApp(pair);
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  test("auth turned off and on again between two backups: a user who signed up meanwhile reaches the standby", async () => {
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    assert.equal((await call(t, "POST", "/force-backup", { mode: "full" })).status, 200);
    assert.equal((await call(t, "PATCH", "/config", { auth: false })).status, 200);
    await signUp(pair.primary, "ben@example.com", "pw-ben");
    assert.equal((await call(t, "PATCH", "/config", { auth: true })).status, 200);
    const r = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await authFingerprint(pair.secondary.admin), await authFingerprint(pair.primary.admin), `run ${r.body.run.kind}`);
  });

  test("auth turned off and on again between two calls of a staged full backup: a user who signed up meanwhile reaches the standby", async () => {
    const ctx = { projects: t.projects, events: t.events };
    await signUp(pair.primary, "dan@example.com", "pw-dan");
    const first = await runBackup(ctx, { mode: "full", verify: false, staged: true, budgetMs: 0 });
    assert.equal(first.status, "running", "the copy is staged over several calls");
    // No call sees the setting off: Auth's stage holds the same tables before and after.
    assert.equal((await call(t, "PATCH", "/config", { auth: false })).status, 200);
    await signUp(pair.primary, "eve@example.com", "pw-eve");
    assert.equal((await call(t, "PATCH", "/config", { auth: true })).status, 200);
    let calls = 1;
    while ((await runBackup(ctx, { mode: "full", verify: false, staged: true, budgetMs: 0 })).status !== "succeeded")
      assert.ok(++calls < 20, "the staged backup never published");
    assert.deepEqual(await authFingerprint(pair.secondary.admin), await authFingerprint(pair.primary.admin));
    await signUp(pair.primary, "fay@example.com", "pw-fay");
    const r = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(r.body.run?.kind, "incremental", JSON.stringify(r.body));
    assert.deepEqual(await authFingerprint(pair.secondary.admin), await authFingerprint(pair.primary.admin));
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  });

  test("GoTrue recreates a carried table between two backups: an identity made meanwhile reaches the standby", async () => {
    assert.equal((await call(t, "POST", "/force-backup", { mode: "full" })).status, 200);
    await pair.primary.admin.unsafe(RECREATE_IDENTITIES);
    await pair.secondary.admin.unsafe(RECREATE_IDENTITIES);
    await signUp(pair.primary, "cat@example.com", "pw-cat");
    const r = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await authFingerprint(pair.secondary.admin), await authFingerprint(pair.primary.admin), `run ${r.body.run.kind}`);
  });

  test("auth turned off and on again once a switch has published: a user who signed up on the new active meanwhile reaches the old one", async () => {
    await switchOver(
      {
        projects: t.projects,
        events: t.events,
        hooks: {
          async step(name) {
            if (name !== "published") return;
            await patchSettings(t.projects, { auth: false });
            await signUp(pair.secondary, "gus@example.com", "pw-gus");
            await patchSettings(t.projects, { auth: true });
          },
        },
      },
      { to: "secondary", force: false },
    );
    const r = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await authFingerprint(pair.primary.admin), await authFingerprint(pair.secondary.admin), `run ${r.body.run.kind}`);
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });
});
