import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { init } from "../../cli/init.ts";
import { applyMigrations, listMigrations, MIGRATIONS_DIR } from "../../cli/migrations.ts";
import { freePort, type RunningServer, startServer } from "../../cli/server.ts";
import { ADMIN_TOKEN, CRON_TOKEN } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { installNet, startNetWorker } from "../support/pg-net.ts";
import { startTestServer, systemBinDir, type TestServer } from "../support/postgres.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const major = systemBinDir().split("/").at(-2);

// pg_net cannot be installed here: the STAND-IN for pg_net (test/support/pg-net.ts) queues
// each net.http_post in net.http_request_queue and its worker sends it after commit, as the
// real extension does. Both projects run the machine's PostgreSQL with pg_cron, as hosted
// Supabase projects do; a third, plain server has no pg_cron.

/** The answer pg_net's worker stored for request `id`, once it has one (or after 10 s, null). */
async function response(server: TestServer, id: number): Promise<{ status_code: number; content: string } | null> {
  for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
    const [row] = await server.admin`select status_code, content from net._http_response where id = ${id}`;
    if (row) return row as unknown as { status_code: number; content: string };
  }
  return null;
}

/** Runs the project's own pg_cron job command as `postgres` (what pg_cron runs each minute). */
async function runJob(server: TestServer): Promise<number | null> {
  const [job] = await server.admin`select command from cron.job where jobname = 'spillway-tick'`;
  const sql = postgres(server.url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql.unsafe(`${job!.command} as id`);
    return row!.id === null ? null : Number(row!.id);
  } finally {
    await sql.end();
  }
}

describe(`the pg_cron job on the machine's PostgreSQL ${major}`, () => {
  let primary: TestServer;
  let secondary: TestServer;
  let plain: TestServer;
  let server: RunningServer;
  const workers: Array<{ close(): Promise<void> }> = [];

  before(async () => {
    assert.ok(
      existsSync(`/usr/share/postgresql/${major}/extension/pg_cron.control`),
      `pg_cron for PostgreSQL ${major} is not installed (.ci/run installs postgresql-${major}-cron)`,
    );
    const withCron = async () => {
      const db = await startTestServer({
        system: true,
        migrate: false,
        settings: { shared_preload_libraries: "pg_cron", "cron.database_name": "postgres" },
      });
      // As Supabase's dashboard does: the superuser enables pg_cron and pg_net and lets postgres use pg_cron.
      await db.admin.unsafe("create extension if not exists pg_cron; grant usage on schema cron to postgres");
      await installNet(db);
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      await applyMigrations(sql, listMigrations(MIGRATIONS_DIR));
      await sql.end();
      workers.push(startNetWorker(db));
      return db;
    };
    primary = await withCron();
    secondary = await withCron();
    plain = await startTestServer();
    server = await startServer({
      dbUrls: { primary: primary.url, secondary: secondary.url },
      adminToken: ADMIN_TOKEN,
      cronToken: CRON_TOKEN,
      corsOrigins: ["*"],
      port: await freePort(),
      dataDir: `${secondary.dir}/../spillway-data`,
      tickSeconds: 3600,
    });
  });
  after(async () => {
    await server?.close();
    for (const w of workers) await w.close();
    await primary?.destroy();
    await secondary?.destroy();
    await plain?.destroy();
  });

  test("the migration scheduled spillway-tick every minute, as postgres, on each project; none where pg_cron is absent", async () => {
    for (const db of [primary, secondary]) {
      const jobs = await db.admin`select schedule, command, username from cron.job where jobname = 'spillway-tick'`;
      assert.deepEqual([...jobs], [{ schedule: "* * * * *", command: "select spillway.call_tick()", username: "postgres" }]);
    }
    const [none] = await plain.admin`select to_regnamespace('cron') is null as absent, spillway.schedule_tick() as scheduled`;
    assert.deepEqual({ ...none }, { absent: true, scheduled: false });
  });

  test("without init the job's command warns and posts nothing", async () => {
    assert.equal(await runJob(primary), null);
    const [queued] = await primary.admin`select count(*)::int as n from net.http_request_queue`;
    assert.equal(queued!.n, 0);
  });

  test("without pg_net, init says the job cannot reach the function instead of that it runs every minute", async () => {
    await primary.admin`alter schema net rename to net_off`;
    try {
      const lines = await init({ primary: primary.url, secondary: secondary.url }, `${server.url}/spillway`, CRON_TOKEN);
      assert.match(lines[0]!, /pg_cron job spillway-tick is scheduled, but pg_net is not enabled, so it cannot reach the function/);
      assert.doesNotMatch(lines[0]!, /runs every minute/);
      assert.match(lines[1]!, /^secondary: .*pg_cron job spillway-tick runs every minute$/, "the secondary has both");
    } finally {
      await primary.admin`alter schema net_off rename to net`;
    }
  });

  test("after spillway init, the job's POST is sent once its transaction commits, and reaches the running server's /tick with the cron token", async () => {
    const lines = await init({ primary: primary.url, secondary: secondary.url }, `${server.url}/spillway`, CRON_TOKEN);
    for (const [i, name] of ["primary", "secondary"].entries()) {
      assert.match(
        lines[i]!,
        new RegExp(
          `^${name}: function URL and cron token stored in spillway\\.secrets \\(no Vault here\\); pg_cron job spillway-tick runs every minute$`,
        ),
      );
    }
    const [stored] = await primary.admin`select count(*)::int as n from spillway.secrets`;
    assert.equal(stored!.n, 2);
    await assert.rejects(
      primary.admin.begin(async (tx) => {
        await tx`set local role anon`;
        await tx`select * from spillway.secrets`;
      }),
      /permission denied/,
    );

    // Inside the caller's transaction the request is only queued: nothing is sent before commit.
    const [job] = await primary.admin`select command from cron.job where jobname = 'spillway-tick'`;
    const sql = postgres(primary.url, { max: 1, onnotice: () => {} });
    let id = 0;
    await sql.begin(async (tx) => {
      const [row] = await tx.unsafe(`${job!.command} as id`);
      id = Number(row!.id);
      assert.ok(id > 0);
      await new Promise((r) => setTimeout(r, 300));
      const [sent] = await primary.admin`select count(*)::int as n from net._http_response where id = ${id}`;
      assert.equal(sent!.n, 0, "sent before its transaction committed");
    });
    await sql.end();
    const answer = await response(primary, id);
    assert.ok(answer, "no answer stored after the commit");
    assert.equal(answer.status_code, 200, answer.content);
    const tick = JSON.parse(answer.content);
    assert.ok(["none", "backup", "alert", "busy"].includes(tick.action), answer.content);
  });

  test("a caller that rolls back sends nothing", async () => {
    const sql = postgres(primary.url, { max: 1, onnotice: () => {} });
    let id = 0;
    await sql
      .begin(async (tx) => {
        const [row] = await tx`select spillway.call_tick() as id`;
        id = Number(row!.id);
        throw new Error("the caller rolls back");
      })
      .catch((e) => assert.match((e as Error).message, /rolls back/));
    await sql.end();
    assert.ok(id > 0);
    await new Promise((r) => setTimeout(r, 500));
    const [left] = await primary.admin`
      select (select count(*)::int from net.http_request_queue where id = ${id}) as queued,
             (select count(*)::int from net._http_response where id = ${id}) as sent`;
    assert.deepEqual({ ...left }, { queued: 0, sent: 0 });
  });

  test("with the active made read-only, its own job cannot queue the POST; the standby's job brings the tick", async () => {
    // What Supabase does to a project past its quota.
    await primary.admin`alter database postgres set default_transaction_read_only = on`;
    try {
      await assert.rejects(runJob(primary), /read-only transaction/);
      const id = await runJob(secondary);
      assert.ok(id !== null && id > 0);
      const answer = await response(secondary, id);
      assert.ok(answer, "the standby's request was not sent");
      assert.equal(answer.status_code, 200, answer.content);
      const tick = JSON.parse(answer.content);
      assert.ok(["none", "backup", "alert", "busy"].includes(tick.action), answer.content);
    } finally {
      await primary.admin`alter database postgres reset default_transaction_read_only`;
    }
  });

  test("past maxRetainedBytes with no tick running, the database's own job drops Spillway's slot (never an app's) and says why; the next backup is full", async () => {
    const api = async (method: string, path: string, body: unknown) => {
      const res = await fetch(`${server.url}/spillway${path}`, {
        method,
        headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 200, await res.clone().text());
      return await res.json();
    };
    const app = async (url: string, statement: string) => {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      await sql.unsafe(statement).finally(() => sql.end());
    };
    for (const url of [primary.url, secondary.url]) {
      await app(
        url,
        "create table public.notes (id bigint generated by default as identity primary key, body text); create schema scratch; create table scratch.blobs (b text)",
      );
    }
    await app(primary.url, "insert into public.notes (body) select 'note ' || g from generate_series(1, 50) g");
    await api("POST", "/force-backup", { mode: "full" });
    await api("PATCH", "/config", { maxRetainedBytes: 1048576 });
    await primary.admin`select pg_create_logical_replication_slot('app_cdc', 'pgoutput')`;
    // 3 MB of WAL no backup reads, and no tick: only the job stands between it and the disk.
    await app(primary.url, "insert into scratch.blobs select repeat(md5(g::text), 32) from generate_series(1, 3000) g");

    const [job] = await primary.admin`select command, schedule, username from cron.job where jobname = 'spillway-retention'`;
    assert.deepEqual(
      { ...job },
      { command: "set transaction read write; select spillway.guard_retention()", schedule: "* * * * *", username: "postgres" },
    );
    // Run as pg_cron runs it: the job's command, as its user, on a project over its quota (read-only by default).
    const sql = postgres(primary.url, { max: 1, onnotice: () => {} });
    const runJob = async () => {
      const results = (await sql.unsafe(`${job!.command} as dropped`)) as unknown as { dropped: string[] }[][];
      return results[1]![0]!.dropped;
    };
    await sql.unsafe("set default_transaction_read_only = on");
    // A backup holding the lease may be reading the slot: the job leaves it alone.
    await primary.admin`update spillway.lease set holder = 'backup-a1', expires_at = now() + interval '1 minute' where id`;
    assert.deepEqual(await runJob(), []);
    await primary.admin`update spillway.lease set holder = null, expires_at = null where id`;
    const dropped = await runJob().finally(() => sql.end());
    assert.equal(dropped.length, 1);
    assert.match(dropped[0]!, /^spillway_primary_to_secondary_/);
    const slots = await primary.admin`select slot_name from pg_replication_slots order by 1`;
    assert.deepEqual(
      slots.map((r) => r.slot_name),
      ["app_cdc"],
    );
    const [event] = await primary.admin`select level, message, data from spillway.events where kind = 'backup.retention_guard'`;
    assert.equal(event!.level, "warn");
    assert.match(event!.message, /held \d+ bytes of WAL, over the limit of 1048576 \(maxRetainedBytes\).*the next backup is a full one/);
    await primary.admin`select pg_drop_replication_slot('app_cdc')`;
    const [none] = await plain.admin`select spillway.schedule_retention_guard() as scheduled`;
    assert.equal(none!.scheduled, false, "no pg_cron: nothing scheduled, nothing failed");

    const { run } = await api("POST", "/force-backup", { mode: "auto" });
    assert.equal(run.kind, "full");
    assert.match(run.details.reason, /slot is gone/);
    assert.deepEqual(await fingerprint(secondary.admin), await fingerprint(primary.admin));
    await app(primary.url, "insert into public.notes (body) values ('the app keeps writing')");
  });

  test("spillway doctor says, for each project, what is in place and what is missing, and exits 1 when something is", async () => {
    const env = { ...process.env, SPILLWAY_PRIMARY_DB_URL: primary.url, SPILLWAY_SECONDARY_DB_URL: secondary.url };
    // The secondary without pg_net: its job runs but reaches nothing.
    await secondary.admin`alter schema net rename to net_off`;
    try {
      const doctor = spawnSync(process.execPath, ["--import", "tsx", "cli/main.ts", "doctor", "--json"], {
        cwd: root,
        env,
        encoding: "utf8",
      });
      assert.equal(doctor.status, 1, doctor.stderr);
      const report = JSON.parse(doctor.stdout);
      const checks = (name: string) => Object.fromEntries(report.projects[name].checks.map((c: any) => [c.name, c.ok]));
      assert.equal(report.projects.primary.role, "active");
      assert.deepEqual(checks("primary"), {
        migrations: true,
        "cron job": true,
        pg_net: true,
        secrets: true,
        slot: true,
        fence: true,
        "last tick": true,
      });
      assert.deepEqual(checks("secondary"), {
        migrations: true,
        "cron job": true,
        pg_net: false,
        secrets: true,
        slot: true,
        fence: true,
        // The tick through the primary's job measured both projects.
        "last tick": true,
      });
      const text = spawnSync(process.execPath, ["--import", "tsx", "cli/main.ts", "doctor"], { cwd: root, env, encoding: "utf8" });
      assert.equal(text.status, 1);
      assert.match(text.stdout, /secondary \(standby\)\n {2}ok\s+migrations.*\n {2}ok\s+cron job.*\n {2}MISSING pg_net/);
      assert.ok(!text.stdout.includes(primary.password) && !text.stderr.includes(primary.password));
    } finally {
      await secondary.admin`alter schema net_off rename to net`;
    }
  });
});
