// Switches and failbacks under writers, and the refusals of a switch.
//
// Mutation it catches (run on purpose, then reverted): a switch without the catch-up behind
// the fence (functions/switchover.ts, `run = await catchUp(ctx, lease)`) fails "every
// acknowledged write is on the final active; fenced writers got the documented error".

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { type TestApp, testApp } from "../support/app.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { ITEMS_SCHEMA, startWriters, type WriterReport } from "../support/writers.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, ITEMS_SCHEMA);
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function post(path: string, body: unknown = {}): Promise<{ status: number; body: any }> {
  const res = await t.request(`/spillway${path}`, { method: "POST", body: JSON.stringify(body) });
  return { status: res.status, body: JSON.parse(await res.text()) };
}

async function states() {
  const out: Record<string, any> = {};
  for (const [name, s] of Object.entries({ primary: pair.primary, secondary: pair.secondary })) {
    const [row] =
      await s.admin`select s.active, s.epoch::int, s.fenced, a.active as public_active, a.epoch::int as public_epoch from spillway.state s cross join public.spillway_active a`;
    out[name] = row;
  }
  return out;
}

describe("refusals", () => {
  test("no backup has ever completed to the target: 409 TARGET_UNFIT, nothing changed", async () => {
    // A first tick fences the standby (it takes no app writes before it is the active).
    assert.equal((await t.request("/spillway/tick", { method: "POST" })).status, 200);
    const before = await states();
    const r = await post("/force-switch");
    assert.equal(r.status, 409);
    assert.equal(r.body.error.code, "TARGET_UNFIT");
    assert.match(r.body.error.message, /no backup/);
    assert.deepEqual(await states(), before);
  });

  test("switching to the active project itself: 409 TARGET_UNFIT; bad bodies: 400", async () => {
    assert.equal((await post("/force-switch", { to: "primary" })).body.error.code, "TARGET_UNFIT");
    const bad = await post("/force-switch", { to: "tertiary", force: "yes" });
    assert.equal(bad.status, 400);
    assert.deepEqual(Object.keys(bad.body.error.details).sort(), ["force", "to"]);
  });

  test("the target would be over its switch threshold: refused unless forced", async () => {
    assert.equal((await post("/force-backup", { mode: "full" })).status, 200);
    const [size] = await pair.secondary.admin`select pg_database_size(current_database())::int8 as b`;
    await t.request("/spillway/config", {
      method: "PATCH",
      body: JSON.stringify({ quotaBytes: { secondary: Math.floor(Number(size!.b) / 0.95) } }),
    });
    try {
      const r = await post("/force-switch");
      assert.equal(r.status, 409);
      assert.equal(r.body.error.code, "TARGET_UNFIT");
      assert.match(r.body.error.message, /force: true overrides/);
      assert.equal((await states()).primary.fenced, false);
    } finally {
      await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ quotaBytes: { secondary: 524288000 } }) });
    }
  });
});

describe("switch, failback, switch under writers", () => {
  let report: WriterReport;
  test("every acknowledged write is on the final active; fenced writers got the documented error", async () => {
    await post("/force-backup", { mode: "full" });
    const writers = startWriters(pair, 4);
    const results: any[] = [];
    try {
      // The failback needs no backup first: the switch left the primary holding the same data.
      for (const to of ["secondary", "primary", "secondary"]) {
        await new Promise((r) => setTimeout(r, 400));
        const r = await post("/force-switch", { to });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        results.push(r.body.switch);
      }
      await new Promise((r) => setTimeout(r, 400));
    } finally {
      report = await writers.stop();
    }
    assert.deepEqual(
      results.map((r) => [r.from, r.to, r.epoch]),
      [
        ["primary", "secondary", 2],
        ["secondary", "primary", 3],
        ["primary", "secondary", 4],
      ],
    );
    for (const r of results) {
      assert.ok(r.writesBlockedMs >= 0 && r.writesBlockedMs <= r.durationMs);
    }
    assert.deepEqual(report.otherErrors, []);
    assert.ok(report.acknowledged.length > 100, `only ${report.acknowledged.length} writes`);
    const onFinal = new Set((await pair.secondary.admin`select id from public.items`).map((r) => r.id as string));
    const lost = report.acknowledged.filter((id) => !onFinal.has(id));
    assert.deepEqual(lost, []);
    assert.ok(report.fenceErrors.length > 0, "some writer hit the fence");
    for (const e of report.fenceErrors) {
      assert.equal(e.code, "SPWFN");
      // During the switch the fence says the new active is being chosen; it names it once published.
      assert.match(
        e.message,
        /^spillway: project (primary|secondary) is fenced; the active project is ((primary|secondary) \(epoch \d+\)|being chosen \(epoch unknown\))$/,
      );
    }
    const s = await states();
    assert.deepEqual(s.primary, { active: "secondary", epoch: 4, fenced: true, public_active: "secondary", public_epoch: 4 });
    assert.deepEqual(s.secondary, { active: "secondary", epoch: 4, fenced: false, public_active: "secondary", public_epoch: 4 });
    const active = JSON.parse(await (await t.request("/spillway/active", { token: null })).text());
    assert.deepEqual([active.active, active.epoch], ["secondary", 4]);
    const kinds = (JSON.parse(await (await t.request("/spillway/logs?limit=100")).text()).events as any[]).map((e) => e.kind).reverse();
    const switchKinds = kinds.filter((k) => k === "switch.started" || k === "switch.fenced" || k === "switch.completed");
    assert.deepEqual(switchKinds, Array(3).fill(["switch.started", "switch.fenced", "switch.completed"]).flat());
  });

  test("a direct write to the fenced old active fails with SPWFN naming the active and epoch", async () => {
    const sql = postgres(pair.urls.primary, { max: 1, onnotice: () => {} });
    try {
      await assert.rejects(sql`insert into public.items (id, writer) values ('late', 9)`, (e: any) => {
        assert.equal(e.code, "SPWFN");
        assert.equal(e.message, "spillway: project primary is fenced; the active project is secondary (epoch 4)");
        return true;
      });
    } finally {
      await sql.end();
    }
  });
});

describe("the active unreachable", () => {
  test("a switch needs force, and then says how far behind the target may be", async () => {
    // The secondary is active (epoch 4); it goes down.
    await pair.secondary.stop();
    try {
      const refused = await post("/force-switch", { to: "primary" });
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error.code, "PROJECT_UNREACHABLE");
      assert.match(refused.body.error.message, /force: true switches to primary anyway/);
      const forced = await post("/force-switch", { to: "primary", force: true });
      assert.equal(forced.status, 200, JSON.stringify(forced.body));
      assert.deepEqual([forced.body.switch.to, forced.body.switch.epoch], ["primary", 5]);
      assert.ok(Date.parse(forced.body.switch.dataLossSince) > 0);
      const logs = JSON.parse(await (await t.request("/spillway/logs?level=warn&limit=5")).text());
      assert.ok(logs.events.some((e: any) => e.kind === "switch.forced" && /may be missing/.test(e.message)));
    } finally {
      await pair.secondary.restart();
    }
    // Back up, the old active learns the new epoch at the next tick and stays fenced.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await t.request("/spillway/tick", { method: "POST" })).status, 200);
    const s = await states();
    assert.deepEqual(s.secondary, { active: "primary", epoch: 5, fenced: true, public_active: "primary", public_epoch: 5 });
    assert.deepEqual(s.primary, { active: "primary", epoch: 5, fenced: false, public_active: "primary", public_epoch: 5 });
  });
});
