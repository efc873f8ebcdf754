import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { freePort } from "../../cli/server.ts";
import { ADMIN_TOKEN } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { type Child, run } from "../support/process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
let pair: TestPair;
const servers: { child: Child; url: string }[] = [];

// A real Spillway server process against the pair (no scheduler ticks of its own).
async function startSpillway(): Promise<string> {
  const port = await freePort();
  const child = run(
    process.execPath,
    ["--import", "tsx", "cli/main.ts", "start"],
    {
      SPILLWAY_PRIMARY_DB_URL: pair.urls.primary,
      SPILLWAY_SECONDARY_DB_URL: pair.urls.secondary,
      SPILLWAY_ADMIN_TOKEN: ADMIN_TOKEN,
      PORT: String(port),
      SPILLWAY_TICK_SECONDS: "3600",
      SPILLWAY_DATA_DIR: `${pair.primary.dir}/../spillway-${port}`,
    },
    root,
  );
  await child.waitFor(/Spillway is running/, 60_000);
  const url = `http://127.0.0.1:${port}`;
  servers.push({ child, url });
  return url;
}

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, `create table public.bulk (id bigint primary key, body text not null)`);
  await pair.primary.admin`insert into public.bulk select g, repeat(md5(g::text), 10) from generate_series(1, 150000) g`;
});
after(async () => {
  for (const s of servers) {
    s.child.proc.kill("SIGTERM");
    await s.child.exited;
  }
  await pair?.destroy();
});

async function call(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}/spillway${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: JSON.parse(await res.text()) };
}

async function oneActive(): Promise<string> {
  const rows = await Promise.all(
    [pair.primary, pair.secondary].map(async (s) => (await s.admin`select active, epoch::int from spillway.state`)[0]!),
  );
  const best = [...rows].sort((a, b) => b.epoch - a.epoch)[0]!;
  assert.ok(
    rows.every((r) => r.epoch < best.epoch || r.active === best.active),
    "one active project by highest epoch",
  );
  return best.active as string;
}

async function whenUp(which: "primary" | "secondary"): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if (
      await pair[which].admin`select 1`.then(
        () => true,
        () => false,
      )
    )
      return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("faults, against a real server process", () => {
  let base: string;
  before(async () => {
    base = await startSpillway();
  });

  for (const which of ["secondary", "primary"] as const) {
    test(`the ${which === "primary" ? "active" : "standby"} stopped in the middle of a backup`, async () => {
      const running = call(base, "POST", "/force-backup", { mode: "full" });
      // Stopped once the run is recorded as running: in the middle of the copy, after the checks before it.
      for (let i = 0; i < 500; i++) {
        const counts = await Promise.all(
          [pair.primary, pair.secondary].map(
            async (s) => (await s.admin`select count(*)::int as n from spillway.runs where status = 'running'`)[0]!.n,
          ),
        );
        if (counts.some((n) => n > 0)) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await pair[which].stop();
      const r = await running;
      assert.ok(r.status === 503 || r.status === 500, JSON.stringify(r.body));
      assert.match(r.body.error.message, new RegExp(`${which}|terminat|connection`));
      await pair[which].restart();
      await whenUp(which);
      const logs = await call(base, "GET", "/logs?level=error&limit=5");
      assert.ok(
        logs.body.events.some((e: any) => e.kind === "backup.failed"),
        "the events tell what happened",
      );
      // Spillway's own connections may meet the server still restarting: the documented 503
      // until they reconnect, as an operator would see and try again.
      let next = await call(base, "POST", "/force-backup", { mode: "full", verify: true });
      for (let i = 0; i < 30 && next.status === 503; i++) {
        await new Promise((r) => setTimeout(r, 1000));
        next = await call(base, "POST", "/force-backup", { mode: "full", verify: true });
      }
      const said = next.status === 200 ? "" : JSON.stringify((await call(base, "GET", "/logs?level=error&limit=3")).body.events);
      assert.equal(next.status, 200, `${JSON.stringify(next.body)} ${said}`);
      assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
      assert.equal(await oneActive(), "primary");
      assert.equal((await call(base, "GET", "/health")).status, 200, "the server is still up");
    });
  }

  test("two servers ticking at once against the same pair: one backup, never two", async () => {
    const other = await startSpillway();
    const [size] = await pair.primary.admin`select pg_database_size('postgres')::int8 as b`;
    await call(base, "PATCH", "/config", { quotaBytes: { primary: Math.floor(Number(size!.b) / 0.87), secondary: 1073741824 } });
    const before = Number((await pair.secondary.admin`select count(*)::int as n from spillway.runs`)[0]!.n);
    // The tick that takes the lease waits, before recording its run, until the other five
    // have answered: they all meet it held, however fast a backup has become.
    const lock = await pair.secondary.admin.reserve();
    await lock`begin`;
    await lock`lock table spillway.runs in share mode`;
    const pending = Array.from({ length: 6 }, (_, i) => call(i % 2 ? other : base, "POST", "/tick"));
    let answered = 0;
    // Should two ticks ever hold the lease at once, both would wait here: let them go after a
    // while, and the count below tells.
    await new Promise<void>((resolve) => {
      for (const p of pending) void p.then(() => ++answered === 5 && resolve());
      setTimeout(resolve, 30_000).unref();
    });
    await lock`commit`;
    lock.release();
    const results = await Promise.all(pending);
    for (const r of results) assert.equal(r.status, 200);
    const actions = results.map((r) => r.body.action);
    assert.equal(actions.filter((a) => a === "backup").length, 1, actions.join(","));
    assert.ok(actions.includes("busy"), actions.join(","));
    assert.equal(Number((await pair.secondary.admin`select count(*)::int as n from spillway.runs`)[0]!.n), before + 1);
    // The phase is remembered: later ticks only bring the standby up to date, never copy it whole again.
    for (const server of [base, other]) {
      const again = await call(server, "POST", "/tick");
      assert.equal(again.body.action, "backup", JSON.stringify(again.body));
      assert.equal(again.body.run.kind, "incremental");
    }
    assert.equal(await oneActive(), "primary");
  });
});
