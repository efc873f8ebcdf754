import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import postgres from "postgres";
import { ADMIN_TOKEN } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { EDGE_LIMITS, type EdgeEntry, startEdgeEntry } from "../support/edge.ts";
import { addRows, loadFixture } from "../support/fixture.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";
import type { Child } from "../support/process.ts";

let pair: TestPair;
let edge: EdgeEntry;
let deno: Child;
let base: string;
const cpuPerRequest: number[] = [];

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  edge = await startEdgeEntry(pair.urls, { SPILLWAY_ADMIN_TOKEN: ADMIN_TOKEN });
  deno = edge.deno;
  base = edge.base;
});

after(async () => {
  await edge?.stop();
  await pair?.destroy();
});

test("the Edge entry runs under real Deno and serves /spillway/status", async () => {
  const res = await fetch(`${base}/spillway/status`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  const s = (await res.json()) as any;
  assert.equal(res.status, 200, JSON.stringify(s));
  assert.equal(s.active, "primary");
  assert.equal(s.projects.primary.reachable, true, JSON.stringify(s.projects.primary));
  assert.equal(s.projects.secondary.reachable, true, JSON.stringify(s.projects.secondary));
  assert.ok(s.projects.primary.usedBytes > 0);
});

test("under Deno, admin endpoints still want the token and /active is public", async () => {
  assert.equal((await fetch(`${base}/spillway/status`)).status, 401);
  const active = (await (await fetch(`${base}/spillway/active`)).json()) as any;
  assert.equal(active.active, "primary");
  assert.ok(!deno.output().includes(pair.primary.password));
});

// Each admin call through the entry under the Edge Function's limits: an answer within the
// 150 s wall clock (the harness fails it otherwise) and within 2 s of CPU.
async function call(path: string, body: unknown): Promise<{ status: number; body: any }> {
  const answer = await edge.request(`/spillway${path}`, {
    method: path === "/config" ? "PATCH" : "POST",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  cpuPerRequest.push(answer.cpuSeconds);
  assert.ok(
    answer.cpuSeconds <= EDGE_LIMITS.cpuSeconds,
    `${path} used ${answer.cpuSeconds.toFixed(2)} s of CPU, over the Edge Function's ${EDGE_LIMITS.cpuSeconds} s`,
  );
  return { status: answer.status, body: answer.body };
}

async function backup(mode: string): Promise<any> {
  const r = await call("/force-backup", { mode, verify: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.run.status, "succeeded");
  return r.body.run;
}

test("under Deno, full backups with either strategy (auto is fdw here) and then an incremental one leave both sides equal", async () => {
  const auto = await backup("full");
  assert.deepEqual([auto.kind, auto.strategy], ["full", "fdw"]);
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  assert.equal((await call("/config", { strategy: "copy" })).status, 200);
  const copy = await backup("full");
  assert.deepEqual([copy.kind, copy.strategy], ["full", "copy"]);
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  // Changes decoded from the active's stream (text in several scripts included) by the Deno runtime.
  await addRows(pair);
  await pair.primary.admin`update public.employees set name = name || ' — ünïcödé 名前' where id % 2 = 0`;
  const run = await backup("incremental");
  assert.equal(run.kind, "incremental");
  assert.ok(run.rows > 0);
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
});

test("under Deno, a switch and a switch back; the app keeps writing on the active", async () => {
  assert.equal((await call("/config", { strategy: "auto" })).status, 200);
  // Sequence positions travel with full backups: the app's next ids on the secondary follow the primary's.
  await backup("full");
  const away = await call("/force-switch", { to: "secondary" });
  assert.equal(away.status, 200, JSON.stringify(away.body));
  assert.deepEqual([away.body.switch.to, away.body.switch.epoch], ["secondary", 2]);
  const app = postgres(pair.urls.secondary, { max: 1, onnotice: () => {} });
  try {
    await app`insert into public.projects (lead_id, title) values (1, 'written on the secondary')`;
  } finally {
    await app.end();
  }
  const back = await call("/force-switch", { to: "primary" });
  assert.equal(back.status, 200, JSON.stringify(back.body));
  assert.deepEqual([back.body.switch.to, back.body.switch.epoch], ["primary", 3]);
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  const app2 = postgres(pair.urls.primary, { max: 1, onnotice: () => {} });
  try {
    const [row] = await app2<
      { id: string }[]
    >`insert into public.accounts (owner, balance) values ('after the switch back', 1) returning id`;
    assert.ok(Number(row!.id) > 0);
  } finally {
    await app2.end();
  }
});

test("the entry ran within the Edge Function's memory cap, and every call within its CPU time", () => {
  // Deno ran with V8's heap capped at 256 MB; its whole resident memory stayed under the cap too.
  assert.match(deno.proc.spawnargs.join(" "), /--v8-flags=--max-old-space-size=256/);
  const peak = edge.peakRssMb();
  assert.ok(peak > 0 && peak <= EDGE_LIMITS.memoryMb, `peak resident memory ${peak.toFixed(0)} MB`);
  assert.ok(cpuPerRequest.length >= 8, `only ${cpuPerRequest.length} calls measured`);
});
