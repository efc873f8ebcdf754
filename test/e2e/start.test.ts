import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort } from "../../cli/server.ts";
import { onStartedProject } from "../support/local-start.ts";
import { type Child, run } from "../support/process.ts";

const exec = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), "spillway-start-"));

function npmStart(port: number, env: Record<string, string> = {}): Child {
  return run("npm", ["start", "--silent"], { PORT: String(port), SPILLWAY_DATA_DIR: dataDir, SPILLWAY_TICK_SECONDS: "1", ...env }, root);
}

async function cli(args: string[], env: Record<string, string>): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await exec(join(root, "cli/bin.js"), args, { cwd: root, env: { ...process.env, ...env } });
    return { code: 0, out: stdout + stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, out: err.stdout + err.stderr };
  }
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

describe("npm start on two embedded Postgres servers", () => {
  let port: number;
  let child: Child;
  let token: string;
  let firstOutput = "";

  before(async () => {
    port = await freePort();
    child = npmStart(port);
    // It prints the token once both servers are up and migrated; waitFor fails after 60 s.
    token = (await child.waitFor(/Token:\s+(\S+)/, 60_000))[1]!;
  });

  after(async () => {
    child?.signalGroup("SIGTERM");
    await child?.exited;
    rmSync(dataDir, { recursive: true, force: true });
  });

  const api = async (path: string) =>
    (await fetch(`http://localhost:${port}/spillway${path}`, { headers: { Authorization: `Bearer ${token}` } })).json() as Promise<any>;
  const customers = async (name: "primary" | "secondary") =>
    (await onStartedProject(child, dataDir, name, (sql) => sql<{ n: number }[]>`select count(*)::int as n from public.customers`))[0]!.n;

  test("prints the URLs and serves status with both projects reachable", async () => {
    firstOutput = child.output();
    assert.match(firstOutput, new RegExp(`Widget:\\s+http://localhost:${port}/`));
    assert.match(firstOutput, new RegExp(`API:\\s+http://localhost:${port}/spillway/status`));
    const res = await fetch(`http://localhost:${port}/spillway/status`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    const s = (await res.json()) as any;
    for (const name of ["primary", "secondary"]) {
      assert.equal(s.projects[name].reachable, true);
      assert.ok(s.projects[name].usedBytes > 0);
    }
    const widget = await fetch(`http://localhost:${port}/`);
    assert.equal(widget.status, 200);
    assert.match(widget.headers.get("content-type") ?? "", /text\/html/);
  });

  test("the demo app is on both projects, with data on the primary", async () => {
    const s = (await (
      await fetch(`http://localhost:${port}/spillway/status`, { headers: { Authorization: `Bearer ${token}` } })
    ).json()) as any;
    const tables = (p: string) => s.projects[p].largestTables.map((t: any) => `${t.schema}.${t.table}`);
    assert.ok(tables("primary").includes("public.customers"));
  });

  test("ticks store samples; events go to spillway.log as JSON lines, without secrets", async () => {
    await new Promise((r) => setTimeout(r, 2500));
    const s = (await (
      await fetch(`http://localhost:${port}/spillway/status`, { headers: { Authorization: `Bearer ${token}` } })
    ).json()) as any;
    assert.ok(s.samples.primary.length >= 2, `samples: ${s.samples.primary.length}`);
    const lines = readFileSync(join(dataDir, "spillway.log"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.ok(lines.some((e) => e.kind === "server.started"));
    const secrets = JSON.parse(readFileSync(join(dataDir, "secrets.json"), "utf8"));
    const everything = readFileSync(join(dataDir, "spillway.log"), "utf8") + child.output();
    assert.ok(!everything.includes(secrets.password) && !everything.includes(secrets.adminPassword));
  });

  test("spillway status and logs talk to it; --json for scripts", async () => {
    const env = { SPILLWAY_URL: `http://localhost:${port}`, SPILLWAY_ADMIN_TOKEN: token };
    const status = await cli(["status"], env);
    assert.equal(status.code, 0, status.out);
    assert.match(status.out, /^health: (OK|DEGRADED|CRITICAL)\n/, "the health comes first");
    assert.match(status.out, /primary\s+ACTIVE/);
    assert.match(status.out, /secondary\s+STANDBY/);
    const json = await cli(["status", "--json"], env);
    assert.equal(JSON.parse(json.out).active, "primary");
    const logs = await cli(["logs", "--json", "--limit", "5"], env);
    assert.equal(logs.code, 0);
    assert.ok(Array.isArray(JSON.parse(logs.out)));
    const bad = await cli(["logs", "--level", "loud"], env);
    assert.equal(bad.code, 2);
    assert.equal(bad.out.trim().split("\n").length, 1);
    assert.match(bad.out, /level/);
    const wrong = await cli(["status"], { ...env, SPILLWAY_ADMIN_TOKEN: "not-the-token-at-all" });
    assert.equal(wrong.code, 1);
    assert.match(wrong.out, /^spillway: UNAUTHORIZED: .*refused the admin token; set SPILLWAY_ADMIN_TOKEN/);
    // A malformed SPILLWAY_URL is a configuration error (that it wins over PORT: test/unit/cli-arguments).
    const malformed = await cli(["status"], { ...env, SPILLWAY_URL: `localhost:${port}` });
    assert.equal(malformed.code, 2);
    assert.match(malformed.out, /^spillway: SPILLWAY_URL must be the server's http\(s\) URL/);
    const usage = await cli(["stauts"], env);
    assert.equal(usage.code, 2);
    const backup = await cli(["backup", "--verify"], env);
    assert.equal(backup.code, 0, backup.out);
    assert.match(backup.out, /^full backup succeeded: 2 tables, \d+ rows/);
    const verify = await cli(["verify"], env);
    assert.equal(verify.code, 0, verify.out);
    assert.match(verify.out, /ok\s+public\.customers\s+200 rows on primary, 200 on secondary/);
    const badFlag = await cli(["backup", "--fast"], env);
    assert.equal(badFlag.code, 2);
    const unconfirmed = await cli(["switch"], env);
    assert.equal(unconfirmed.code, 2);
    assert.match(unconfirmed.out, /needs --yes when it is not run on a terminal/);
    const badTarget = await cli(["switch", "--to", "tertiary", "--yes"], env);
    assert.equal(badTarget.code, 2);
    const sw = await cli(["switch", "--yes"], env);
    assert.equal(sw.code, 0, sw.out);
    assert.match(sw.out, /^secondary is now active \(epoch 2\); app writes were blocked for \d+ ms/);
    const back = await cli(["switch", "--to", "primary", "--yes", "--json"], env);
    assert.equal(back.code, 0, back.out);
    assert.equal(JSON.parse(back.out).epoch, 3);
  });

  test("a second start on the same port fails with one readable line", async () => {
    const second = npmStart(port);
    const code = await second.exited;
    assert.notEqual(code, 0);
    const lines = second
      .output()
      .trim()
      .split("\n")
      .filter((l) => l.startsWith("spillway:"));
    assert.deepEqual(lines, [`spillway: port ${port} is in use; set PORT to a free port`]);
    assert.ok(!second.output().includes("    at "), "no stack trace");
  });

  test("Ctrl-C stops everything it started; after a switch, a second start reuses the data as it was, seeding nothing", async () => {
    const env = { SPILLWAY_URL: `http://localhost:${port}`, SPILLWAY_ADMIN_TOKEN: token };
    await fetch(`http://localhost:${port}/spillway/config`, {
      method: "PATCH",
      headers: { Authorization: `Bearer ${token}` },
      body: JSON.stringify({ autoSwitch: false }),
    });
    const sw = await fetch(`${env.SPILLWAY_URL}/spillway/force-switch`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      body: "{}",
    });
    assert.equal(sw.status, 200);
    assert.equal(((await sw.json()) as any).switch.epoch, 4);
    child.signalGroup("SIGINT");
    await child.exited;
    assert.match(child.output(), /Stopping/);
    assert.deepEqual(postgresProcesses(), []);

    // The command behind `npm start`, signalled alone, as a service manager sends SIGTERM.
    child = run(process.execPath, ["--import", "tsx", "cli/main.ts", "start"], { PORT: String(port), SPILLWAY_DATA_DIR: dataDir }, root);
    const again = (await child.waitFor(/Token:\s+(\S+)/, 60_000))[1];
    assert.equal(again, token);
    const config = (await (
      await fetch(`http://localhost:${port}/spillway/config`, { headers: { Authorization: `Bearer ${token}` } })
    ).json()) as any;
    assert.equal(config.settings.autoSwitch, false);
    const status = await api("/status");
    assert.deepEqual([status.active, status.epoch], ["secondary", 4]);
    assert.equal(await customers("primary"), 200, "no demo rows seeded into the fenced primary");
    child.proc.kill("SIGTERM");
    await child.exited;
    assert.equal(child.output().match(/Stopping/g)?.length, 1);
    assert.deepEqual(postgresProcesses(), []);
  });
});

describe("npm start with database URLs", () => {
  test("an unreachable URL gives one readable line, no password, and a non-zero exit", async () => {
    const port = await freePort();
    const dead = await freePort();
    const child = npmStart(port, {
      SPILLWAY_PRIMARY_DB_URL: `postgres://postgres:hunter2-secret@127.0.0.1:${dead}/postgres`,
      SPILLWAY_SECONDARY_DB_URL: `postgres://postgres:hunter2-secret@127.0.0.1:${dead}/other`,
      SPILLWAY_ADMIN_TOKEN: "an-admin-token-long-enough",
    });
    assert.notEqual(await child.exited, 0);
    const lines = child.output().trim().split("\n").filter(Boolean);
    assert.equal(lines.length, 1, child.output());
    assert.match(lines[0]!, /^spillway: cannot reach the primary database/);
    assert.ok(!child.output().includes("hunter2-secret"));
  });

  test("bad configuration lists each problem at once, before any connection, and exits 2", async () => {
    const child = npmStart(await freePort(), {
      SPILLWAY_PRIMARY_DB_URL: "postgres://postgres:%zz@127.0.0.1:9/postgres",
      SPILLWAY_SECONDARY_DB_URL: "postgres://postgres:pw@127.0.0.1:9/other",
      SPILLWAY_ADMIN_TOKEN: "",
      PORT: "http",
    });
    assert.equal(await child.exited, 2);
    assert.deepEqual(
      child
        .output()
        .trim()
        .split("\n")
        .map((l) => l.split(" ")[1]),
      ["SPILLWAY_PRIMARY_DB_URL", "SPILLWAY_ADMIN_TOKEN", "PORT"],
      child.output(),
    );
    assert.match(child.output(), /spillway: SPILLWAY_PRIMARY_DB_URL must be a postgres:\/\/ or postgresql:\/\/ URL/);
    assert.match(child.output(), /spillway: PORT must be a number/);
    assert.doesNotMatch(child.output(), /cannot reach|%zz/);
  });
});
