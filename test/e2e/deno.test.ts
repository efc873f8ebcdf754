import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startTestPair, type TestPair } from "../support/postgres.ts";
import { run, type Child } from "../support/process.ts";
import { freePort } from "../../cli/server.ts";
import { ADMIN_TOKEN } from "../support/app.ts";
import { addRows, loadFixture } from "../support/fixture.ts";
import { fingerprint } from "../support/compare.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
let pair: TestPair;
let deno: Child;
let base: string;

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  deno = run(
    `${root}node_modules/.bin/deno`,
    ["run", "--allow-net", "--allow-env", "--allow-read", "--config", "supabase/functions/spillway/deno.json", "supabase/functions/spillway/index.ts"],
    { SPILLWAY_PRIMARY_DB_URL: pair.urls.primary, SPILLWAY_SECONDARY_DB_URL: pair.urls.secondary, SPILLWAY_ADMIN_TOKEN: ADMIN_TOKEN, PORT: String(port), NO_COLOR: "1" },
    root,
  );
  await deno.waitFor(/Listening on/, 180_000);
});

after(async () => {
  deno?.proc.kill("SIGTERM");
  await deno?.exited;
  await pair?.destroy();
});

test("the Edge entry runs under real Deno and serves /spillway/status", async () => {
  const res = await fetch(`${base}/spillway/status`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(res.status, 200);
  const s = await res.json() as any;
  assert.equal(s.active, "primary");
  assert.equal(s.projects.primary.reachable, true);
  assert.equal(s.projects.secondary.reachable, true);
  assert.ok(s.projects.primary.usedBytes > 0);
});

test("under Deno, admin endpoints still want the token and /active is public", async () => {
  assert.equal((await fetch(`${base}/spillway/status`)).status, 401);
  const active = await (await fetch(`${base}/spillway/active`)).json() as any;
  assert.equal(active.active, "primary");
  assert.ok(!deno.output().includes(pair.primary.password));
});

test("under Deno, a full backup and then an incremental one leave both sides equal", async () => {
  const backup = async (mode: string) => {
    const res = await fetch(`${base}/spillway/force-backup`, {
      method: "POST", headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" }, body: JSON.stringify({ mode, verify: true }),
    });
    const body = await res.json() as any;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.run.status, "succeeded");
    return body.run;
  };
  assert.equal((await backup("full")).kind, "full");
  // Changes decoded from the active's stream (text in several scripts included) by the Deno runtime.
  await addRows(pair);
  await pair.primary.admin`update public.employees set name = name || ' — ünïcödé 名前' where id % 2 = 0`;
  const run = await backup("incremental");
  assert.equal(run.kind, "incremental");
  assert.ok(run.rows > 0);
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
});
