import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { freePort } from "../../cli/server.ts";
import { type Child, run } from "../support/process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), "spillway-demo-"));
let child: Child | undefined;

after(async () => {
  child?.signalGroup("SIGTERM");
  await child?.exited;
  rmSync(dataDir, { recursive: true, force: true });
});

test("npm start -- --demo: a backup at 85 %, the switch at 90 % within about two minutes, and the writer carries on with no failed write", async () => {
  const port = await freePort();
  child = run(
    "npm",
    ["start", "--silent", "--", "--demo"],
    { PORT: String(port), SPILLWAY_DATA_DIR: dataDir, SPILLWAY_TICK_SECONDS: undefined },
    root,
  );
  const token = (await child.waitFor(/Token:\s+(\S+)/, 60_000))[1]!;
  await child.waitFor(/Demo: watch the widget/, 30_000);
  const started = Date.now();
  const switched = await child.waitFor(
    /Demo writer: now writing to secondary \(epoch 2\); (\d+) writes so far, (\d+) held by the fence and sent again, (\d+) failed/,
    180_000,
  );
  const took = (Date.now() - started) / 1000;
  assert.ok(took < 150, `the switch came ${took} s after the demo started`);
  assert.equal(switched[3], "0", "no write failed before the switch");

  const api = async (path: string) =>
    (await fetch(`http://localhost:${port}/spillway${path}`, { headers: { Authorization: `Bearer ${token}` } })).json() as Promise<any>;
  const status = await api("/status");
  assert.equal(status.active, "secondary");
  assert.equal(status.epoch, 2);
  const { events } = await api("/logs?limit=100");
  const kinds = events.map((e: any) => e.kind).reverse();
  const phases = events
    .filter((e: any) => e.kind === "policy.phase")
    .map((e: any) => e.message)
    .reverse();
  assert.match(phases[0], /primary moved from normal to backup/);
  assert.match(phases[1], /primary moved from backup to critical/);
  const backup = kinds.indexOf("backup.succeeded");
  assert.ok(backup >= 0 && backup < kinds.indexOf("switch.started"), kinds.join(", "));
  assert.ok(kinds.includes("switch.completed"));

  // The writer goes on against the new active; stopping the demo prints its report.
  const before = Number(switched[1]);
  const until = Date.now() + 20_000;
  while ((await api("/status")).projects.secondary.usedBytes <= status.projects.secondary.usedBytes && Date.now() < until)
    await new Promise((r) => setTimeout(r, 500));
  child.signalGroup("SIGTERM");
  const done = await child.waitFor(/Demo writer: done, (\d+) writes \((\d+) held by the fence and sent again\), (\d+) failed/, 30_000);
  assert.ok(Number(done[1]) > before, `writes went on after the switch (${before} → ${done[1]})`);
  assert.equal(done[3], "0");
  assert.doesNotMatch(child.output(), /a write failed/);
  await child.exited;
});
