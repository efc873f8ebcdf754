import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort } from "../../cli/server.ts";
import { onStartedProject } from "../support/local-start.ts";
import { type Child, run } from "../support/process.ts";

const exec = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), "spillway-restart-"));

function npmStart(port: number): Child {
  return run("npm", ["start", "--silent"], { PORT: String(port), SPILLWAY_DATA_DIR: dataDir, SPILLWAY_TICK_SECONDS: "1" }, root);
}

function postgresProcesses(): string[] {
  try {
    return execFileSync("pgrep", ["-af", `postgres -D ${dataDir}`])
      .toString()
      .trim()
      .split("\n")
      .filter(Boolean);
  } catch {
    return [];
  }
}

describe("npm start restarts on whatever state it left", () => {
  let port: number;
  let child: Child;
  let token: string;

  after(async () => {
    child?.signalGroup("SIGTERM");
    await child?.exited;
    rmSync(dataDir, { recursive: true, force: true });
  });

  const api = async (path: string, body?: unknown) => {
    const res = await fetch(`http://localhost:${port}/spillway${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: { Authorization: `Bearer ${token}` },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as any };
  };
  const customers = async (name: "primary" | "secondary") =>
    (await onStartedProject(child, dataDir, name, (sql) => sql<{ n: number }[]>`select count(*)::int as n from public.customers`))[0]!.n;

  test("after a switch and a failback, and after a kill in the middle of a backup", async () => {
    port = await freePort();
    child = npmStart(port);
    token = (await child.waitFor(/Token:\s+(\S+)/, 60_000))[1]!;
    await child.waitFor(/Press Ctrl-C to stop/, 30_000);
    assert.equal((await api("/force-backup", { mode: "full" })).status, 200);
    assert.equal((await api("/force-switch", {})).body.switch.epoch, 2);
    assert.equal((await api("/force-switch", { to: "primary" })).body.switch.epoch, 3);
    child.signalGroup("SIGINT");
    await child.exited;

    child = npmStart(port);
    await child.waitFor(/Press Ctrl-C to stop/, 60_000);
    const status = (await api("/status")).body;
    assert.deepEqual([status.active, status.epoch], ["primary", 3]);
    assert.equal(await customers("primary"), 200, "no demo rows seeded again");
    // Enough rows that a full backup takes a while.
    await onStartedProject(child, dataDir, "primary", (sql) =>
      sql.begin(
        (tx) => tx`insert into public.orders (customer_id, total_cents, items)
          select 1, g, jsonb_build_array(md5(g::text) || repeat(md5((g * 7)::text), 8)) from generate_series(1, 60000) g`,
      ),
    );
    void fetch(`http://localhost:${port}/spillway/force-backup`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      body: JSON.stringify({ mode: "full" }),
    }).catch(() => undefined);
    const until = Date.now() + 30_000;
    while ((await api("/status")).body.lastBackup?.status !== "running") {
      assert.ok(Date.now() < until, "the backup never showed as running");
      await new Promise((r) => setTimeout(r, 50));
    }
    child.signalGroup("SIGKILL");
    await child.exited;

    child = npmStart(port);
    await child.waitFor(/Press Ctrl-C to stop/, 90_000);
    assert.doesNotMatch(child.output(), /spillway: /, "no error at start");
    assert.equal((await api("/status")).body.active, "primary");
    // At once: the lease the killed process held does not make the operator wait for its expiry.
    const { stdout } = await exec(join(root, "cli/bin.js"), ["backup", "--full", "--verify"], {
      cwd: root,
      env: { ...process.env, SPILLWAY_URL: `http://localhost:${port}`, SPILLWAY_ADMIN_TOKEN: token },
    });
    assert.match(stdout, /^full backup succeeded/);
    assert.equal(await customers("secondary"), 200);
    await onStartedProject(
      child,
      dataDir,
      "primary",
      (sql) => sql`insert into public.customers (email, name) values ('after@example.com', 'After')`,
    );
    assert.equal(await customers("primary"), 201, "the app keeps writing on the active");
    child.signalGroup("SIGINT");
    await child.exited;
    assert.deepEqual(postgresProcesses(), []);
  });
});
