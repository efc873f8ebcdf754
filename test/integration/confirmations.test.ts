import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { measure, replicatedBytes } from "../../functions/usage.ts";
import { call, forceBackup, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { loadFixture } from "../support/fixture.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  await applyToBoth(pair, "create schema shop; create table shop.items (id int primary key, name text)");
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

const settings = async () => (await call(t, "GET", "/config")).body.settings;

describe("settings that would leave data behind or act at once", () => {
  test("a schema that does not exist on the active is a 400 naming the field; nothing is stored", async () => {
    const r = await call(t, "PATCH", "/config", { schemas: ["public", "no_such_schema"] });
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.code, "INVALID_CONFIG");
    assert.match(r.body.error.details.schemas, /do not exist on the active project \(primary\): no_such_schema/);
    assert.equal((await settings()).schemas, null);
  });

  test("dropping a schema that holds carried tables needs confirm: true, and the event records what was confirmed", async () => {
    assert.equal((await call(t, "PATCH", "/config", { schemas: ["public", "shop"] })).status, 200);
    const refused = await call(t, "PATCH", "/config", { schemas: ["public"] });
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, "CONFIRM_REQUIRED");
    assert.match(refused.body.error.message, /shop would no longer be carried; 1 table\(s\) there would stay behind/);
    assert.deepEqual((await settings()).schemas, ["public", "shop"]);
    const badConfirm = await call(t, "PATCH", "/config", { schemas: ["public"], confirm: "yes" });
    assert.equal(badConfirm.status, 400);
    assert.ok(badConfirm.body.error.details.confirm);
    const confirmed = await call(t, "PATCH", "/config", { schemas: ["public"], confirm: true });
    assert.equal(confirmed.status, 200, JSON.stringify(confirmed.body));
    assert.deepEqual(confirmed.body.settings.schemas, ["public"]);
    const { events } = (await call(t, "GET", "/logs?limit=5")).body;
    const changed = events.find((e: any) => e.kind === "config.changed");
    assert.equal(changed.level, "warn");
    assert.match(changed.data.confirmed[0], /shop would no longer be carried/);
    assert.deepEqual(changed.data.patch, { schemas: ["public"] });
  });

  test("a quota below the used size, or thresholds that switch at the next tick, need confirm: true", async () => {
    const used = (await measure(t.projects.primary)).usedBytes;
    const tiny = await call(t, "PATCH", "/config", { quotaBytes: { primary: 100 } });
    assert.equal(tiny.status, 409, JSON.stringify(tiny.body));
    assert.match(tiny.body.error.message, /quotaBytes\.primary \(100 bytes\) is below what primary uses now/);
    assert.match(tiny.body.error.message, /the next tick switches/);
    // At 80 % of its quota: a switch threshold of 0.75 would switch at the next tick.
    assert.equal((await call(t, "PATCH", "/config", { quotaBytes: { primary: Math.floor(used / 0.8) } })).status, 200);
    const low = await call(t, "PATCH", "/config", { backupThreshold: 0.5, switchThreshold: 0.75 });
    assert.equal(low.status, 409, JSON.stringify(low.body));
    assert.match(low.body.error.message, /at or over the switch threshold of 75\.0 %: the next tick switches/);
    assert.equal((await settings()).switchThreshold, 0.9);
    assert.equal((await call(t, "PATCH", "/config", { backupThreshold: 0.5, switchThreshold: 0.75, confirm: true })).status, 200);
    assert.equal(
      (await call(t, "PATCH", "/config", { backupThreshold: 0.85, switchThreshold: 0.9, quotaBytes: { primary: 524288000 } })).status,
      200,
    );
  });

  test("backup threshold at or over the switch threshold is a 400 naming both fields", async () => {
    const r = await call(t, "PATCH", "/config", { backupThreshold: 0.95 });
    assert.equal(r.status, 400);
    assert.deepEqual(Object.keys(r.body.error.details).sort(), ["backupThreshold", "switchThreshold"]);
  });
});

describe("force backup checks the standby's room", () => {
  test("a backup that would put the standby over its switch threshold is a 409 naming the figures, unless force: true", async () => {
    const standbyUsed = (await measure(t.projects.secondary)).usedBytes;
    const growth = (await replicatedBytes(t.projects.primary, ["public"])) - (await replicatedBytes(t.projects.secondary, ["public"]));
    assert.ok(growth > 0);
    // Now at most 90 %; with half of the active's tables, over it.
    const quota = Math.floor((standbyUsed + growth / 2) / 0.9);
    assert.equal((await call(t, "PATCH", "/config", { quotaBytes: { secondary: quota } })).status, 200);
    const refused = await call(t, "POST", "/force-backup", { mode: "full" });
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, "TARGET_UNFIT");
    assert.match(
      refused.body.error.message,
      new RegExp(
        `would put secondary at \\d+\\.\\d % of its quota \\(\\d+ bytes used now \\+ \\d+ bytes more of primary's tables, quota ${quota} bytes\\)`,
      ),
    );
    assert.ok(refused.body.error.details.usageAfterBackup >= 0.9);
    const [runs] = await pair.secondary.admin`select count(*)::int as n from spillway.runs`;
    assert.equal(runs!.n, 0, "nothing ran");

    const run = await forceBackup(t, "full", { force: true });
    assert.equal(run.status, "succeeded");
    assert.equal((await call(t, "PATCH", "/config", { quotaBytes: { secondary: 524288000 } })).status, 200);
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    await pair.primary.admin`insert into public.accounts (owner, balance) values ('after the backup', 1)`;
  });
});
