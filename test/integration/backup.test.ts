// Full backups with either strategy: every table and sequence equal on both sides, verified;
// and the refusals around them.
//
// Mutation it catches (run on purpose, then reverted): the full copy without setting the
// standby's sequences after the load (functions/backup/full.ts, setSequences) fails "copy:
// every table and sequence ends equal on both sides, verified".

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type TestApp, testApp } from "../support/app.ts";
import { fingerprint, sequencePositions } from "../support/compare.ts";
import { addRows, loadFixture } from "../support/fixture.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function backup(body: unknown = {}): Promise<{ status: number; body: any }> {
  const res = await t.request("/spillway/force-backup", { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, body: JSON.parse(await res.text()) };
}

async function setStrategy(strategy: "copy" | "fdw") {
  const res = await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ strategy }) });
  assert.equal(res.status, 200);
}

describe("full backup", () => {
  for (const strategy of ["copy", "fdw"] as const) {
    test(`${strategy}: every table and sequence ends equal on both sides, verified`, async () => {
      await setStrategy(strategy);
      await addRows(pair);
      const called = Date.now();
      const r = await backup({ mode: "full", verify: true });
      const answered = Date.now();
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const run = r.body.run;
      assert.equal(run.status, "succeeded");
      assert.equal(run.kind, "full");
      assert.equal(run.strategy, strategy);
      assert.equal(run.tables, 8);
      const primary = await fingerprint(pair.primary.admin);
      assert.deepEqual(await fingerprint(pair.secondary.admin), primary);
      assert.deepEqual(await sequencePositions(pair.secondary.admin), await sequencePositions(pair.primary.admin));
      const expectedRows = Object.values(primary).reduce((n, v) => n + Number(v.split(":")[0]), 0);
      assert.equal(run.rows, expectedRows);
      assert.ok(run.bytes > 0);
      // The run's duration is its own: measured, and within the call that ran it.
      assert.ok(run.durationMs > 0 && run.durationMs <= answered - called, `${run.durationMs} ms in a call of ${answered - called} ms`);
      assert.equal(run.details.verified, true);

      // The generated column was recomputed, and the standby's constraints and indexes are back.
      const [e] = await pair.secondary.admin`select name, name_upper from public.employees where id = 2`;
      assert.equal(e!.name_upper, e!.name.toUpperCase());
      const constraints = await pair.secondary
        .admin`select conname, convalidated from pg_constraint where connamespace = 'public'::regnamespace order by 1`;
      const expected = await pair.primary
        .admin`select conname, convalidated from pg_constraint where connamespace = 'public'::regnamespace order by 1`;
      assert.deepEqual([...constraints], [...expected]);
      // The foreign keys, left in place through the load, still hold the standby to them.
      await assert.rejects(pair.secondary.admin`insert into public.projects (title, lead_id) values ('orphan', -1)`, { code: "23503" });
      const indexes = await pair.secondary.admin`select indexname, indexdef from pg_indexes where schemaname = 'public' order by 1`;
      assert.deepEqual(
        [...indexes],
        [...(await pair.primary.admin`select indexname, indexdef from pg_indexes where schemaname = 'public' order by 1`)],
      );
      // Identity and serial sequences continue where the active's are.
      await pair.secondary.admin`insert into public.accounts (owner, balance) values ('after', 1)`;
      const [max] = await pair.primary.admin`select max(id) as id from public.accounts`;
      const [next] = await pair.secondary.admin`select max(id) as id from public.accounts`;
      assert.equal(Number(next!.id), Number(max!.id) + 1);
      await pair.secondary.admin`delete from public.accounts where owner = 'after'`;

      const status = JSON.parse(await (await t.request("/spillway/status")).text());
      assert.equal(status.lastBackup.id, run.id);
      assert.equal(status.lastBackup.status, "succeeded");
      const logs = JSON.parse(await (await t.request("/spillway/logs?limit=5")).text());
      assert.ok(logs.events.some((e: any) => e.kind === "backup.succeeded" && e.data.runId === run.id));
    });
  }

  test("fdw: a link left from before is brought up to date, and the password stays in the user mapping", async () => {
    await setStrategy("fdw");
    try {
      // As an earlier version (or a move of the active) may have left it: an option missing, another stale.
      await backup({ mode: "full" });
      await pair.secondary.admin`alter server spillway_source options (drop fetch_size, set port '1')`;
      const r = await backup({ mode: "full" });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const [server] = await pair.secondary.admin`select srvoptions as options from pg_foreign_server where srvname = 'spillway_source'`;
      assert.ok(server!.options.includes("fetch_size=2000"), server!.options.join(" "));
      assert.ok(server!.options.includes(`port=${new URL(pair.urls.primary).port}`), server!.options.join(" "));
      assert.ok(!server!.options.some((o: string) => o.includes(pair.primary.password)));
      assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    } finally {
      await setStrategy("copy");
    }
  });

  test("the copy sees every row of a table with row-level security", async () => {
    const [n] = await pair.secondary.admin`select count(*)::int as n from public.secrets`;
    const [m] = await pair.primary.admin`select count(*)::int as n from public.secrets`;
    assert.ok(m!.n > 0);
    assert.equal(n!.n, m!.n);
  });
});

describe("verify and lag", () => {
  test("POST /verify matches after a backup, then names a table the standby lost a row of", async () => {
    await setStrategy("copy");
    await backup({ mode: "full" });
    await new Promise((r) => setTimeout(r, 1200));
    const status = JSON.parse(await (await t.request("/spillway/status")).text());
    assert.equal(status.standbyLagSeconds, 0);
    const ok = JSON.parse(await (await t.request("/spillway/verify", { method: "POST" })).text());
    assert.equal(ok.verify.ok, true);
    assert.equal(ok.verify.tables.length, 8);
    await pair.secondary.admin`delete from public.audit_log where message = 'event 7'`;
    const bad = JSON.parse(await (await t.request("/spillway/verify", { method: "POST" })).text());
    assert.equal(bad.verify.ok, false);
    assert.equal(bad.verify.mismatches.length, 1);
    assert.match(bad.verify.mismatches[0], /^public\.audit_log: /);
    const logs = JSON.parse(await (await t.request("/spillway/logs?level=error&limit=1")).text());
    assert.equal(logs.events[0].kind, "verify.mismatch");
    assert.match(logs.events[0].message, /public\.audit_log/);
    await addRows(pair);
    await new Promise((r) => setTimeout(r, 1200));
    const lagging = JSON.parse(await (await t.request("/spillway/status")).text());
    assert.ok(lagging.standbyLagSeconds >= 1, `lag ${lagging.standbyLagSeconds}`);
    await backup({ mode: "full" });
  });
});

describe("refusals", () => {
  test("a second force-backup while one runs: 409 BUSY", async () => {
    await setStrategy("copy");
    const [first, second] = await Promise.all([
      backup({ mode: "full" }),
      new Promise((r) => setTimeout(r, 30)).then(() => backup({ mode: "full" })),
    ]);
    const statuses = [first.status, second.status].sort();
    assert.deepEqual(statuses, [200, 409]);
    const busy = first.status === 409 ? first : second;
    assert.equal(busy.body.error.code, "BUSY");
  });

  test("schema mismatch: the run fails with the full list and the standby is untouched", async () => {
    await pair.secondary.admin`alter table public.projects add column extra text`;
    await pair.secondary.admin`alter table public.audit_log alter column message type varchar(50)`;
    await pair.secondary.admin`create table public.only_here (id int)`;
    // A foreign key the active does not have: the standby's would stand unchecked over rows
    // that need not satisfy it.
    await pair.secondary
      .admin`alter table public.assignments add constraint assignments_lead_fkey foreign key (employee_id) references public.projects (id) not valid`;
    await addRows(pair);
    const before = await fingerprint(pair.secondary.admin);
    try {
      const r = await backup({ mode: "full" });
      assert.equal(r.status, 409);
      assert.equal(r.body.error.code, "SCHEMA_MISMATCH");
      const diffs: string[] = r.body.error.details.differences;
      assert.ok(diffs.includes("public.projects: column extra exists only on the standby"), diffs.join("\n"));
      assert.ok(
        diffs.includes("public.audit_log: column message is text on the active, character varying(50) on the standby"),
        diffs.join("\n"),
      );
      assert.ok(diffs.includes("public.only_here: table exists only on the standby"), diffs.join("\n"));
      assert.ok(diffs.includes("public.assignments: foreign key assignments_lead_fkey exists only on the standby"), diffs.join("\n"));
      assert.equal(diffs.length, 4);
      const { only_here: _, ...after } = await fingerprint(pair.secondary.admin);
      const { only_here: __, ...was } = before;
      assert.deepEqual(after, was);
      const logs = JSON.parse(await (await t.request("/spillway/logs?level=error&limit=1")).text());
      assert.equal(logs.events[0].kind, "backup.failed");
      assert.match(logs.events[0].message, /differ/);
    } finally {
      await pair.secondary.admin`alter table public.assignments drop constraint assignments_lead_fkey`;
      await pair.secondary.admin`drop table public.only_here`;
      await pair.secondary.admin`alter table public.projects drop column extra`;
      await pair.secondary.admin`alter table public.audit_log alter column message type text`;
    }
  });

  test("bad bodies: 400 naming the field", async () => {
    for (const [body, field] of [
      [{ mode: "partial" }, "mode"],
      [{ verify: "yes" }, "verify"],
      [{ force: "yes" }, "force"],
      [[1], "body"],
    ] as const) {
      const r = await backup(body);
      assert.equal(r.status, 400);
      assert.equal(r.body.error.code, "INVALID_BODY");
      assert.ok(field in r.body.error.details, JSON.stringify(r.body));
    }
  });

  test("standby unreachable: 503 PROJECT_UNREACHABLE and an error event", async () => {
    await pair.secondary.stop();
    const r = await backup({ mode: "full" });
    assert.equal(r.status, 503);
    assert.equal(r.body.error.code, "PROJECT_UNREACHABLE");
    assert.match(r.body.error.message, /secondary/);
    const logs = JSON.parse(await (await t.request("/spillway/logs?level=error&limit=1")).text());
    assert.equal(logs.events[0].kind, "backup.unreachable");
    assert.equal(logs.events[0].project, "secondary");
  });
});
