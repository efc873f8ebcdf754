import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type TestApp, testApp } from "../support/app.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, `create table public.notes (id bigint generated always as identity primary key, body text not null)`);
  // What Supabase does to a free project past its quota: the database itself turns read-only.
  await pair.primary.admin`alter database postgres set default_transaction_read_only = on`;
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function api(method: string, path: string, body?: unknown): Promise<any> {
  const res = await t.request(`/spillway${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = JSON.parse(await res.text());
  assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function primarySize(): Promise<number> {
  const [row] = await pair.primary.admin`select pg_database_size('postgres')::int8 as b`;
  return Number(row!.b);
}

// Sets the primary's quota so that its usage is exactly `usage` now.
async function usageAt(usage: number): Promise<void> {
  await api("PATCH", "/config", { quotaBytes: { primary: Math.floor((await primarySize()) / usage) }, confirm: true });
}

async function grow(rows: number): Promise<void> {
  await pair.primary.admin.begin("read write", async (tx) => {
    await tx`insert into public.notes (body) select repeat(md5(g::text), 32) from generate_series(1, ${rows}) g`;
  });
}

describe("the policy driven by ticks, on a primary Supabase made read-only", () => {
  test("a backup at 85 % and at every tick after it, one switch at 90 %, no flapping while usage hovers, events in order", async () => {
    const [ro] = await pair.primary.admin`select 1 from pg_db_role_setting where setconfig @> array['default_transaction_read_only=on']`;
    assert.ok(ro, "the primary database is read-only for new sessions");
    await api("PATCH", "/config", { quotaBytes: { secondary: 1024 * 1024 * 1024 } });
    await usageAt(0.8);
    const actions: string[] = [];
    const tick = async () => {
      const r = await api("POST", "/tick");
      assert.equal(r.error, undefined, JSON.stringify(r));
      actions.push(`${r.action}:${r.phase}`);
      return r;
    };
    await tick();

    // Real growth carries the primary across the backup threshold.
    const quota = Math.floor((await primarySize()) / 0.8);
    while ((await primarySize()) / quota < 0.855) await grow(40);
    assert.ok((await primarySize()) / quota < 0.9, "the growth stepped over the backup band");
    const backup = await tick();
    assert.equal(backup.action, "backup", JSON.stringify(backup));
    assert.equal(backup.run.status, "succeeded");

    for (const u of [0.849, 0.853, 0.846, 0.852, 0.848]) {
      await usageAt(u);
      await tick();
    }
    await usageAt(0.905);
    const sw = await tick();
    assert.equal(sw.action, "switch");
    assert.deepEqual([sw.switch.from, sw.switch.to, sw.switch.epoch], ["primary", "secondary", 2]);
    for (let i = 0; i < 3; i++) await tick();

    assert.deepEqual(actions, [
      "none:normal",
      "backup:backup",
      // The standby follows the active at every tick of the backup phase.
      "backup:backup",
      "backup:backup",
      "backup:backup",
      "backup:backup",
      "backup:backup",
      "switch:critical",
      "none:normal",
      "none:normal",
      "none:normal",
    ]);
    const status = await api("GET", "/status");
    assert.equal(status.active, "secondary");
    assert.equal(status.projects.primary.readOnly, true);
    assert.equal(status.projects.primary.fenced, true);

    const events = (await api("GET", "/logs?limit=200")).events
      .reverse()
      .map((e: any) => e.kind)
      .filter((k: string) => /^(policy\.phase|backup\.(started|succeeded|following)|switch\.(started|fenced|completed))$/.test(k));
    assert.deepEqual(events, [
      "policy.phase",
      "backup.started",
      "backup.succeeded",
      // The five ticks that follow it are told in one summary, not a pair each.
      "backup.following",
      "policy.phase",
      "switch.started",
      "backup.started",
      "backup.succeeded",
      "switch.fenced",
      "backup.started",
      "backup.succeeded",
      "switch.completed",
    ]);
    const [notes] = await pair.secondary.admin`select count(*)::int as n from public.notes`;
    const [source] = await pair.primary.admin`select count(*)::int as n from public.notes`;
    assert.equal(notes!.n, source!.n);
  });

  test("ticks that overlap do nothing twice", async () => {
    const results = await Promise.all([api("POST", "/tick"), api("POST", "/tick"), api("POST", "/tick")]);
    const busy = results.filter((r) => r.action === "busy");
    assert.ok(busy.length >= 1, JSON.stringify(results.map((r) => r.action)));
    for (const b of busy) assert.match(b.reason, /holds the lease/);
  });
});
