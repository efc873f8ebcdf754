import { SpillwayError } from "../errors.ts";
import type { Db as Sql } from "../project.ts";
import { copiedColumns, qualify, quoteIdent, type Table } from "./catalog.ts";

/** The fdw strategy's link, in the target database. */
export const FDW_SERVER = "spillway_source";

/**
 * The links a load pulls through at once: each is a connection of its own to the active,
 * so one link's next rows are on their way while the standby writes another's (one
 * connection takes turns: the active waits while the standby writes, and the other way
 * round). Two measured faster than one by a quarter on the bench data; three no faster
 * than two on two cores.
 */
export const FDW_LANES = [FDW_SERVER, `${FDW_SERVER}_2`] as const;

/** Tables under this many pages (8 MB) are pulled over one link: a second scan would cost more than it overlaps. */
export const SPLIT_PAGES = 1024;

// Foreign tables for one load, in schemas created inside the load transaction (and so gone
// with it if it fails). All scans of one local transaction share one remote snapshot.
const FDW_META = "spillway_fdw_meta";

/**
 * Creates or updates the target's postgres_fdw servers (`FDW_LANES`) and user mappings for the source.
 * The password lives only in the user mapping, readable by its owner.
 *
 * @example
 * await ensureFdwLink(target.sql, "postgres://postgres:pw@db.a.supabase.co:5432/postgres");
 */
export async function ensureFdwLink(sql: Sql, sourceUrl: string | undefined): Promise<void> {
  if (!sourceUrl) throw new SpillwayError("FDW_UNAVAILABLE", 409, "the fdw strategy needs the source database's URL");
  const [fdw] = await sql<{ ok: boolean; version: number }[]>`
    select exists (select 1 from pg_catalog.pg_foreign_data_wrapper where fdwname = 'postgres_fdw') as ok,
      pg_catalog.current_setting('server_version_num')::int as version`;
  if (!fdw?.ok)
    throw new SpillwayError("FDW_UNAVAILABLE", 409, "postgres_fdw is not enabled on the standby (create extension postgres_fdw)");
  const u = new URL(sourceUrl);
  // 2 000 rows a round: measured 10 – 15 % faster than 10 000 (and than 500) on the bench data.
  const options: Record<string, string> = {
    host: u.hostname,
    port: u.port || "5432",
    dbname: decodeURIComponent(u.pathname.replace(/^\//, "")) || "postgres",
    fetch_size: "2000",
  };
  // Scans of two links under one Append then run at once (postgres_fdw 14 and later).
  if (fdw.version >= 140000) options.async_capable = "true";
  const login = { user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  const first = await ensureServer(sql, FDW_SERVER, options, login, false);
  // The second link connects exactly as the first (options an operator added to the first,
  // sslmode say, included), and closes its connection with each transaction.
  const second = { ...first, ...(fdw.version >= 140000 ? { keep_connections: "off" } : {}) };
  for (const server of FDW_LANES.slice(1)) await ensureServer(sql, server, second, login, true);
}

// Creates or updates one server and its user mapping; `exact` also drops options not given.
// Answers the server's options as they now are.
async function ensureServer(
  sql: Sql,
  name: string,
  options: Record<string, string>,
  login: Record<string, string>,
  exact: boolean,
): Promise<Record<string, string>> {
  const [row] = await sql<
    { options: string[] | null }[]
  >`select srvoptions as options from pg_catalog.pg_foreign_server where srvname = ${name}`;
  const present: Record<string, string> | null = row
    ? Object.fromEntries((row.options ?? []).map((o) => [o.slice(0, o.indexOf("=")), o.slice(o.indexOf("=") + 1)]))
    : null;
  // `create … options (k 'v')`, or `alter … options (set k 'v')` for what exists and `add` for what does not.
  const list = (o: Record<string, string>, verb: (k: string) => string = () => "") =>
    Object.entries(o)
      .map(([k, v]) => `${verb(k)}${k} ${literal(v)}`)
      .join(", ");
  if (!present) await sql.unsafe(`create server ${name} foreign data wrapper postgres_fdw options (${list(options)})`);
  else {
    const dropped = exact ? Object.keys(present).filter((k) => !(k in options)) : [];
    const changes = [list(options, (k) => (k in present ? "set " : "add ")), ...dropped.map((k) => `drop ${k}`)].filter(Boolean);
    await sql.unsafe(`alter server ${name} options (${changes.join(", ")})`);
  }
  const [mapping] = await sql<
    { ok: boolean }[]
  >`select exists (select 1 from pg_catalog.pg_user_mappings where srvname = ${name} and usename = current_user) as ok`;
  if (!mapping?.ok) await sql.unsafe(`create user mapping for current_user server ${name} options (${list(login)})`);
  else await sql.unsafe(`alter user mapping for current_user server ${name} options (${list(login, () => "set ")})`);
  return exact || !present ? options : { ...present, ...options };
}

function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/**
 * The remote transaction's snapshot, read through the fdw link; the first remote query of
 * a local transaction fixes it for every later scan in that transaction.
 *
 * @example
 * const snapshot = await remoteSnapshot(dst);
 */
export async function remoteSnapshot(dst: Sql): Promise<string> {
  return (await laneSnapshots(dst, 1))[0]!;
}

/**
 * The snapshots of the first `lanes` links' remote transactions, read in one statement so
 * that they are taken as close together as it allows (`sameCommitted` tells whether they
 * see the same rows). Call it before any other remote query of the local transaction.
 *
 * @example
 * const [first, second] = await laneSnapshots(dst, 2);
 */
export async function laneSnapshots(dst: Sql, lanes: number): Promise<string[]> {
  const metas = metaSchemas(lanes);
  // Declared rather than imported: an import is a remote query, which would fix its link's
  // snapshot there and then, apart from the others'.
  for (const [k, meta] of metas.entries()) {
    await dst.unsafe(`drop schema if exists ${meta} cascade`);
    await dst.unsafe(`create schema ${meta}`);
    await dst.unsafe(
      `create foreign table ${meta}.current_snapshot (snapshot text) server ${FDW_LANES[k]} options (schema_name 'spillway', table_name 'current_snapshot')`,
    );
  }
  const [row] = await dst.unsafe<Record<string, string>[]>(
    `select ${metas.map((_, k) => `m${k}.snapshot as s${k}`).join(", ")} from ${metas.map((m, k) => `${m}.current_snapshot m${k}`).join(", ")}`,
  );
  return metas.map((_, k) => row![`s${k}`]!);
}

function metaSchemas(lanes: number): string[] {
  return FDW_LANES.slice(0, lanes).map((_, k) => (k === 0 ? FDW_META : `${FDW_META}_${k + 1}`));
}

/**
 * Whether two snapshots (`pg_current_snapshot()` text, `b` taken after `a`) see the same
 * committed transactions, and so the same rows: true when no transaction completed between
 * them (transactions that began meanwhile are still running in `b`).
 *
 * @example
 * sameCommitted("10:15:12", "10:16:12,15") // true: 15 began, nothing completed
 * sameCommitted("10:15:12", "10:15:")      // false: 12 completed in between
 */
export function sameCommitted(a: string, b: string): boolean {
  const parse = (s: string) => {
    const [, xmax, xip] = s.split(":");
    return { xmax: BigInt(xmax!), xip: (xip ?? "").split(",").filter(Boolean).map(BigInt) };
  };
  const [x, y] = [parse(a), parse(b)];
  const [early, late] = x.xmax <= y.xmax ? [x, y] : [y, x];
  const running = (xip: bigint[]) =>
    xip
      .filter((t) => t < early.xmax)
      .sort((p, q) => (p < q ? -1 : p > q ? 1 : 0))
      .join(",");
  // Under both horizons the same transactions must still run; between them, every
  // transaction must still run in the later snapshot (and so be unseen by both).
  const between = late.xip.filter((t) => t >= early.xmax).length;
  return running(x.xip) === running(y.xip) && BigInt(between) === late.xmax - early.xmax;
}

/** Foreign copies of replicated tables: for each schema, the local schema of each link. */
export type ForeignTables = Map<string, string[]>;

/**
 * Imports the given tables as foreign tables through the first `lanes` links, one local
 * schema per replicated schema and link (partitions are imported only when named, so
 * every table is named).
 *
 * @example
 * const foreign = await importForeignTables(dst, ["public"], tables, 2);
 */
export async function importForeignTables(dst: Sql, schemas: string[], tables: Table[], lanes = 1): Promise<ForeignTables> {
  const map: ForeignTables = new Map();
  for (const [i, schema] of schemas.entries()) {
    const names = tables.filter((t) => t.schema === schema).map((t) => quoteIdent(t.name));
    const locals = FDW_LANES.slice(0, lanes).map((_, k) => (k === 0 ? `spillway_fdw_${i}` : `spillway_fdw_${i}_${k + 1}`));
    for (const [k, local] of locals.entries()) {
      await dst.unsafe(`drop schema if exists ${quoteIdent(local)} cascade`);
      await dst.unsafe(`create schema ${quoteIdent(local)}`);
      if (names.length > 0) {
        await dst.unsafe(
          `import foreign schema ${quoteIdent(schema)} limit to (${names.join(", ")}) from server ${FDW_LANES[k]} into ${quoteIdent(local)}`,
        );
      }
    }
    map.set(schema, locals);
  }
  return map;
}

/**
 * Drops the local schemas of `importForeignTables` (or the ones named) and those of
 * `laneSnapshots`.
 *
 * @example
 * await dropForeignSchemas(dst, [...foreign.values()].flat());
 */
export async function dropForeignSchemas(dst: Sql, schemas: string[]): Promise<void> {
  for (const schema of [...schemas, ...metaSchemas(FDW_LANES.length)])
    await dst.unsafe(`drop schema if exists ${quoteIdent(schema)} cascade`);
}

/**
 * Opens a scan of each of `tables` through every link of `from` at once (one statement,
 * no rows), so that each link holds its lock on the active's table from here to the end of
 * the load. A link asking for a lock later could queue behind a migration's exclusive lock
 * that itself waits for another link's: a wait through the standby that the active's
 * deadlock detector cannot see. Here such a wait ends after `timeoutMs` with an error.
 *
 * @example
 * await holdTables(dst, large, foreign, 5000);
 */
export async function holdTables(dst: Sql, tables: Table[], from: ForeignTables, timeoutMs: number): Promise<void> {
  const scans = tables.flatMap((t) =>
    from.get(t.schema)!.map((schema) => `select 1 from ${qualify(schema, t.name)} where ctid = '(0,0)'::pg_catalog.tid`),
  );
  if (scans.length === 0) return;
  const [before] = await dst<{ value: string }[]>`select pg_catalog.current_setting('statement_timeout') as value`;
  await dst`select pg_catalog.set_config('statement_timeout', ${`${timeoutMs}ms`}, true)`;
  await dst.unsafe(`select count(*) from (${scans.join(" union all ")}) as held`);
  await dst`select pg_catalog.set_config('statement_timeout', ${before!.value}, true)`;
}

/**
 * Pulls one table's rows, imported as a foreign table into `from` (a local schema, or one
 * per link), into the relation `into` on the target (the table itself, or its stage
 * table). Over several links, a table of `pages` pages is split into ranges of pages, each
 * scanned through its own link at once; the last range is open-ended, so rows on pages
 * added since `pages` was read are pulled too.
 *
 * @example
 * const moved = await pullTable(dst, table, ["spillway_fdw_0", "spillway_fdw_0_2"], table.qualified, 10_577);
 */
export async function pullTable(
  dst: Sql,
  table: Table,
  from: string | string[],
  into: string,
  pages = 0,
): Promise<{ rows: number; bytes: number }> {
  const cols = copiedColumns(table);
  const links = typeof from === "string" ? [from] : pages >= SPLIT_PAGES ? from : from.slice(0, 1);
  const scans = links.map((schema, k) => {
    const bounds = [
      k > 0 ? `ctid >= '(${Math.floor((pages * k) / links.length)},0)'::pg_catalog.tid` : null,
      k < links.length - 1 ? `ctid < '(${Math.floor((pages * (k + 1)) / links.length)},0)'::pg_catalog.tid` : null,
    ].filter((b) => b !== null);
    return `select ${cols} from ${qualify(schema, table.name)}${bounds.length > 0 ? ` where ${bounds.join(" and ")}` : ""}`;
  });
  const result = await dst.unsafe(`insert into ${into} (${cols}) overriding system value ${scans.join(" union all ")}`);
  const [size] = await dst<{ bytes: string }[]>`select pg_catalog.pg_table_size(${into}::regclass)::text as bytes`;
  return { rows: result.count, bytes: Number(size!.bytes) };
}
