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
import { startTestServer, systemBinDir, type TestServer } from "../support/postgres.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));
const major = systemBinDir().split("/").at(-2);

// pg_net cannot be installed here. STAND-IN for net.http_post: same name and signature,
// performs the same HTTP POST (with curl, run by the server as the superuser that owns the
// stand-in) and keeps the response in net._responses for the test to read.
const NET_STAND_IN = `
create schema if not exists net;
create table if not exists net._responses (id bigserial primary key, url text, body text);
create or replace function net.http_post(url text, body jsonb default '{}', params jsonb default '{}',
  headers jsonb default '{"Content-Type": "application/json"}', timeout_milliseconds integer default 5000)
returns bigint language plpgsql security definer set search_path = '' as $$
declare
  q text := chr(39);
  args text := '';
  h record;
  id bigint;
begin
  for h in select key, value from jsonb_each_text(headers) loop
    args := args || ' -H ' || q || replace(h.key || ': ' || h.value, q, q || '\\' || q || q) || q;
  end loop;
  create temporary table if not exists _out (line text) on commit drop;
  execute format('copy _out from program %L', 'curl -s -m 60 -X POST' || args || ' --data ' || q || replace(body::text, q, q || '\\' || q || q) || q || ' ' || q || url || q);
  insert into net._responses (url, body) select url, string_agg(line, E'\\n') from _out returning _responses.id into id;
  return id;
end $$;
grant usage on schema net to postgres;
grant execute on function net.http_post(text, jsonb, jsonb, jsonb, integer) to postgres;
grant select on net._responses to postgres;
`;

describe(`the pg_cron job on the machine's PostgreSQL ${major}`, () => {
  let primary: TestServer;
  let secondary: TestServer;
  let server: RunningServer;

  before(async () => {
    assert.ok(
      existsSync(`/usr/share/postgresql/${major}/extension/pg_cron.control`),
      `pg_cron for PostgreSQL ${major} is not installed (.ci/run installs postgresql-${major}-cron)`,
    );
    primary = await startTestServer({
      system: true,
      migrate: false,
      settings: { shared_preload_libraries: "pg_cron", "cron.database_name": "postgres" },
    });
    // As Supabase's dashboard does: the superuser enables pg_cron and lets postgres use it.
    await primary.admin.unsafe(`create extension if not exists pg_cron; grant usage on schema cron to postgres; ${NET_STAND_IN}`);
    const sql = postgres(primary.url, { max: 1, onnotice: () => {} });
    await applyMigrations(sql, listMigrations(MIGRATIONS_DIR));
    await sql.end();
    secondary = await startTestServer();
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
    await primary?.destroy();
    await secondary?.destroy();
  });

  test("the migration scheduled spillway-tick every minute, as postgres; none where pg_cron is absent", async () => {
    const jobs = await primary.admin`select schedule, command, username from cron.job where jobname = 'spillway-tick'`;
    assert.deepEqual([...jobs], [{ schedule: "* * * * *", command: "select spillway.call_tick()", username: "postgres" }]);
    const [none] = await secondary.admin`select to_regnamespace('cron') is null as absent`;
    assert.equal(none!.absent, true);
  });

  test("without init the job's command warns and posts nothing", async () => {
    const sql = postgres(primary.url, { max: 1, onnotice: () => {} });
    const [row] = await sql`select spillway.call_tick() as id`;
    await sql.end();
    assert.equal(row!.id, null);
  });

  test("without pg_net, init says the job cannot reach the function instead of that it runs every minute", async () => {
    await primary.admin`alter schema net rename to net_off`;
    try {
      const lines = await init({ primary: primary.url, secondary: secondary.url }, `${server.url}/spillway`, CRON_TOKEN);
      assert.match(lines[0]!, /pg_cron job spillway-tick is scheduled, but pg_net is not enabled, so it cannot reach the function/);
      assert.doesNotMatch(lines[0]!, /runs every minute/);
      assert.match(lines[1]!, /^secondary: .*pg_cron is not enabled \(nor pg_net\): enable both/);
    } finally {
      await primary.admin`alter schema net_off rename to net`;
    }
  });

  test("after spillway init, the job's command reaches the running server's /tick with the cron token", async () => {
    const lines = await init({ primary: primary.url, secondary: secondary.url }, `${server.url}/spillway`, CRON_TOKEN);
    assert.match(
      lines[0]!,
      /^primary: function URL and cron token stored in spillway\.secrets \(no Vault here\); pg_cron job spillway-tick runs every minute$/,
    );
    assert.match(lines[1]!, /^secondary: .*pg_cron is not enabled/);
    const [stored] = await primary.admin`select count(*)::int as n from spillway.secrets`;
    assert.equal(stored!.n, 2);
    await assert.rejects(
      primary.admin.begin(async (tx) => {
        await tx`set local role anon`;
        await tx`select * from spillway.secrets`;
      }),
      /permission denied/,
    );

    const [job] = await primary.admin`select command from cron.job where jobname = 'spillway-tick'`;
    const before = Number((await primary.admin`select count(*) from spillway.usage_samples`)[0]!.count);
    const sql = postgres(primary.url, { max: 1, onnotice: () => {} });
    const [row] = await sql.unsafe(`${job!.command} as id`);
    await sql.end();
    assert.ok(Number(row!.id) > 0);
    const [response] = await primary.admin`select url, body from net._responses where id = ${row!.id}`;
    assert.equal(response!.url, `${server.url}/spillway/tick`);
    const tick = JSON.parse(response!.body);
    assert.ok(["none", "backup", "alert"].includes(tick.action), response!.body);
    const afterCount = Number((await primary.admin`select count(*) from spillway.usage_samples`)[0]!.count);
    assert.equal(afterCount, before + 1, "the tick measured and stored a sample");
  });

  test("spillway doctor says, for each project, what is in place and what is missing, and exits 1 when something is", async () => {
    const env = { ...process.env, SPILLWAY_PRIMARY_DB_URL: primary.url, SPILLWAY_SECONDARY_DB_URL: secondary.url };
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
      "cron job": false,
      pg_net: false,
      secrets: true,
      slot: true,
      fence: true,
      // The tick through the primary's job measured both projects.
      "last tick": true,
    });
    const text = spawnSync(process.execPath, ["--import", "tsx", "cli/main.ts", "doctor"], { cwd: root, env, encoding: "utf8" });
    assert.equal(text.status, 1);
    assert.match(text.stdout, /secondary \(standby\)\n {2}ok\s+migrations.*\n {2}MISSING cron job\s+pg_cron is not enabled/);
    assert.ok(!text.stdout.includes(primary.password) && !text.stderr.includes(primary.password));
  });
});
