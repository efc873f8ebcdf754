import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort, type RunningServer, startServer } from "../../cli/server.ts";
import { ADMIN_TOKEN } from "../support/app.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";

const exec = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
let pair: TestPair;
let server: RunningServer;

before(async () => {
  pair = await startTestPair();
  server = await startServer({
    dbUrls: pair.urls,
    adminToken: ADMIN_TOKEN,
    cronToken: null,
    corsOrigins: ["*"],
    port: await freePort(),
    dataDir: `${pair.primary.dir}/../data-dir`,
    tickSeconds: 3600,
  });
});
after(async () => {
  await server?.close();
  await pair?.destroy();
});

// The installed command, as an operator runs it.
async function cli(args: string[], env: Record<string, string>): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await exec(join(root, "cli/bin.js"), args, { cwd: root, env: { ...process.env, ...env } });
    return { code: 0, out: stdout + stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, out: err.stdout + err.stderr };
  }
}

test("spillway config shows the settings and sets them, field by field, asking for --confirm where a change acts at once", async () => {
  const env = { SPILLWAY_URL: server.url, SPILLWAY_ADMIN_TOKEN: ADMIN_TOKEN };
  const shown = await cli(["config"], env);
  assert.equal(shown.code, 0, shown.out);
  assert.match(shown.out, /^backupThreshold = 0\.85$/m);
  assert.match(shown.out, /^quotaBytes\.primary = 524288000 {2}\(500\.0 MB\)$/m);
  const set = await cli(["config", "set", "backupThreshold=0.85", "autoBackup=true"], env);
  assert.equal(set.code, 0, set.out);
  assert.equal(set.out.trim(), "saved: backupThreshold, autoBackup");
  const bad = await cli(["config", "set", "backupThreshold=high", "strategy=x", "nonsense=1"], env);
  assert.equal(bad.code, 2);
  assert.deepEqual(bad.out.trim().split("\n").sort(), [
    "spillway: backupThreshold must be a number",
    "spillway: nonsense is not a setting",
    'spillway: strategy must be "auto", "copy" or "fdw"',
  ]);
  const unconfirmed = await cli(["config", "set", "quotaBytes.secondary=100"], env);
  assert.equal(unconfirmed.code, 1);
  assert.match(unconfirmed.out, /^spillway: quotaBytes\.secondary \(100 bytes\) is below what secondary uses now/m);
  assert.match(unconfirmed.out, /run again with --confirm/);
  const confirmed = await cli(["config", "set", "quotaBytes.secondary=100", "--confirm", "--json"], env);
  assert.equal(confirmed.code, 0, confirmed.out);
  assert.equal(JSON.parse(confirmed.out).quotaBytes.secondary, 100);
  const [event] = await pair.primary.admin`select data from spillway.events where kind = 'config.changed' order by at desc limit 1`;
  assert.match(event!.data.confirmed[0], /quotaBytes\.secondary \(100 bytes\) is below/);
});
