// What /status tells an operator: health with reasons to act on, the standby's headroom after
// a switch, and the standby following the active told as one summary, not a pair per tick.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { formatStatus } from "../../cli/format.ts";
import { call, forceBackup, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, "create table public.notes (id bigint generated always as identity primary key, body text not null)");
  await pair.primary.admin`insert into public.notes (body) select repeat(md5(g::text), 20) from generate_series(1, 3000) g`;
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

const ok = async (method: string, path: string, body?: unknown) => {
  const r = await call(t, method, path, body);
  assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
};

test("with no backup yet, health says a switch would be refused and what makes one", async () => {
  await ok("POST", "/tick");
  const status = await ok("GET", "/status");
  assert.equal(status.health.state, "degraded");
  assert.deepEqual(
    status.health.reasons.map((r: { code: string }) => r.code),
    ["switch_refused"],
  );
  assert.match(status.health.reasons[0].message, /no completed backup of the active; a backup \(Force backup\) makes one$/);
  assert.match(formatStatus(status), /^health: DEGRADED\n {2}- a switch to secondary would be refused/);
});

test("equal quotas: from the first tick in the backup phase, /status and the CLI say a switch buys little, on what basis, and what fixes it", async () => {
  await forceBackup(t, "full");
  const [size] = await pair.primary.admin<{ b: string }[]>`select pg_database_size('postgres')::int8 as b`;
  // Two projects on one plan, the active at 87 %.
  const quota = Math.floor(Number(size!.b) / 0.87);
  await ok("PATCH", "/config", { quotaBytes: { primary: quota, secondary: quota } });
  const tick = await ok("POST", "/tick");
  assert.equal(tick.phase, "backup");
  const status = await ok("GET", "/status");
  const a = status.afterSwitch;
  assert.equal(a.project, "secondary");
  assert.ok(a.usage >= 0.85, `after a switch the standby is at ${a.usage}`);
  assert.equal(a.headroomBytes, Math.round(0.9 * quota - a.usedBytes));
  assert.match(a.basis, /n_live_tup \/ \(n_live_tup \+ n_dead_tup\)/);
  const reason = status.health.reasons.find((r: { code: string }) => r.code === "little_headroom" || r.code === "switch_refused");
  assert.ok(reason, JSON.stringify(status.health));
  assert.match(reason.message, /a larger plan for secondary .*reclaiming bloat on primary .*moving data out of primary/);
  const text = formatStatus(status);
  assert.match(text, /^health: DEGRADED\n/);
  assert.match(text, /\nafter a switch: secondary at \d+\.\d %, [\d.]+ [KM]B (below|over) its switch threshold/);
});

test("in the backup phase the standby following the active is one summary event, not a started/finished pair per tick", async () => {
  const since = (await pair.primary.admin<{ t: Date }[]>`select now() as t`)[0]!.t;
  for (let i = 0; i < 3; i++) {
    await pair.primary.admin`insert into public.notes (body) select md5(g::text) from generate_series(1, 10) g`;
    const tick = await ok("POST", "/tick");
    assert.equal(tick.action, "backup", JSON.stringify(tick));
    assert.equal(tick.run.kind, "incremental");
  }
  const events = await pair.secondary.admin<{ kind: string; message: string }[]>`
    select kind, message from spillway.events where at >= ${since} and kind like 'backup.%' order by at`;
  assert.deepEqual(
    events.map((e) => e.kind),
    ["backup.following"],
  );
  assert.match(events[0]!.message, /^secondary follows primary: 1 incremental backup so far, 10 rows; lag \d+ s$/);
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  await pair.primary.admin`insert into public.notes (body) values ('the app keeps writing')`;
});

test("while a full backup's load holds the standby's tables, /status still answers, with the run's progress", async () => {
  // A reader on the standby: the load waits for it before it can empty the table.
  const reader = await pair.secondary.admin.reserve();
  await reader`begin`;
  await reader`lock table public.notes in access share mode`;
  const backup = call(t, "POST", "/force-backup", { mode: "full" });
  try {
    // Until the load waits for the table: from then on a reader of its size queues behind it.
    for (const until = Date.now() + 20_000; ; ) {
      const [waiting] = await pair.secondary.admin`
        select count(*)::int as n from pg_locks where relation = 'public.notes'::regclass and mode = 'AccessExclusiveLock' and not granted`;
      if (waiting!.n > 0) break;
      assert.ok(Date.now() < until, "the load never waited for the table");
      await new Promise((r) => setTimeout(r, 100));
    }
    const started = Date.now();
    const status = await ok("GET", "/status");
    assert.ok(Date.now() - started < 5_000, `/status took ${Date.now() - started} ms`);
    assert.equal(status.lastBackup.status, "running", JSON.stringify(status.lastBackup));
    assert.equal(status.lastBackup.kind, "full");
    assert.equal(typeof status.lastBackup.progress, "object");
    assert.equal(status.projects.secondary.reachable, true);
    assert.ok(status.projects.secondary.usedBytes > 0);
  } finally {
    await reader`commit`;
    reader.release();
  }
  assert.equal((await backup).status, 200);
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  await pair.primary.admin`insert into public.notes (body) values ('the app keeps writing')`;
});
