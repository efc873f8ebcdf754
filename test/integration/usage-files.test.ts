import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { freePort, type RunningServer, startServer } from "../../cli/server.ts";
import { ADMIN_TOKEN } from "../support/app.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { ITEMS_SCHEMA } from "../support/writers.ts";

let pair: TestPair;
let server: RunningServer;
const dataDir = mkdtempSync(join(tmpdir(), "spillway-usage-files-"));

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, ITEMS_SCHEMA);
  await pair.primary.admin`insert into public.items (id, writer) select 'item ' || g, 0 from generate_series(1, 100) g`;
  server = await startServer({
    dbUrls: pair.urls,
    adminToken: ADMIN_TOKEN,
    cronToken: null,
    corsOrigins: ["*"],
    port: await freePort(),
    dataDir,
    tickSeconds: 0.3,
  });
});
after(async () => {
  await server?.close();
  await pair?.destroy();
  rmSync(dataDir, { recursive: true, force: true });
});

function read(name: "primary" | "secondary"): any {
  return JSON.parse(readFileSync(join(dataDir, `usage-${name}.json`), "utf8"));
}

async function admin(path: string, body: unknown = {}) {
  const res = await fetch(`${server.url}/spillway${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
}

test("the usage files exist after a tick, always parse, and follow a switch", async () => {
  for (const name of ["primary", "secondary"] as const)
    assert.ok(existsSync(join(dataDir, `usage-${name}.json`)), `usage-${name}.json after the first tick`);
  const primary = read("primary");
  assert.equal(primary.project, "primary");
  assert.equal(primary.role, "active");
  assert.equal(primary.epoch, 1);
  assert.equal(primary.phase, "normal");
  assert.equal(primary.reachable, true);
  assert.ok(primary.usedBytes > 0 && primary.quotaBytes === 524288000);
  assert.ok(Math.abs(primary.usage - primary.usedBytes / primary.quotaBytes) < 1e-9);
  assert.ok(primary.samples.length >= 1 && primary.samples.at(-1).usedBytes > 0);
  assert.equal(read("secondary").role, "standby");

  // A reader tailing the files while ticks rewrite them never sees half a file.
  let reads = 0;
  let reading = true;
  const reader = (async () => {
    while (reading) {
      read("primary");
      read("secondary");
      reads++;
      await new Promise((r) => setImmediate(r));
    }
  })();
  try {
    await admin("/force-backup", { mode: "full" });
    await admin("/force-switch");
    const until = Date.now() + 15_000;
    while (read("secondary").role !== "active" || read("primary").role !== "standby") {
      assert.ok(Date.now() < until, "the files follow the switch within a few ticks");
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    reading = false;
    await reader;
  }
  assert.ok(reads > 10);
  assert.equal(read("secondary").epoch, 2);
  assert.ok(read("secondary").samples.length >= 1);
  assert.deepEqual(
    readdirSync(dataDir).filter((f) => f.endsWith(".tmp")),
    [],
    "no temporary file is left behind",
  );
});
