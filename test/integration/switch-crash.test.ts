import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { expireLease, type TestApp, testApp } from "../support/app.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { run } from "../support/process.ts";
import { ITEMS_SCHEMA, startWriters } from "../support/writers.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, ITEMS_SCHEMA);
  t = await testApp(pair);
  const r = await t.request("/spillway/force-backup", { method: "POST", body: JSON.stringify({ mode: "full" }) });
  assert.equal(r.status, 200);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

type Name = "primary" | "secondary";

async function copies() {
  const out = {} as Record<Name, { active: string; epoch: number; fenced: boolean }>;
  for (const [name, s] of Object.entries({ primary: pair.primary, secondary: pair.secondary })) {
    const [row] = await s.admin`select active, epoch::int, fenced from spillway.state`;
    out[name as Name] = { active: row!.active, epoch: row!.epoch, fenced: row!.fenced };
  }
  return out;
}

describe("the process killed at each step of a switch, then restarted", () => {
  for (const [step, switched] of [
    ["fenced", false],
    ["caught-up", false],
    ["published-target", true],
    ["published", true],
  ] as const) {
    test(`killed after "${step}": one active by highest epoch, no acknowledged write lost, writes possible`, async () => {
      const before = await copies();
      const from = (before.primary.epoch >= before.secondary.epoch ? before.primary.active : before.secondary.active) as Name;
      const to: Name = from === "primary" ? "secondary" : "primary";
      const epoch = Math.max(before.primary.epoch, before.secondary.epoch);
      const backup = await t.request("/spillway/force-backup", { method: "POST", body: JSON.stringify({ mode: "full" }) });
      assert.equal(backup.status, 200);
      const writers = startWriters(pair, 3);
      await new Promise((r) => setTimeout(r, 300));
      const child = run(
        process.execPath,
        ["--import", "tsx", "test/support/switch-child.ts"],
        { PRIMARY_URL: pair.urls.primary, SECONDARY_URL: pair.urls.secondary, CRASH_AT: step },
        root,
      );
      await child.exited;
      assert.equal(child.proc.signalCode, "SIGKILL", child.output());
      await expireLease(pair);
      // Restarted: the next tick settles what the crash left.
      const tick = await t.request("/spillway/tick", { method: "POST" });
      assert.equal(tick.status, 200);
      await new Promise((r) => setTimeout(r, 500));
      const report = await writers.stop();

      const after = await copies();
      const active = switched ? to : from;
      const standby = switched ? from : to;
      assert.deepEqual(after[active], { active, epoch: switched ? epoch + 1 : epoch, fenced: false });
      assert.equal(after[standby].active, active, "both copies name the same active");
      assert.equal(after[standby].epoch, after[active].epoch);
      // Settled, the standby refuses app writes whichever way the crash went.
      assert.equal(after[standby].fenced, true);

      const onActive = new Set((await pair[active].admin`select id from public.items`).map((r) => r.id as string));
      assert.deepEqual(
        report.acknowledged.filter((id) => !onActive.has(id)),
        [],
      );
      assert.deepEqual(report.otherErrors, []);
      const app = postgres(pair.urls[active], { max: 1, onnotice: () => {} });
      await app`insert into public.items (id, writer) values (${`after-${step}`}, 99)`;
      await app.end();
      if (!switched) {
        const logs = JSON.parse(await (await t.request("/spillway/logs?limit=20")).text());
        assert.ok(
          logs.events.some((e: any) => e.kind === "switch.rolled_back"),
          "the roll-back is told",
        );
      }
    });
  }
});
