// Staged full backups: over several calls while money moves, killed inside its calls, 202
// over HTTP until published, with fdw, by ticks, past the retention guard, across a switch.
//
// Mutation it catches (run on purpose, then reverted): a call that publishes without first
// catching up the changes made since each table was staged (functions/backup/staged.ts,
// applyChanges) fails "continues over calls while money moves, and publishes one consistent
// copy" (its publish fails on a duplicate key).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { runBackup } from "../../functions/backup.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { fingerprint, sequencePositions } from "../support/compare.ts";
import { addRows, loadFixture } from "../support/fixture.ts";
import { killBackupsAtRandom } from "../support/kills.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";
import { moveMoney } from "../support/writers.ts";

let pair: TestPair;
let t: TestApp;
const TOTAL = 100 * 1000;

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  await pair.primary.admin`delete from public.accounts`;
  await pair.primary.admin`insert into public.accounts (owner, balance) select 'acct ' || g, 1000 from generate_series(1, 100) g`;
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

// One call with no budget: it stages one table, catches up, or publishes, then answers.
const step = () => runBackup({ projects: t.projects, events: t.events }, { mode: "full", verify: false, staged: true, budgetMs: 0 });

async function standbyTotal(): Promise<{ total: number; n: number }> {
  const [row] = await pair.secondary.admin`select coalesce(sum(balance), 0)::int8 as total, count(*)::int as n from public.accounts`;
  return { total: Number(row!.total), n: row!.n };
}

async function moreRows() {
  await pair.primary.admin`insert into public.audit_log (message) select 'bulk ' || g from generate_series(1, 2000) g`;
  await pair.primary
    .admin`insert into public.measurements (taken_on, value) select date '2025-06-01' + (g % 400), g from generate_series(1, 1000) g`;
}

describe("a full backup too long for one call", () => {
  test("continues over calls while money moves, and publishes one consistent copy", async () => {
    const ids = (await pair.primary.admin`select id from public.accounts`).map((r) => Number(r.id));
    const movers = moveMoney(pair.urls.primary, ids, { audit: true });
    let transfers = 0;
    const calls: string[] = [];
    let progressSeen = false;
    try {
      for (let i = 0; i < 40; i++) {
        const r = await step();
        calls.push(r.status);
        const standby = await standbyTotal();
        if (r.status === "running") {
          // Nothing is published before the last call: the standby still has no accounts.
          assert.equal(standby.n, 0, `call ${i}: a staged copy showed through before it was published`);
          const status = (await (await t.request("/spillway/status")).json()) as {
            lastBackup: { status: string; progress: { tablesDone: number; tablesTotal: number } };
          };
          assert.equal(status.lastBackup.status, "running");
          if (status.lastBackup.progress.tablesDone > 0 && status.lastBackup.progress.tablesDone < status.lastBackup.progress.tablesTotal)
            progressSeen = true;
          // New rows while tables are still being staged; the movers keep writing throughout.
          if ((r.progress as { phase: string }).phase === "load") await moreRows();
          continue;
        }
        assert.equal(r.status, "succeeded");
        assert.deepEqual(standby, { total: TOTAL, n: 100 });
        break;
      }
    } finally {
      transfers = await movers.stop();
    }
    assert.ok(transfers > 20, `only ${transfers} transfers ran`);
    assert.equal(calls.at(-1), "succeeded", `never published: ${calls.join(", ")}`);
    assert.ok(calls.length >= 9, `a staged copy of 8 tables took only ${calls.length} calls`);
    assert.ok(progressSeen, "/status never showed a partly staged copy");
    const runs = await pair.secondary.admin`select distinct id from spillway.runs where kind = 'full'`;
    assert.equal(runs.length, 1, "one run spans every call");
    const [left] = await pair.secondary.admin`
      select (select count(*) from spillway.staging)::int as staging,
             (select count(*) from pg_tables where schemaname = 'spillway' and tablename like 'stage\\_%')::int as stages`;
    assert.deepEqual(left, { staging: 0, stages: 0 });

    // What changed after the published point comes over incrementally, and then all is equal.
    const next = await runBackup({ projects: t.projects, events: t.events }, { mode: "incremental", verify: false });
    assert.equal(next.status, "succeeded");
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    assert.deepEqual(await sequencePositions(pair.secondary.admin), await sequencePositions(pair.primary.admin));
    const [slots] = await pair.primary.admin`select count(*)::int as n from pg_replication_slots where slot_name like 'spillway%'`;
    assert.equal(slots!.n, 1);
  });

  test("killed at random moments, the standby holds a complete copy, and the staged copy finishes", async () => {
    const kills = await killBackupsAtRandom(pair, {
      rounds: 4,
      // Inside a call: one of the child's transactions open on the standby (staging a table,
      // catching up or publishing), never before it began or between its calls.
      where: "inside a call",
      jitterMs: 300,
      env: { STAGED: "1" },
      change: async (round) => {
        await pair.primary.admin`update public.accounts set owner = owner || '.' where id % 5 = ${round}`;
        await addRows(pair);
      },
    });
    assert.equal(kills, 4);
    let last = await step();
    for (let i = 0; i < 40 && last.status === "running"; i++) last = await step();
    assert.equal(last.status, "succeeded");
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  });

  test("over HTTP, a staged backup answers 202 until it is published", async () => {
    // Staging begins when the estimate says the copy would not fit; here it is asked for.
    const first = await step();
    assert.equal(first.status, "running");
    // The shortest budget a call may have (5 s). Before each of the next two calls the app
    // writes more rows than one catch-up batch takes (20 000 changes), and the staged copy's
    // row is held for 6 s, so the call's first batch commits past its budget: it answers 202
    // with changes still to apply.
    assert.equal((await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ budgetSeconds: 5 }) })).status, 200);
    const hold = async (ms: number) => {
      let held: () => void = () => undefined;
      const taken = new Promise<void>((r) => (held = r));
      const done = pair.secondary.admin.begin(async (tx) => {
        await tx`select 1 from spillway.staging where id for update`;
        held();
        await new Promise((r) => setTimeout(r, ms));
      });
      await taken;
      return { done };
    };
    const statuses: number[] = [];
    try {
      for (let call = 0; call < 12; call++) {
        if (call < 2) await pair.primary.admin`insert into public.audit_log (message) select 'call ' || g from generate_series(1, 21000) g`;
        const holding = call < 2 ? await hold(6000) : null;
        const res = await t.request("/spillway/force-backup", { method: "POST", body: "{}" });
        await holding?.done;
        statuses.push(res.status);
        const body = (await res.json()) as { run: { id: string; status: string; kind: string } };
        assert.equal(body.run.id, first.id, "continuing calls report the same run");
        if (res.status === 200) {
          assert.deepEqual([body.run.status, body.run.kind], ["succeeded", "full"]);
          break;
        }
        assert.equal(res.status, 202, JSON.stringify(body));
        assert.equal(body.run.status, "running");
      }
    } finally {
      await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ budgetSeconds: 120 }) });
    }
    assert.deepEqual(statuses.slice(0, 2), [202, 202], statuses.join(", "));
    assert.equal(statuses.at(-1), 200, `never published: ${statuses.join(", ")}`);
    assert.equal(
      t.sunk.filter((e) => e.kind === "backup.continues" && (e.data as { runId?: string }).runId === first.id).length,
      // The first call's and each 202's.
      1 + statuses.filter((s) => s === 202).length,
      "each unfinished call leaves an event",
    );
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    // The later tests expect a small database again.
    await pair.primary.admin`delete from public.audit_log where message like 'call %'`;
  });

  test("fdw: the standby pulls each table from its own snapshot, and the copy ends equal", async () => {
    const patch = await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ strategy: "fdw" }) });
    assert.equal(patch.status, 200);
    await moreRows();
    await pair.primary.admin`update public.employees set salary = salary + 1 where id % 3 = 0`;
    let last = await step();
    let calls = 1;
    for (; calls < 40 && last.status === "running"; calls++) {
      if (calls === 2) await pair.primary.admin`delete from public.audit_log where message like 'bulk 1%'`;
      last = await step();
    }
    assert.equal(last.status, "succeeded");
    assert.equal(last.strategy, "fdw");
    assert.ok(calls >= 9, `only ${calls} calls`);
    const next = await runBackup({ projects: t.projects, events: t.events }, { mode: "incremental", verify: false });
    assert.equal(next.status, "succeeded");
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    const [foreign] = await pair.secondary.admin`select count(*)::int as n from pg_namespace where nspname like 'spillway_fdw%'`;
    assert.equal(foreign!.n, 0, "no foreign schema is left behind");
  });

  test("a tick continues a staged backup and publishes it", async () => {
    const first = await step();
    assert.equal(first.status, "running");
    const tick = JSON.parse(await (await t.request("/spillway/tick", { method: "POST" })).text());
    assert.equal(tick.action, "backup", JSON.stringify(tick));
    assert.match(tick.reason, /staged full backup continues/);
    assert.equal(tick.run.id, first.id);
    assert.equal(tick.run.status, "succeeded");
    const [left] = await pair.secondary.admin`select count(*)::int as n from spillway.staging`;
    assert.equal(left!.n, 0);
  });

  test("retention guard: a staged backup whose slot holds too much WAL is dropped, told, and begun anew", async () => {
    await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ maxRetainedBytes: 1048576 }) });
    try {
      const first = await step();
      assert.equal(first.status, "running");
      const [staging] = await pair.secondary.admin`select slot from spillway.staging`;
      await pair.primary.admin`insert into public.audit_log (message) select repeat('x', 500) from generate_series(1, 8000)`;
      const tick = JSON.parse(await (await t.request("/spillway/tick", { method: "POST" })).text());
      assert.equal(tick.error, undefined, JSON.stringify(tick));
      const guard = t.sunk.find((e) => e.kind === "backup.retention_guard" && e.data?.slot === staging!.slot);
      assert.ok(guard, "the guard told");
      assert.match(guard.message, /staged backup was dropped/);
      const [slot] = await pair.primary.admin`select count(*)::int as n from pg_replication_slots where slot_name = ${staging!.slot}`;
      assert.equal(slot!.n, 0, "its slot is gone");
      const [left] = await pair.secondary.admin`
        select (select count(*) from spillway.staging)::int as staging,
               (select count(*) from pg_tables where schemaname = 'spillway' and tablename like 'stage\\_%')::int as stages`;
      assert.deepEqual(left, { staging: 0, stages: 0 });
    } finally {
      await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ maxRetainedBytes: 134217728 }) });
    }
    const again = await runBackup({ projects: t.projects, events: t.events }, { mode: "auto", verify: false });
    assert.equal(again.status, "succeeded");
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  });

  test("a switch leaves a staged backup alone, catches up from the published copy, and drops the stage", async () => {
    const first = await step();
    assert.equal(first.status, "running");
    const [staging] = await pair.secondary.admin`select slot from spillway.staging`;
    await pair.primary.admin`update public.accounts set owner = owner || '!' where id % 9 = 0`;
    const res = await t.request("/spillway/force-switch", { method: "POST", body: JSON.stringify({}) });
    assert.equal(res.status, 200, await res.clone().text());
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    const [left] = await pair.secondary.admin`
      select (select count(*) from spillway.staging)::int as staging,
             (select count(*) from pg_tables where schemaname = 'spillway' and tablename like 'stage\\_%')::int as stages`;
    assert.deepEqual(left, { staging: 0, stages: 0 }, "the new active keeps no stage");
    const [slot] = await pair.primary.admin`select count(*)::int as n from pg_replication_slots where slot_name = ${staging!.slot}`;
    assert.equal(slot!.n, 0, "the stage's slot on the old active is gone");
    const [run] = await pair.secondary.admin`select status, error from spillway.runs where id = ${first.id}`;
    assert.equal(run!.status, "failed", "the staged run does not stay running forever");
  });

  test("a copy expected to overrun the budget, at the speed of the last large copy, is staged", async () => {
    const full = () =>
      t.request("/spillway/force-backup", { method: "POST", body: JSON.stringify({ mode: "full" }) }).then(async (r) => ({
        status: r.status,
        run: ((await r.json()) as { run: { status: string; details: { staged?: boolean } } }).run,
      }));
    const quick = await full();
    assert.equal(quick.run.details.staged, false, "a small copy at the assumed speed fits one call");
    // History as a slow standby would have it: 64 MB copied in an hour (runs are kept by
    // their target; earlier switches decide which project that is now).
    for (const server of [pair.primary, pair.secondary]) {
      await server.admin`
        insert into spillway.runs (id, kind, status, source, target, strategy, started_at, finished_at, bytes, duration_ms, details)
        values (gen_random_uuid(), 'full', 'succeeded', 'primary', 'secondary', 'copy', now() - interval '2 hours', now() - interval '1 hour', 67108864, 3600000, '{}')`;
    }
    await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ budgetSeconds: 5 }) });
    try {
      const slow = await full();
      assert.equal(slow.run.details.staged, true, JSON.stringify(slow.run));
      assert.equal(slow.status, 200);
      assert.equal(slow.run.status, "succeeded");
      assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    } finally {
      await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ budgetSeconds: 120 }) });
    }
  });
});
