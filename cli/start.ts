import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import postgres from "postgres";
import { type Config, ConfigError } from "../functions/config.ts";
import { describeError, SpillwayError } from "../functions/errors.ts";
import { type Cluster, startCluster } from "./cluster.ts";
import { startDemo } from "./demo.ts";
import { appliedNames, applyMigrations, listMigrations, MIGRATIONS_DIR } from "./migrations.ts";
import { ensurePortFree, freePort, startServer } from "./server.ts";

interface Secrets {
  adminToken: string;
  adminPassword: string;
  password: string;
}

/**
 * `spillway start`: runs Spillway locally. Without database URLs it starts two embedded
 * Postgres servers (data in `dataDir`, kept across restarts), applies the migrations and a
 * demo app to both; with URLs it only checks that both carry the migrations. Then it serves
 * the API and the widget, ticks on a timer, and stops everything it started on SIGINT or
 * SIGTERM. With `demo`, it starts afresh in `<dataDir>/demo` with a small quota and a writer
 * that fills the primary (see `startDemo`).
 *
 * @example
 * await start(loadConfig(process.env), console.log);
 */
export async function start(config: Config, print: (line: string) => void, options: { demo?: boolean } = {}): Promise<void> {
  if (options.demo) {
    // The demo fills a database on purpose: never one of the user's, and never yesterday's.
    if (config.dbUrls)
      throw new ConfigError(["--demo runs on the embedded servers only; unset SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL"]);
    mkdirSync(config.dataDir, { recursive: true });
    chmodSync(config.dataDir, 0o711);
    config = { ...config, dataDir: join(config.dataDir, "demo") };
    rmSync(resolve(config.dataDir), { recursive: true, force: true });
  }
  await ensurePortFree(config.port);
  const clusters: Cluster[] = [];
  const stopClusters = () => Promise.all(clusters.map((c) => c.stop().catch(() => undefined)));
  let dbUrls = config.dbUrls;
  let adminToken = config.adminToken;

  try {
    if (!dbUrls) {
      const dataDir = resolve(config.dataDir);
      mkdirSync(dataDir, { recursive: true });
      // Postgres runs as the `postgres` system user when we are root: it must be able to pass
      // through this folder, but not list it (secrets.json stays 0600).
      chmodSync(dataDir, 0o711);
      const secrets = loadSecrets(dataDir);
      adminToken ??= secrets.adminToken;
      print(`Starting two embedded Postgres servers (data in ${dataDir}) ...`);
      for (const name of ["primary", "secondary"] as const) {
        clusters.push(
          await startCluster({
            dir: join(dataDir, name),
            port: await freePort(),
            adminPassword: secrets.adminPassword,
            password: secrets.password,
          }),
        );
      }
      dbUrls = { primary: clusters[0]!.url, secondary: clusters[1]!.url };
      await prepareEmbedded(dbUrls);
    } else {
      await checkMigrations(dbUrls);
    }
    if (!adminToken) throw new Error("SPILLWAY_ADMIN_TOKEN must be set when SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL are");

    const server = await startServer({
      dbUrls,
      fdwUrls: config.fdwUrls,
      adminToken,
      cronToken: config.cronToken,
      corsOrigins: config.corsOrigins,
      port: config.port,
      dataDir: config.dataDir,
      tickSeconds: config.tickSeconds,
      alerts: config.alerts,
      storageApis: config.storageApis,
      onTickError: (m) => print(`tick failed: ${m}`),
    });
    print("");
    print(`Spillway is running.`);
    print(`  Widget:  ${server.url}/`);
    print(`  API:     ${server.url}/spillway/status`);
    print(`  Token:   ${adminToken}`);
    for (const [name, url] of Object.entries(dbUrls)) print(`  ${name.padEnd(10)}${redactUrl(url)}`);
    print(`  Events:  ${join(config.dataDir, "spillway.log")}`);
    print(`Press Ctrl-C to stop.`);
    const demo = options.demo ? await startDemo({ serverUrl: server.url, dbUrls, projects: server.projects, print }) : null;

    await new Promise<void>((done) => {
      let stopping = false;
      const stop = async () => {
        if (stopping) return;
        stopping = true;
        print("Stopping ...");
        await demo?.stop();
        await server.close().catch(() => undefined);
        await stopClusters();
        done();
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
  } catch (e) {
    await stopClusters();
    throw e;
  }
}

function loadSecrets(dataDir: string): Secrets {
  const file = join(dataDir, "secrets.json");
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as Secrets;
  const secret = () => randomBytes(24).toString("base64url");
  const secrets: Secrets = { adminToken: secret(), adminPassword: secret(), password: secret() };
  writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 });
  return secrets;
}

// The migrations and the demo app's tables go to both servers at each start (both idempotent);
// the demo's rows only into a fresh pair, one that never served: once it has, the rows are the
// app's, and the primary may be the fenced standby. A lease still held was held by this data
// dir's last run, killed mid-operation: the servers were down until now, so no other process
// can hold it, and waiting for its expiry would only refuse the operator's next backup.
async function prepareEmbedded(urls: { primary: string; secondary: string }): Promise<void> {
  const migrations = listMigrations(MIGRATIONS_DIR);
  const demo = await readFile(new URL("./demo.sql", import.meta.url), "utf8");
  const demoData = await readFile(new URL("./demo-data.sql", import.meta.url), "utf8");
  for (const [name, url] of Object.entries(urls)) {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await applyMigrations(sql, migrations);
      await sql.begin("read write", (tx) => tx`update spillway.lease set holder = null, expires_at = null where id and holder is not null`);
      await sql.unsafe(demo);
      if (name === "primary") {
        const [served] = await sql<{ yes: boolean }[]>`select exists (select 1 from spillway.project) as yes`;
        if (!served?.yes) await sql.unsafe(demoData);
      }
    } finally {
      await sql.end();
    }
  }
}

async function checkMigrations(urls: { primary: string; secondary: string }): Promise<void> {
  const wanted = listMigrations(MIGRATIONS_DIR);
  for (const [name, url] of Object.entries(urls)) {
    const sql = postgres(url, { max: 1, connect_timeout: 10, onnotice: () => {} });
    try {
      const applied = await appliedNames(sql).catch((e) => {
        throw new SpillwayError("PROJECT_UNREACHABLE", 503, `cannot reach the ${name} database (${redactUrl(url)}): ${describeError(e)}`);
      });
      const missing = wanted.filter((m) => !applied.has(m.name));
      if (missing.length > 0) {
        throw new Error(
          `the ${name} database lacks Spillway's migrations (${missing.map((m) => m.file).join(", ")}); run: npx supabase db push --db-url "$SPILLWAY_${name.toUpperCase()}_DB_URL"`,
        );
      }
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
}

function redactUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = "***";
  return u.toString();
}
