import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { TransactionSql } from "postgres";
import { SpillwayError } from "../errors.ts";
import type { Project, Db as Sql } from "../project.ts";
import { changeCounter } from "../status.ts";
import {
  type Catalog,
  copiedColumns,
  foreignKeyOrder,
  type Index,
  qualify,
  quoteIdent,
  readCatalog,
  type Sequence,
  type Table,
} from "./catalog.ts";
import { canonical, checksumTable, compareChecksums, LOAD_MARK, type TableChecksum } from "./checksum.ts";
import { schemaDiff, schemaMismatch } from "./schema-diff.ts";

/** Where a running full load is. */
export interface Progress {
  phase: "snapshot" | "load" | "catch-up" | "indexes" | "verify" | "commit";
  table: string | null;
  tablesDone: number;
  tablesTotal: number;
  rows: number;
  bytes: number;
}

/** What a full load needs. */
export interface FullLoadInput {
  source: Project;
  target: Project;
  /** The standby's tables, as the run checked them. */
  targetCatalog: Catalog;
  schemas: string[];
  strategy: "copy" | "fdw";
  verify: boolean;
  /** For `fdw`: how the target's server reaches the source (host, port, database, user, password). */
  sourceUrl?: string;
  onProgress(progress: Progress): void;
  /**
   * Runs inside the target's load transaction just before it commits, so that what it
   * writes (the run's success) is published together with the data, or not at all.
   */
  beforeCommit(tx: TransactionSql, result: FullLoadResult): Promise<void>;
  /**
   * Loads more than the replicated tables (Auth's) in the same snapshot and target
   * transaction: through `src`, or the fdw link when `foreign`.
   */
  alongside?(src: TransactionSql, dst: TransactionSql, foreign: boolean): Promise<{ rows: number; bytes: number }>;
}

/** A published copy. */
export interface FullLoadResult {
  tables: number;
  rows: number;
  bytes: number;
  snapshotAt: string;
  /** Row changes the active's statistics had counted at the snapshot (for the standby lag). */
  changeCounter: string;
  /**
   * The copy's snapshot (`pg_current_snapshot()`), so that incremental backups skip what it
   * saw (for fdw, the remote transaction's, read through the foreign server).
   */
  snapshot: string | null;
  checksums: TableChecksum[] | null;
  perTable: { table: string; rows: number; bytes: number }[];
}

/** Bytes gathered before they are sent on to the target in one message. */
const COPY_BATCH_BYTES = 512 * 1024;

/** The fdw strategy's link, in the target database. */
export const FDW_SERVER = "spillway_source";

/**
 * Copies the replicated tables from the source to the target as one transactionally
 * consistent point in time, and publishes it atomically: the source is read in a single
 * repeatable-read snapshot, and the target is emptied and loaded in a single transaction
 * (indexes dropped first and rebuilt after, as pg_restore loads), so a failure or a kill
 * at any moment leaves the target's previous copy as it was.
 *
 * @example
 * const result = await fullLoad({ source, target, schemas: ["public"], strategy: "copy", verify: true, onProgress, beforeCommit });
 */
export async function fullLoad(input: FullLoadInput): Promise<FullLoadResult> {
  const { source, target } = input;
  if (input.strategy === "fdw") await ensureFdwLink(target.sql, input.sourceUrl);

  return await source.sql.begin("isolation level repeatable read read only", async (src) => {
    await canonical(src, "set local row_security = off");
    // The tables as this snapshot sees them, checked again: DDL may have come since the run's check.
    const catalog = await readCatalog(src, input.schemas);
    const diffs = schemaDiff(catalog, input.targetCatalog);
    if (diffs.length > 0) throw schemaMismatch(diffs);
    const tables = foreignKeyOrder(catalog.tables, catalog.foreignKeys);
    const [snap] = await src<{ at: Date; snapshot: string }[]>`select now() as at, pg_catalog.pg_current_snapshot()::text as snapshot`;
    const counter = await changeCounter(src, input.schemas);
    const progress: Progress = { phase: "load", table: null, tablesDone: 0, tablesTotal: tables.length, rows: 0, bytes: 0 };
    input.onProgress({ ...progress });

    return await target.sql.begin(async (dst) => {
      const rebuild = await beginLoad(dst, input.targetCatalog, tables);

      const perTable: FullLoadResult["perTable"] = [];
      const foreign = input.strategy === "fdw" ? await importForeignTables(dst, input.schemas, tables) : null;
      // The first remote query fixes the remote snapshot; it names it for incremental backups.
      const fdwSnapshot = foreign ? await remoteSnapshot(dst) : null;
      for (const table of tables) {
        progress.table = `${table.schema}.${table.name}`;
        input.onProgress({ ...progress });
        const moved = foreign
          ? await pullTable(dst, table, foreign.get(table.schema)!)
          : await copyTable(src, dst, table, (bytes) => {
              progress.bytes += bytes;
            });
        if (foreign) progress.bytes += moved.bytes;
        progress.rows += moved.rows;
        progress.tablesDone += 1;
        perTable.push({ table: `${table.schema}.${table.name}`, ...moved });
      }
      const more = await input.alongside?.(src, dst, foreign !== null);
      progress.rows += more?.rows ?? 0;
      progress.bytes += more?.bytes ?? 0;

      progress.phase = "indexes";
      progress.table = null;
      input.onProgress({ ...progress });
      await rebuildAfterLoad(dst, rebuild);
      // Sequences are not transactional: read after the data, they are at least where the
      // snapshot's rows need them. Read in the transaction the load already holds: a query on
      // the pool would wait for a connection this run holds (forever, on a pool of one).
      await setSequences(dst, (await readCatalog(src, input.schemas)).sequences);

      let checksums: TableChecksum[] | null = null;
      if (input.verify) {
        progress.phase = "verify";
        input.onProgress({ ...progress });
        const active: TableChecksum[] = [];
        const standby: TableChecksum[] = [];
        for (const table of tables) {
          active.push(
            foreign ? await checksumTable(dst, table, qualify(foreign.get(table.schema)!, table.name)) : await checksumTable(src, table),
          );
          standby.push(await checksumTable(dst, table));
        }
        const mismatches = compareChecksums(active, standby);
        if (mismatches.length > 0) {
          throw new SpillwayError("VERIFY_FAILED", 500, `verification failed for ${mismatches.length} table(s): ${mismatches.join("; ")}`, {
            tables: mismatches,
          });
        }
        checksums = active;
      }
      if (foreign) await dropForeignSchemas(dst, foreign);

      const result: FullLoadResult = {
        tables: tables.length,
        rows: progress.rows,
        bytes: progress.bytes,
        snapshotAt: snap!.at.toISOString(),
        changeCounter: counter,
        snapshot: foreign ? fdwSnapshot : snap!.snapshot,
        checksums,
        perTable,
      };
      progress.phase = "commit";
      input.onProgress({ ...progress });
      await input.beforeCommit(dst, result);
      return result;
    });
  });
}

/** Settings of a transaction that loads the standby. */
const LOAD_SETTINGS = [
  // Replica mode: the standby's own triggers (foreign key checks included) stay quiet while
  // it is loaded. Its foreign keys stay in place and need no check afterwards: every row
  // comes from one consistent snapshot of the active, where they held.
  "set local session_replication_role = replica",
  // The fence trigger fires in replica mode too; this mark lets Spillway's own loads through.
  LOAD_MARK,
  "set local lock_timeout = '30s'",
  // Index rebuilds after the load sort in memory rather than on disk.
  "set local maintenance_work_mem = '128MB'",
];

/** The indexes `beginLoad` dropped, which `rebuildAfterLoad` puts back. */
export interface RebuildPlan {
  indexes: Index[];
}

/**
 * Readies a target transaction to load `tables` the way pg_restore loads: replica mode,
 * the rebuildable indexes dropped (only what can be rebuilt from the standby's own
 * definitions, and never a key a foreign key stands on), the tables emptied.
 *
 * @example
 * const rebuild = await beginLoad(dst, targetCatalog, tables);
 */
export async function beginLoad(dst: Sql, targetCatalog: Catalog, tables: Table[]): Promise<RebuildPlan> {
  await canonical(dst, ...LOAD_SETTINGS);
  const names = new Set(tables.map((t) => t.qualified));
  const rebuild = { indexes: targetCatalog.indexes.filter((ix) => names.has(ix.table)) };
  for (const ix of rebuild.indexes) await dst.unsafe(ix.drop);
  if (tables.length > 0) await dst.unsafe(`truncate ${tables.map((t) => t.qualified).join(", ")}`);
  return rebuild;
}

/**
 * Rebuilds, once the rows are in, what `beginLoad` dropped.
 *
 * @example
 * await rebuildAfterLoad(dst, rebuild);
 */
export async function rebuildAfterLoad(dst: Sql, rebuild: RebuildPlan): Promise<void> {
  for (const ix of rebuild.indexes) await dst.unsafe(ix.create);
}

/**
 * Sets the target's sequences to the source's positions, in one statement (incremental
 * runs do it with every batch).
 *
 * @example
 * await setSequences(dst, await readSequences(source.sql, ["public"]));
 */
export async function setSequences(dst: Sql, sequences: Sequence[], options: { gapSteps?: number } = {}): Promise<void> {
  if (sequences.length === 0) return;
  // With a gap, each sequence moves `gapSteps` steps further (never past its bound), so that
  // numbers the old active may still hand out (nextval writes no table, so the fence does
  // not stop it) are never handed out again here.
  const gap = options.gapSteps ?? 0;
  await dst`
    select pg_catalog.setval(s.name::regclass,
      case when ${gap}::int8 = 0 then s.last
           when s.step > 0 then least(s.last::numeric + s.step * ${gap}::numeric, s.bound)::int8
           else greatest(s.last::numeric + s.step * ${gap}::numeric, s.bound)::int8 end,
      s.called::bool or ${gap}::int8 > 0)
    from unnest(${sequences.map((q) => q.qualified)}::text[], ${sequences.map((q) => q.lastValue)}::int8[], ${sequences.map((q) => (q.isCalled ? "t" : "f"))}::text[],
      ${sequences.map((q) => q.increment)}::int8[], ${sequences.map((q) => q.bound)}::int8[]) as s(name, last, called, step, bound)`;
}

/**
 * Streams one table's rows from the source transaction into the target transaction with
 * COPY (binary where the types allow), never holding more than one batch in memory, into
 * the target's table of the same name or into `into`. `freeze` only where the target
 * table was emptied by a truncate in this transaction.
 *
 * @example
 * const moved = await copyTable(src, dst, table, (n) => progress.bytes += n);
 */
export async function copyTable(
  src: Sql,
  dst: Sql,
  table: Table,
  onBytes: (n: number) => void,
  into = table.qualified,
  freeze = true,
): Promise<{ rows: number; bytes: number }> {
  const cols = copiedColumns(table);
  const format = table.binarySafe ? "binary" : "text";
  const readable = await src.unsafe(`copy ${table.qualified} (${cols}) to stdout with (format ${format})`).readable();
  const writable = await dst.unsafe(`copy ${into} (${cols}) from stdin with (format ${format}${freeze ? ", freeze true" : ""})`).writable();
  // Postgres sends one CopyData message per row, and postgres.js hands each on as one
  // chunk; a binary copy adds one message for its trailer.
  let messages = 0;
  let bytes = 0;
  // Rows arrive one message each; they leave in batches, so the target gets a few large
  // CopyData messages instead of one per row (most of the process's CPU otherwise).
  let batch: Uint8Array[] = [];
  let batched = 0;
  const release = (push: (chunk: Uint8Array) => void) => {
    if (batched === 0) return;
    push(Buffer.concat(batch, batched));
    onBytes(batched);
    batch = [];
    batched = 0;
  };
  const count = new Transform({
    transform(chunk: Uint8Array, _encoding, callback) {
      messages += 1;
      bytes += chunk.length;
      batch.push(chunk);
      batched += chunk.length;
      if (batched >= COPY_BATCH_BYTES) release((c) => this.push(c));
      callback();
    },
    flush(callback) {
      release((c) => this.push(c));
      callback();
    },
  });
  // postgres.js pauses its socket when the stream's buffer is full and resumes it from the
  // stream's read(); when the copy's last rows arrive while paused, read() is never called
  // again after the end and the connection would wait forever. Resume it once at the end.
  readable.once("end", () => (readable as unknown as { _read(size: number): void })._read(0));
  await pipeline(readable, count, writable);
  return { rows: format === "binary" ? Math.max(0, messages - 1) : messages, bytes };
}

/**
 * Pulls one table through the fdw link into `table.qualified` on the target.
 *
 * @example
 * const moved = await pullTable(dst, table, "spillway_fdw_0");
 */
export async function pullTable(dst: Sql, table: Table, foreignSchema: string): Promise<{ rows: number; bytes: number }> {
  const cols = copiedColumns(table);
  const result = await dst.unsafe(
    `insert into ${table.qualified} (${cols}) overriding system value select ${cols} from ${qualify(foreignSchema, table.name)}`,
  );
  const [size] = await dst<{ bytes: string }[]>`select pg_catalog.pg_table_size(${table.qualified}::regclass)::text as bytes`;
  return { rows: result.count, bytes: Number(size!.bytes) };
}

// Foreign tables for one load, in schemas created inside the load transaction (and so gone
// with it if it fails). All scans of one local transaction share one remote snapshot.
const FDW_META = "spillway_fdw_meta";

/**
 * The remote transaction's snapshot, read through the fdw link; the first remote query of
 * a local transaction fixes it for every later scan in that transaction.
 *
 * @example
 * const snapshot = await remoteSnapshot(dst);
 */
export async function remoteSnapshot(dst: Sql): Promise<string> {
  await dst.unsafe(`drop schema if exists ${FDW_META} cascade`);
  await dst.unsafe(`create schema ${FDW_META}`);
  await dst.unsafe(`import foreign schema spillway limit to (current_snapshot) from server ${FDW_SERVER} into ${FDW_META}`);
  const [row] = await dst.unsafe<{ snapshot: string }[]>(`select snapshot from ${FDW_META}.current_snapshot`);
  return row!.snapshot;
}

/**
 * Imports the given tables as foreign tables, one local schema per replicated schema
 * (partitions are imported only when named, so every table is named).
 *
 * @example
 * const foreign = await importForeignTables(dst, ["public"], tables);
 */
export async function importForeignTables(dst: Sql, schemas: string[], tables: Table[]): Promise<Map<string, string>> {
  const map = new Map<string, string>();
  for (const [i, schema] of schemas.entries()) {
    const local = `spillway_fdw_${i}`;
    const names = tables.filter((t) => t.schema === schema).map((t) => quoteIdent(t.name));
    await dst.unsafe(`drop schema if exists ${quoteIdent(local)} cascade`);
    await dst.unsafe(`create schema ${quoteIdent(local)}`);
    if (names.length > 0) {
      await dst.unsafe(
        `import foreign schema ${quoteIdent(schema)} limit to (${names.join(", ")}) from server ${FDW_SERVER} into ${quoteIdent(local)}`,
      );
    }
    map.set(schema, local);
  }
  return map;
}

/**
 * Drops the schemas of `importForeignTables` and `remoteSnapshot`.
 *
 * @example
 * await dropForeignSchemas(dst, foreign);
 */
export async function dropForeignSchemas(dst: Sql, foreign: Map<string, string>): Promise<void> {
  for (const schema of [...foreign.values(), FDW_META]) await dst.unsafe(`drop schema if exists ${quoteIdent(schema)} cascade`);
}

/**
 * Creates or updates the target's postgres_fdw server and user mapping for the source.
 * The password lives only in the user mapping, readable by its owner.
 *
 * @example
 * await ensureFdwLink(target.sql, "postgres://postgres:pw@db.a.supabase.co:5432/postgres");
 */
export async function ensureFdwLink(sql: Sql, sourceUrl: string | undefined): Promise<void> {
  if (!sourceUrl) throw new SpillwayError("FDW_UNAVAILABLE", 409, "the fdw strategy needs the source database's URL");
  const u = new URL(sourceUrl);
  // 2 000 rows a round: measured 10 – 15 % faster than 10 000 (and than 500) on the bench data.
  const options = {
    host: u.hostname,
    port: u.port || "5432",
    dbname: decodeURIComponent(u.pathname.replace(/^\//, "")) || "postgres",
    fetch_size: "2000",
  };
  const [fdw] = await sql<
    { ok: boolean }[]
  >`select exists (select 1 from pg_catalog.pg_foreign_data_wrapper where fdwname = 'postgres_fdw') as ok`;
  if (!fdw?.ok)
    throw new SpillwayError("FDW_UNAVAILABLE", 409, "postgres_fdw is not enabled on the standby (create extension postgres_fdw)");
  const [server] = await sql<
    { options: string[] | null }[]
  >`select srvoptions as options from pg_catalog.pg_foreign_server where srvname = ${FDW_SERVER}`;
  // `create … options (k 'v')`, or `alter … options (set k 'v')` for what exists and `add` for what does not.
  const list = (o: Record<string, string>, verb: (k: string) => string = () => "") =>
    Object.entries(o)
      .map(([k, v]) => `${verb(k)}${k} ${literal(v)}`)
      .join(", ");
  if (!server) await sql.unsafe(`create server ${FDW_SERVER} foreign data wrapper postgres_fdw options (${list(options)})`);
  else {
    const present = new Set((server.options ?? []).map((o) => o.slice(0, o.indexOf("="))));
    await sql.unsafe(`alter server ${FDW_SERVER} options (${list(options, (k) => (present.has(k) ? "set " : "add "))})`);
  }
  const login = { user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  const [mapping] = await sql<
    { ok: boolean }[]
  >`select exists (select 1 from pg_catalog.pg_user_mappings where srvname = ${FDW_SERVER} and usename = current_user) as ok`;
  if (!mapping?.ok) await sql.unsafe(`create user mapping for current_user server ${FDW_SERVER} options (${list(login)})`);
  else await sql.unsafe(`alter user mapping for current_user server ${FDW_SERVER} options (${list(login, () => "set ")})`);
}

function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
