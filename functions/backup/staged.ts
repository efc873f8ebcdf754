import type { TransactionSql } from "postgres";
import { holdLease } from "../lease.ts";
import type { ProjectName } from "../names.ts";
import type { Db, Project } from "../project.ts";
import { AUTH_CHANGES, type AuthPlan } from "./auth.ts";
import { publishAuthStage, stageAuth } from "./auth-stage.ts";
import { type Catalog, copiedColumns, qualify, quoteIdent, readCatalog, type Table } from "./catalog.ts";
import { canonical } from "./checksum.ts";
import {
  beginLoad,
  copyTable,
  dropForeignSchemas,
  ensureFdwLink,
  importForeignTables,
  type Progress,
  pullTable,
  rebuildAfterLoad,
  remoteSnapshot,
  setSequences,
} from "./full.ts";
import { applyChanges, type ChangeStream, dropSlot, positionMoved, prepareCapture, slotRetainedBytes } from "./incremental.ts";
import { visibleIn } from "./pgoutput.ts";

/** One replicated table of a staged copy. */
export interface StagedTable {
  table: string;
  /** The stage table on the standby, quoted. */
  stage: string;
  /** Columns, types and key when staging began: a change of shape means starting over. */
  shape: string;
  /** The snapshot its rows were copied in; null until it is staged. */
  snapshot: string | null;
  rows: number;
  bytes: number;
}

/** A full copy built across invocations (`spillway.staging` on the standby). */
export interface Staging {
  runId: string;
  source: ProjectName;
  slot: string;
  tables: StagedTable[];
  appliedLsn: string | null;
  startedAt: string;
}

/** Where an invocation left a staged copy. */
export interface StagedResult {
  published: boolean;
  tablesStaged: number;
  tablesTotal: number;
  /** Rows copied into the stage (changes applied while catching up are not counted). */
  rows: number;
  bytes: number;
  /** The active's point in time of the published copy. */
  snapshotAt: string | null;
  /** The stage's position in the change stream when it was published. */
  appliedLsn: string | null;
}

/** Assumed copy speed before a full copy into this standby has been measured. */
const DEFAULT_BYTES_PER_SECOND = 20 * 1024 * 1024;

/**
 * Whether a full copy of `bytes` is expected to finish in one invocation: within three
 * quarters of the budget at the speed of the last full copy (or 20 MB/s before one).
 *
 * @example
 * fullCopyFits(300e6, 40e6, 120) // true
 */
export function fullCopyFits(bytes: number, bytesPerSecond: number | null, budgetSeconds: number): boolean {
  return bytes / (bytesPerSecond && bytesPerSecond > 0 ? bytesPerSecond : DEFAULT_BYTES_PER_SECOND) <= budgetSeconds * 0.75;
}

/**
 * What a table's shape is compared by.
 *
 * @example
 * tableShape(table) // "id:bigint:false,name:text:false|id"
 */
export function tableShape(t: Table): string {
  return `${t.columns.map((c) => `${c.name}:${c.type}:${c.generated}`).join(",")}|${t.primaryKey.join(",")}`;
}

/**
 * The staged copy on a standby, or null.
 *
 * @example
 * const staging = await readStaging(target.sql);
 */
export async function readStaging(sql: Db): Promise<Staging | null> {
  const [row] = await sql<
    { run_id: string; source: ProjectName; slot: string; tables: StagedTable[]; applied_lsn: string | null; started_at: Date }[]
  >`
    select run_id, source, slot, tables, applied_lsn::text, started_at from spillway.staging where id`;
  return row
    ? {
        runId: row.run_id,
        source: row.source,
        slot: row.slot,
        tables: row.tables,
        appliedLsn: row.applied_lsn,
        startedAt: row.started_at.toISOString(),
      }
    : null;
}

/**
 * Why a staged copy cannot be continued from `source` over `tables` (in load order), or
 * null when it can.
 *
 * @example
 * const problem = await stagingProblem(staging, source, tables);
 */
export async function stagingProblem(staging: Staging, source: Project, tables: Table[]): Promise<string | null> {
  if (staging.source !== source.name) return `it was copied from ${staging.source}, and ${source.name} is the active project now`;
  const shapes = tables.map((t) => `${t.schema}.${t.name}=${tableShape(t)}`);
  if (JSON.stringify(shapes) !== JSON.stringify(staging.tables.map((t) => `${t.table}=${t.shape}`)))
    return "the replicated tables changed since it began";
  if ((await slotRetainedBytes(source, staging.slot)) === null) return "its change capture slot is gone";
  return null;
}

/**
 * Drops a staged copy from the standby (stage tables and row), and its slot from the
 * source when given.
 *
 * @example
 * await discardStaging(target, source);
 */
export async function discardStaging(target: Project, source?: Project): Promise<void> {
  const staging = await readStaging(target.sql);
  if (!staging) return;
  await target.sql.begin(async (tx) => {
    for (const t of staging.tables) await tx.unsafe(`drop table if exists ${t.stage}`);
    await tx`delete from spillway.staging where id`;
  });
  if (source) await dropSlot(source, staging.slot);
}

/**
 * Starts a staged copy: the slot first (so that every later snapshot comes after it), then
 * the row that names it, with one entry per table in load order.
 *
 * @example
 * const staging = await beginStaging(source, target, tables, runId, slot);
 */
export async function beginStaging(source: Project, target: Project, tables: Table[], runId: string, slot: string): Promise<Staging> {
  await prepareCapture(source, tables, slot);
  const entries: StagedTable[] = tables.map((t, i) => ({
    table: `${t.schema}.${t.name}`,
    stage: qualify("spillway", `stage_${i}`),
    shape: tableShape(t),
    snapshot: null,
    rows: 0,
    bytes: 0,
  }));
  await target.sql.begin(
    "read write",
    (tx) => tx`
    insert into spillway.staging (id, run_id, source, slot, tables) values (true, ${runId}, ${source.name}, ${slot}, ${tx.json(entries as never)})
    on conflict (id) do update set run_id = excluded.run_id, source = excluded.source, slot = excluded.slot, tables = excluded.tables,
      applied_lsn = null, started_at = now(), updated_at = now()`,
  );
  return (await readStaging(target.sql))!;
}

/** What one invocation of a staged copy works with. */
export interface StagedInput {
  source: Project;
  target: Project;
  staging: Staging;
  /** The replicated tables in load order, as `staging.tables`. */
  tables: Table[];
  /** The standby's tables, as the run checked them. */
  targetCatalog: Catalog;
  schemas: string[];
  strategy: "copy" | "fdw";
  sourceUrl?: string;
  /** No new table is started after this time (one always is, so every call moves on). */
  deadline: number;
  /** A publish that would start after this time waits for the next call, which starts with it. */
  publishBy: number;
  onProgress(progress: Progress): void;
  /** The lease of the run: the stage's position moves only while it is held. */
  holder?: string;
  /** The table as its changes are applied (keyed by the replica identity); default as it is. */
  applyAs?: (table: Table) => Table;
  /** What is carried of Auth: its tables are staged from one snapshot, its changes collected and replayed at publish. */
  auth: AuthPlan;
  /** Runs in the publishing transaction, before it commits. */
  beforePublish(tx: TransactionSql, result: StagedResult): Promise<void>;
}

/**
 * Moves a staged copy on by one invocation: stages the tables not staged yet, each in one
 * target transaction from its own snapshot of the source; then applies the changes made
 * since, each table skipping what its snapshot saw, until the stage stands at one commit of
 * the active; then publishes it in one transaction (the replicated tables emptied and
 * refilled from the stage, as a one-shot full load does). Every step commits with its
 * position, so a kill at any moment loses at most the step under way, and the published
 * copy changes only in the last transaction.
 *
 * @example
 * const result = await continueStaging({ source, target, staging, tables, schemas, strategy: "copy", deadline, publishBy, onProgress, beforePublish });
 */
export async function continueStaging(input: StagedInput): Promise<StagedResult> {
  const { source, target, staging, tables } = input;
  const byName = new Map(tables.map((t) => [`${t.schema}.${t.name}`, t]));
  const progress: Progress = {
    phase: "load",
    table: null,
    tablesTotal: tables.length,
    tablesDone: staging.tables.filter((t) => t.snapshot !== null).length,
    rows: staging.tables.reduce((n, t) => n + t.rows, 0),
    bytes: staging.tables.reduce((n, t) => n + t.bytes, 0),
  };
  const result = (published: boolean, snapshotAt: string | null = null): StagedResult => ({
    published,
    tablesStaged: progress.tablesDone,
    tablesTotal: tables.length,
    rows: progress.rows,
    bytes: progress.bytes,
    snapshotAt,
    appliedLsn: null,
  });
  if (input.strategy === "fdw") await ensureFdwLink(target.sql, input.sourceUrl);
  const authSnapshot = input.auth.tables ? await stageAuth({ source, target, tables: input.auth.tables, strategy: input.strategy }) : null;

  let worked = false;
  for (const [i, entry] of staging.tables.entries()) {
    if (entry.snapshot !== null) continue;
    if (worked && Date.now() > input.deadline) return result(false);
    progress.table = entry.table;
    input.onProgress({ ...progress });
    const staged = await stageTable(input, byName.get(entry.table)!, entry, i, (n) => {
      progress.bytes += n;
    });
    entry.snapshot = staged.snapshot;
    progress.tablesDone += 1;
    progress.rows += staged.rows;
    if (input.strategy === "fdw") progress.bytes += staged.bytes;
    worked = true;
  }

  progress.phase = "catch-up";
  progress.table = null;
  input.onProgress({ ...progress });
  const applied = await applyChanges({
    source,
    target,
    stream: stageStream(staging, authSnapshot, input.holder),
    deadline: input.deadline,
    tables: new Map([
      ...staging.tables.map((e) => [e.table, asStage((input.applyAs ?? ((t) => t))(byName.get(e.table)!), e.stage)] as const),
      [AUTH_CHANGES, input.auth.stageChanges],
    ]),
  });
  if (applied.more) return result(false);
  if (worked && Date.now() > input.publishBy) return result(false);

  progress.phase = "commit";
  input.onProgress({ ...progress });
  const [snap] = await source.sql<{ at: Date }[]>`select now() as at`;
  return await publish(input, staging, result(true, snap!.at.toISOString()));
}

// A stage table has the same columns as plain ones: no identity, no generated values.
function asStage(table: Table, stage: string): Table {
  return { ...table, qualified: stage, columns: table.columns.filter((c) => !c.generated).map((c) => ({ ...c, identity: "" as const })) };
}

// The stage's change stream: each table skips the transactions its own snapshot saw (Auth's
// changes, those its staged copy saw). Its position moves only from where this stream read
// or last left it (and, given a holder, under that lease), so two appliers never both apply
// the same changes to the stage.
function stageStream(staging: Staging, authSnapshot: string | null, holder?: string): ChangeStream {
  const snapshots = new Map(staging.tables.map((t) => [t.table, t.snapshot === null ? null : visibleIn(t.snapshot)]));
  if (authSnapshot !== null) snapshots.set(AUTH_CHANGES, visibleIn(authSnapshot));
  let expected = staging.appliedLsn;
  return {
    slot: staging.slot,
    appliedLsn: staging.appliedLsn,
    seen: (xid, table) => snapshots.get(table)?.(xid) ?? false,
    async save(tx, appliedLsn) {
      if (holder) await holdLease(tx, holder);
      const moved = await tx`
        update spillway.staging set applied_lsn = ${appliedLsn}::pg_lsn, updated_at = now()
        where id and slot = ${staging.slot} and applied_lsn is not distinct from ${expected}::pg_lsn returning 1`;
      if (moved.length !== 1) throw positionMoved();
      expected = appliedLsn;
    },
  };
}

// One table into its stage table, with its snapshot, in one target transaction: a stage
// table without rows is plain columns (generated ones recomputed at publish), keyed after
// the load so that catching up finds rows by key.
async function stageTable(
  input: StagedInput,
  table: Table,
  entry: StagedTable,
  index: number,
  onBytes: (n: number) => void,
): Promise<{ snapshot: string; rows: number; bytes: number }> {
  const cols = copiedColumns(table);
  const stage = { ...table, qualified: entry.stage };
  const load = async (dst: TransactionSql, move: () => Promise<{ snapshot: string; rows: number; bytes: number }>) => {
    await canonical(dst);
    await dst.unsafe(`drop table if exists ${entry.stage}`);
    await dst.unsafe(`create table ${entry.stage} as select ${cols} from ${table.qualified} with no data`);
    await dst.unsafe(`alter table ${entry.stage} enable row level security`);
    const moved = await move();
    if (table.primaryKey.length > 0)
      await dst.unsafe(`alter table ${entry.stage} add primary key (${table.primaryKey.map(quoteIdent).join(", ")})`);
    const done: StagedTable = { ...entry, snapshot: moved.snapshot, rows: moved.rows, bytes: moved.bytes };
    await dst`update spillway.staging set tables = jsonb_set(tables, ${[String(index)]}::text[], ${dst.json(done as never)}), updated_at = now() where id`;
    return moved;
  };
  if (input.strategy === "fdw") {
    return await input.target.sql.begin(
      async (dst) =>
        await load(dst, async () => {
          const foreign = await importForeignTables(dst, input.schemas, [table]);
          const snapshot = await remoteSnapshot(dst);
          const moved = await pullTable(dst, stage, foreign.get(table.schema)!);
          await dropForeignSchemas(dst, foreign);
          return { snapshot, ...moved };
        }),
    );
  }
  return await input.source.sql.begin("isolation level repeatable read read only", async (src) => {
    await canonical(src, "set local row_security = off");
    const [snap] = await src<{ snapshot: string }[]>`select pg_catalog.pg_current_snapshot()::text as snapshot`;
    return await input.target.sql.begin(
      async (dst) =>
        await load(dst, async () => {
          let bytes = 0;
          const moved = await copyTable(
            src,
            dst,
            table,
            (n) => {
              bytes += n;
              onBytes(n);
            },
            entry.stage,
          );
          return { snapshot: snap!.snapshot, rows: moved.rows, bytes };
        }),
    );
  });
}

// The one transaction in which the stage becomes the standby's copy.
async function publish(input: StagedInput, staging: Staging, result: StagedResult): Promise<StagedResult> {
  const { source, target, tables } = input;
  return await target.sql.begin(async (dst) => {
    const [position] = await dst<{ applied_lsn: string | null }[]>`select applied_lsn::text from spillway.staging where id for update`;
    const published = { ...result, appliedLsn: position?.applied_lsn ?? null };
    const rebuild = await beginLoad(dst, input.targetCatalog, tables);
    for (const [i, table] of tables.entries()) {
      const cols = copiedColumns(table);
      await dst.unsafe(`insert into ${table.qualified} (${cols}) overriding system value select ${cols} from ${staging.tables[i]!.stage}`);
    }
    await rebuildAfterLoad(dst, rebuild);
    await publishAuthStage(dst, input.auth.tables);
    // Sequences are not transactional: read now, they are at least where the stage's rows need them.
    await setSequences(dst, (await readCatalog(source.sql, input.schemas)).sequences);
    for (const t of staging.tables) await dst.unsafe(`drop table ${t.stage}`);
    await dst`delete from spillway.staging where id`;
    await input.beforePublish(dst, published);
    return published;
  });
}
