// The tick's policy and the switch judge the standby's usage after a switch by one formula:
// a tick never chooses a switch that the switch then refuses as TARGET_UNFIT.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type TestApp, testApp } from "../support/app.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, "create table public.notes (id bigint generated always as identity primary key, body text not null)");
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function api(method: string, path: string, body?: unknown): Promise<any> {
  const res = await t.request(`/spillway${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: JSON.parse(await res.text()) };
}

const size = async (name: "primary" | "secondary") =>
  Number((await pair[name].admin`select pg_database_size('postgres')::int8 as b`)[0]!.b);

test("a standby that holds data of its own, and the active's growth since the last backup, make it unfit for the tick as for the switch", async () => {
  await pair.primary.admin`insert into public.notes (body) select repeat(md5(g::text), 20) from generate_series(1, 2000) g`;
  assert.equal((await api("POST", "/force-backup", { mode: "full" })).status, 200);
  // The standby keeps data outside the replicated schemas (more than the active's growth to come).
  await pair.secondary.admin`create schema scratch`;
  await pair.secondary.admin`create table scratch.holder (b text)`;
  await pair.secondary.admin`insert into scratch.holder select repeat(md5(g::text), 20) from generate_series(1, 12000) g`;
  // The active grows after the backup.
  await pair.primary.admin`insert into public.notes (body) select repeat(md5(g::text), 20) from generate_series(1, 6000) g`;
  await pair.primary.admin`checkpoint`;
  await pair.secondary.admin`checkpoint`;
  const [activeBytes, standbyBytes] = [await size("primary"), await size("secondary")];
  assert.ok(standbyBytes > activeBytes, `standby ${standbyBytes} B, active ${activeBytes} B`);
  // The standby's quota sits between its size now and its size plus the active's growth.
  const growth = 6000 * 700;
  const secondaryQuota = Math.floor((standbyBytes + growth / 2) / 0.9);
  const primaryQuota = Math.floor(activeBytes / 0.95);
  assert.equal(
    (await api("PATCH", "/config", { quotaBytes: { primary: primaryQuota, secondary: secondaryQuota }, confirm: true })).status,
    200,
  );

  const refused = await api("POST", "/force-switch", {});
  assert.equal(refused.status, 409);
  assert.equal(refused.body.error.code, "TARGET_UNFIT");
  const usage = refused.body.error.details.usageAfterSwitch as number;
  assert.ok(usage >= 0.9, `switch says ${usage}`);

  const tick = await api("POST", "/tick");
  assert.equal(tick.status, 200);
  assert.equal(tick.body.phase, "critical");
  assert.notEqual(tick.body.action, "switch", `the tick chose: ${JSON.stringify(tick.body)}`);
  assert.equal(tick.body.action, "alert");
  assert.match(tick.body.reason, /standby would be at/);
  const [state] = await pair.primary.admin`select active, epoch::int as epoch, fenced from spillway.state`;
  assert.deepEqual({ ...state }, { active: "primary", epoch: 1, fenced: false });
});
