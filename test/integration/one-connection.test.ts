import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import postgres from "postgres";
import { type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { addRows, loadFixture } from "../support/fixture.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";

// A run must never wait for a connection it holds itself: with one connection per project,
// such a wait never ends. Each call here fails after a minute instead.
let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  t = await testApp(pair, { max: 1, runtime: "edge" });
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function call(path: string, body: unknown): Promise<{ status: number; body: any }> {
  const answer = t
    .request(`/spillway${path}`, { method: path === "/config" ? "PATCH" : "POST", body: JSON.stringify(body) })
    .then(async (res) => ({ status: res.status, body: JSON.parse(await res.text()) }));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${path} did not answer within 60 s`)), 60_000);
  });
  try {
    return await Promise.race([answer, late]);
  } finally {
    clearTimeout(timer);
  }
}

test("with one connection per project, full backups (fdw, then copy), an incremental one and a switch and back all finish", async () => {
  for (const strategy of ["auto", "copy"] as const) {
    assert.equal((await call("/config", { strategy })).status, 200);
    const r = await call("/force-backup", { mode: "full", verify: true });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.run.strategy, strategy === "auto" ? "fdw" : "copy");
  }
  await addRows(pair);
  const inc = await call("/force-backup", { mode: "incremental" });
  assert.equal(inc.status, 200, JSON.stringify(inc.body));
  assert.ok(inc.body.run.rows > 0);
  await call("/force-backup", { mode: "full" });
  for (const [to, epoch] of [
    ["secondary", 2],
    ["primary", 3],
  ] as const) {
    const r = await call("/force-switch", { to });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.switch.epoch, epoch);
  }
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  const app = postgres(pair.urls.primary, { max: 1, onnotice: () => {} });
  try {
    const [row] = await app<{ id: string }[]>`insert into public.accounts (owner, balance) values ('after the switches', 1) returning id`;
    assert.ok(Number(row!.id) > 0);
  } finally {
    await app.end();
  }
});
