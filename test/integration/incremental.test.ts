// Incremental backups: what moves, kills inside a run with writes going on, the retention guard.
//
// Mutation it catches (run on purpose, then reverted): the batch writer not sending its
// keyed deletes (functions/backup/batch.ts) fails "inserts, updates ... and only they" and
// "killed at random moments ...". Run too, and NOT caught: dropping the check that skips a
// transaction at or before the applied position (functions/backup/apply.ts,
// `m.commitLsn > applied`): it matters only for a kill between the standby's commit and the
// slot's advance, which the random kills did not hit.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { expireLease, type TestApp, testApp } from "../support/app.ts";
import { fingerprint, sequencePositions } from "../support/compare.ts";
import { loadFixture } from "../support/fixture.ts";
import { killAndSee, standbyBefore, untilSeen } from "../support/kills.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { run } from "../support/process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  await applyToBoth(pair, `create table public.counters (id integer primary key, n bigint not null default 0, note text)`);
  await pair.primary.admin`insert into public.counters (id) select g from generate_series(1, 50) g`;
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function backup(body: unknown): Promise<{ status: number; body: any }> {
  const res = await t.request("/spillway/force-backup", { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, body: JSON.parse(await res.text()) };
}

describe("incremental backup", () => {
  test("before any full copy, mode incremental is refused with the reason", async () => {
    const r = await backup({ mode: "incremental" });
    assert.equal(r.status, 409);
    assert.equal(r.body.error.code, "INCREMENTAL_UNAVAILABLE");
    assert.match(r.body.error.message, /no earlier copy/);
  });

  test("inserts, updates (a primary-key change too), deletes and a truncate move, and only they", async () => {
    // A value stored out of line (TOAST), which a later update leaves as it was: the change
    // stream does not carry it, and the standby must keep its own.
    await pair.primary
      .admin`update public.counters set note = (select string_agg(md5(g::text || random()::text), '') from generate_series(1, 400) g) where id = 10`;
    const first = await backup({ mode: "auto" });
    assert.equal(first.body.run.kind, "full");
    assert.match(first.body.run.details.reason, /no earlier copy/);

    const a = pair.primary.admin;
    const changed =
      (await a`insert into public.employees (name, tags) select 'new ' || g, '{x}' from generate_series(1, 5) g`).count +
      (await a`update public.employees set salary = salary + 1 where id <= 10`).count +
      (await a`update public.counters set id = id + 1000 where id = 50`).count +
      (await a`update public.audit_log set message = 'edited' where message = 'event 3'`).count +
      (await a`delete from public.assignments where employee_id = 7`).count +
      (await a`delete from public.audit_log where message = 'duplicate'`).count +
      (await a`insert into public.measurements (taken_on, value) values ('2026-03-01', 1.5), ('2025-02-01', 2.5)`).count +
      (await a`update public.counters set n = n + 1, note = 'x' where id <= 3`).count +
      (await a`update public.counters set n = n + 1 where id = 10`).count +
      // A GENERATED ALWAYS key changed (an app can only set it to DEFAULT, and Spillway's
      // UPDATE cannot set one at all), and rows updated twice.
      (await a`update public.accounts set id = default where id = (select min(id) from public.accounts)`).count +
      (await a`update public.accounts set balance = balance + 1 where id % 7 = 0`).count +
      (await a`update public.accounts set balance = balance + 1 where id % 7 = 0`).count;
    await a`truncate public.audit_log`;
    await a`select nextval('public.invoice_numbers')`;

    const inc = await backup({ mode: "auto" });
    assert.equal(inc.status, 200, JSON.stringify(inc.body));
    assert.equal(inc.body.run.kind, "incremental");
    assert.equal(inc.body.run.rows, changed, "only the changed rows moved");
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    const [identity] = await pair.secondary
      .admin`select attidentity as kind from pg_attribute where attrelid = 'public.accounts'::regclass and attname = 'id'`;
    assert.equal(identity!.kind, "a", "the key is GENERATED ALWAYS again after the batch");

    const quiet = await backup({ mode: "incremental" });
    assert.equal(quiet.body.run.kind, "incremental");
    assert.equal(quiet.body.run.rows, 0);
    const status = JSON.parse(await (await t.request("/spillway/status")).text());
    assert.equal(status.lastBackup.kind, "incremental");
    assert.equal(typeof status.standbyLagSeconds, "number");
  });

  test("killed at random moments with writes going on: equal at the end, nothing applied twice", async () => {
    const [before] = await pair.primary.admin`select sum(n)::int as n from public.counters`;
    const app = postgres(pair.urls.primary, { max: 3, onnotice: () => {} });
    let stop = false;
    let increments = 0;
    const work = (async () => {
      let i = 0;
      while (!stop) {
        await app.begin(async (tx) => {
          await tx`update public.counters set n = n + 1 where id = ${1 + (i % 49)}`;
          await tx`insert into public.employees (name) values (${`w${i}`})`;
          if (i % 7 === 0) await tx`delete from public.employees where name = ${`w${i - 3}`}`;
        });
        increments += 1;
        i += 1;
      }
    })();
    // Each kill lands inside a run (one the child started, still running), at a random
    // moment after the standby shows it; one that landed between runs is made again.
    let kills = 0;
    const missed: string[] = [];
    try {
      for (let attempt = 0; kills < 5 && attempt < 30; attempt++) {
        const before = await standbyBefore(pair);
        const child = run(
          process.execPath,
          ["--import", "tsx", "test/support/incremental-child.ts"],
          { PRIMARY_URL: pair.urls.primary, SECONDARY_URL: pair.urls.secondary },
          root,
        );
        await untilSeen(pair, before, "inside a run", 300);
        const landed = await killAndSee(pair, child, before);
        if (landed.has("inside a run")) kills += 1;
        else missed.push([...landed].join(" and ") || "before it did anything");
        await expireLease(pair);
      }
    } finally {
      stop = true;
      await work;
      await app.end();
    }
    assert.equal(kills, 5, `only ${kills} kills landed inside a run; the others: ${missed.join("; ")}`);
    const [interrupted] = await pair.secondary.admin`select count(*)::int as n from spillway.runs where status = 'running'`;
    assert.ok(interrupted!.n >= 1, "the last kill left its run running");
    const last = await backup({ mode: "auto" });
    assert.equal(last.body.run.kind, "incremental", JSON.stringify(last.body));
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    const [sum] = await pair.secondary.admin`select sum(n)::int as n from public.counters`;
    assert.equal(sum!.n, before!.n + increments, "every increment is there once");
  });

  test("retention guard: past the limit the slot is dropped, told, and the next backup is a correct full one", async () => {
    await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ maxRetainedBytes: 1048576 }) });
    await pair.primary.admin`insert into public.audit_log (message) select repeat('x', 500) from generate_series(1, 8000)`;
    const tick = JSON.parse(await (await t.request("/spillway/tick", { method: "POST" })).text());
    assert.equal(tick.error, undefined);
    const logs = JSON.parse(await (await t.request("/spillway/logs?level=warn&limit=10")).text());
    const guard = logs.events.find((e: any) => e.kind === "backup.retention_guard");
    assert.ok(guard, "the guard told");
    assert.match(guard.message, /over the limit of 1048576/);
    const next = await backup({ mode: "auto" });
    assert.equal(next.body.run.kind, "full");
    assert.match(next.body.run.details.reason, /slot is gone/);
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    assert.deepEqual(await sequencePositions(pair.secondary.admin), await sequencePositions(pair.primary.admin));
    const slots = await pair.primary.admin`select slot_name from pg_replication_slots`;
    assert.equal(slots.length, 1, "one slot, the current copy's");
    await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ maxRetainedBytes: 134217728 }) });
  });
});
