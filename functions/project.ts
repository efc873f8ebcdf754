import type { Sql, TransactionSql } from "postgres";
import postgres from "postgres";
import { describeError, isConnectionError, isOutage, PG, SpillwayError, unreachable } from "./errors.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";

/** One Supabase project: a connection pool to its database, and where it is (never how to log in). */
export interface Project {
  name: ProjectName;
  sql: Sql;
  host: string;
  database: string;
  /**
   * The URL the standby's fdw link reaches this project by, password included: never
   * shown. A session-mode or direct URL, since postgres_fdw keeps session settings.
   */
  url: string;
}

/** Both projects, by name. */
export type Projects = Record<ProjectName, Project>;

/** Options for `connectProject`. */
export interface ConnectOptions {
  /** Pool size; an Edge Function keeps it small. */
  max?: number;
  /** Seconds to wait for a connection before the project counts as unreachable. */
  connectTimeout?: number;
  /** The URL the fdw link uses instead of the connection URL (see `Project.url`). */
  fdwUrl?: string;
}

/**
 * Opens a lazy connection pool to a project's database. Nothing connects until the first
 * query. Works through Supabase's poolers (session and transaction mode): no startup
 * parameter beyond what a pooler accepts, no prepared statements, and no session state
 * relied on between transactions. Supabase makes a database past its free quota read-only
 * by default (`default_transaction_read_only`), so every write opens its transaction
 * read-write itself; a `begin` without options on this pool opens `begin read write`.
 *
 * @example
 * const primary = connectProject("primary", "postgres://postgres:pw@db.example.co:5432/postgres");
 */
export function connectProject(name: ProjectName, url: string, options: ConnectOptions = {}): Project {
  const parsed = new URL(url);
  const sql = postgres(url, {
    max: options.max ?? 4,
    connect_timeout: options.connectTimeout ?? 5,
    idle_timeout: 30,
    max_lifetime: 60 * 30,
    // Prepared statements do not survive Supabase's transaction pooler.
    prepare: false,
    // postgres.js waits before each new connection after failed ones, up to 20 s once a
    // few have failed: a project that is down would make every tick wait that long, and
    // one that is back would stay unused as long. A short, capped pause answers 503 at
    // once while it is down and reconnects as soon as it is up.
    backoff: (retries: number) => Math.min(retries, 5) * 0.1,
    onnotice: () => {},
    connection: { application_name: "spillway" },
  });
  // A transaction opened without options is a write's: read-write, whatever the database's default.
  const begin = sql.begin.bind(sql) as (options: string, fn: unknown) => unknown;
  sql.begin = ((first: unknown, fn?: unknown) =>
    fn === undefined ? begin("read write", first) : begin(first as string, fn)) as typeof sql.begin;
  return {
    name,
    sql,
    url: options.fdwUrl ?? url,
    host: parsed.hostname,
    database: decodeURIComponent(parsed.pathname.replace(/^\//, "")) || "postgres",
  };
}

/**
 * Opens both projects; `fdwUrls` names, per project, the URL the fdw link uses when the
 * connection URL is a transaction-mode pooler's.
 *
 * @example
 * const projects = connectProjects({ primary: urlA, secondary: urlB });
 */
export function connectProjects(
  urls: Record<ProjectName, string>,
  options: Omit<ConnectOptions, "fdwUrl"> = {},
  fdwUrls: Partial<Record<ProjectName, string>> = {},
): Projects {
  return {
    primary: connectProject("primary", urls.primary, { ...options, fdwUrl: fdwUrls.primary }),
    secondary: connectProject("secondary", urls.secondary, { ...options, fdwUrl: fdwUrls.secondary }),
  };
}

/**
 * Closes both pools, waiting at most `timeoutSeconds` for running queries.
 *
 * @example
 * await closeProjects(projects);
 */
export async function closeProjects(projects: Projects, timeoutSeconds = 5): Promise<void> {
  await Promise.all(PROJECT_NAMES.map((n) => projects[n].sql.end({ timeout: timeoutSeconds })));
}

/**
 * Runs `fn` against a project and turns a connection failure into `PROJECT_UNREACHABLE`
 * (503). Other database errors pass through unchanged.
 *
 * @example
 * const rows = await onProject(projects.primary, (sql) => sql`select 1`);
 */
export async function onProject<T>(project: Project, fn: (sql: Sql) => Promise<T>): Promise<T> {
  try {
    return await fn(project.sql);
  } catch (e) {
    if (e instanceof SpillwayError) throw e;
    if (isConnectionError(e)) throw unreachable(project.name, describeError(e), isOutage(e));
    const code = (e as { code?: string }).code;
    if ((code === PG.undefinedTable || code === PG.invalidSchemaName) && /spillway/.test(describeError(e))) {
      throw new SpillwayError("NOT_INSTALLED", 503, `project ${project.name} does not carry Spillway's migrations (${describeError(e)})`, {
        project: project.name,
      });
    }
    throw e;
  }
}

/**
 * Why a project does not answer (as `onProject` reports it), or null when it does.
 *
 * @example
 * const down = await probe(projects.secondary); // null, or a 503 PROJECT_UNREACHABLE
 */
export async function probe(project: Project): Promise<unknown> {
  try {
    await onProject(project, (sql) => sql`select 1`);
    return null;
  } catch (e) {
    return e;
  }
}

/** The outcome of `onBoth` for one project. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * Runs `fn` on both projects at once and reports each outcome; one failing does not stop
 * the other.
 *
 * @example
 * const { primary, secondary } = await onBoth(projects, (p) => p.sql`select 1`);
 */
export async function onBoth<T>(projects: Projects, fn: (project: Project) => Promise<T>): Promise<Record<ProjectName, Outcome<T>>> {
  const [primary, secondary] = await Promise.all(
    PROJECT_NAMES.map(async (n): Promise<Outcome<T>> => {
      try {
        return { ok: true, value: await onProject(projects[n], () => fn(projects[n])) };
      } catch (error) {
        return { ok: false, error };
      }
    }),
  );
  return { primary: primary!, secondary: secondary! };
}

/**
 * Checks that a database carries Spillway's schema and claims to be the project it is
 * connected as, then records the claim on first contact. Swapped URLs are refused.
 *
 * @example
 * await claimProject(projects.primary);
 */
export async function claimProject(project: Project): Promise<void> {
  await onProject(project, async (sql) => {
    const [schema] = await sql<{ ok: boolean }[]>`select to_regclass('spillway.project') is not null as ok`;
    if (!schema?.ok) {
      throw new SpillwayError("NOT_INSTALLED", 503, `project ${project.name} does not carry Spillway's migrations`, {
        project: project.name,
      });
    }
    const [row] = await sql.begin(
      "read write",
      (tx) => tx<{ name: string }[]>`
      insert into spillway.project (id, name) values (true, ${project.name})
      on conflict (id) do update set name = spillway.project.name
      returning name`,
    );
    if (row?.name !== project.name) {
      throw new SpillwayError(
        "PROJECT_MISMATCH",
        409,
        `the database given as ${project.name} (${project.host}/${project.database}) was set up as ${row?.name}; check SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL`,
        { project: project.name },
      );
    }
  });
}

/** A connection pool or an open transaction: what query helpers accept. */
export type Db = Sql | TransactionSql;
