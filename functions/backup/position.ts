import { SpillwayError } from "../errors.ts";
import { holdLease } from "../lease.ts";
import type { ProjectName } from "../names.ts";
import type { Db } from "../project.ts";
import { AUTH_CHANGES } from "./auth.ts";
import type { Table } from "./catalog.ts";
import { captureEntry } from "./drift.ts";
import { type Txn, visibleIn } from "./pgoutput.ts";

/** Where the standby's copy stands (`spillway.replica`). */
export interface ReplicaPosition {
  source: ProjectName;
  slot: string;
  baseSnapshot: string | null;
  appliedLsn: string | null;
  tables: string[];
}

/**
 * The tables as recorded with a copy (see `captureEntry`), sorted: what incremental backups
 * check them against.
 *
 * @example
 * tableSet(catalog.tables) // ["public.todos 16390 id:bigint:false|id"]
 */
export function tableSet(tables: Table[]): string[] {
  return tables.map(captureEntry).sort();
}

/**
 * The standby's position, or null after no full copy.
 *
 * @example
 * const position = await readPosition(target.sql);
 */
export async function readPosition(sql: Db): Promise<ReplicaPosition | null> {
  const [row] = await sql<
    { source: ProjectName; slot: string; base_snapshot: string | null; applied_lsn: string | null; tables: string[] }[]
  >`
    select source, slot, base_snapshot, applied_lsn::text, tables from spillway.replica where id`;
  return row
    ? { source: row.source, slot: row.slot, baseSnapshot: row.base_snapshot, appliedLsn: row.applied_lsn, tables: row.tables }
    : null;
}

/**
 * What a position write must find to succeed: the run's lease still held, and the position
 * as the run read it (null: none), so that only the run that read a position moves it.
 */
export interface PositionGuard {
  holder: string;
  expected: Pick<ReplicaPosition, "slot" | "appliedLsn"> | null;
}

/**
 * Checks a guard inside the transaction that is about to write the position, and keeps
 * both rows locked until it commits: the lease row shared (no other holder can take it
 * meanwhile), the position row for update (a second writer waits, then finds it moved).
 * Throws 409 `LEASE_LOST` or 409 `POSITION_MOVED`, which roll the transaction back.
 *
 * @example
 * await claimPosition(tx, { holder: lease.holder, expected: position });
 */
export async function claimPosition(tx: Db, guard: PositionGuard): Promise<void> {
  await holdLease(tx, guard.holder);
  const [row] = await tx<
    { slot: string; applied_lsn: string | null }[]
  >`select slot, applied_lsn::text from spillway.replica where id for update`;
  const same =
    row && guard.expected ? row.slot === guard.expected.slot && row.applied_lsn === guard.expected.appliedLsn : !row && !guard.expected;
  if (!same) throw positionMoved();
}

/**
 * The 409 `POSITION_MOVED` error: another run moved a position since this one read it.
 *
 * @example
 * throw positionMoved();
 */
export function positionMoved(): SpillwayError {
  return new SpillwayError(
    "POSITION_MOVED",
    409,
    "the standby's position moved since this run read it (another run applied changes or published a copy); nothing of this run was kept",
  );
}

/**
 * Records a new base for incremental backups, inside the transaction that publishes the
 * copy; with a guard, only if `claimPosition` allows it.
 *
 * @example
 * await writePosition(tx, { source: "primary", slot, baseSnapshot, appliedLsn: null, tables }, { holder, expected });
 */
export async function writePosition(tx: Db, p: ReplicaPosition, guard?: PositionGuard): Promise<void> {
  if (guard) await claimPosition(tx, guard);
  await tx`
    insert into spillway.replica (id, source, slot, base_snapshot, applied_lsn, tables, updated_at)
    values (true, ${p.source}, ${p.slot}, ${p.baseSnapshot}, ${p.appliedLsn}::pg_lsn, ${p.tables}, now())
    on conflict (id) do update set source = excluded.source, slot = excluded.slot, base_snapshot = excluded.base_snapshot,
      applied_lsn = excluded.applied_lsn, tables = excluded.tables, updated_at = now()`;
}

/** Where a copy stands in the active's change stream, and how it moves on. */
export interface ChangeStream {
  slot: string;
  /** The commit position of the last transaction applied; null when none was yet. */
  appliedLsn: string | null;
  /** True when the copy already holds what transaction `txn` did to `table` ("schema.name"). */
  seen(txn: Txn, table: string): boolean;
  /** Stores the new position inside the transaction that applied the changes up to it. */
  save(tx: Db, appliedLsn: string): Promise<void>;
}

/**
 * The change stream of the standby's published copy (`spillway.replica`). Each save moves
 * the position only from where this stream last left it, under the lease of `holder`.
 *
 * @example
 * const stream = replicaStream(position, lease.holder);
 */
export function replicaStream(position: ReplicaPosition, holder: string): ChangeStream {
  const visible = position.baseSnapshot === null ? null : visibleIn(position.baseSnapshot);
  let expected = position.appliedLsn;
  return {
    slot: position.slot,
    appliedLsn: position.appliedLsn,
    seen: (txn) => visible?.(txn) ?? false,
    async save(tx, appliedLsn) {
      await claimPosition(tx, { holder, expected: { slot: position.slot, appliedLsn: expected } });
      await tx`update spillway.replica set applied_lsn = ${appliedLsn}::pg_lsn, updated_at = now() where id`;
      // A failed save throws and ends the stream's use, so the next save follows this one.
      expected = appliedLsn;
    },
  };
}

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
 * Records a new staged copy (replacing any), at no position in the change stream yet.
 *
 * @example
 * await writeStaging(tx, { runId, source: "primary", slot, tables: entries });
 */
export async function writeStaging(tx: Db, s: Pick<Staging, "runId" | "source" | "slot" | "tables">): Promise<void> {
  await tx`
    insert into spillway.staging (id, run_id, source, slot, tables) values (true, ${s.runId}, ${s.source}, ${s.slot}, ${tx.json(s.tables as never)})
    on conflict (id) do update set run_id = excluded.run_id, source = excluded.source, slot = excluded.slot, tables = excluded.tables,
      applied_lsn = null, started_at = now(), updated_at = now()`;
}

/**
 * Names the run that continues a staged copy (a run that resumes it after its own was
 * marked failed).
 *
 * @example
 * await adoptStaging(tx, runId);
 */
export async function adoptStaging(tx: Db, runId: string): Promise<void> {
  await tx`update spillway.staging set run_id = ${runId} where id`;
}

/**
 * Records one table staged, in the transaction that loaded its stage table.
 *
 * @example
 * await recordStaged(dst, 0, { ...entry, snapshot, rows, bytes });
 */
export async function recordStaged(tx: Db, index: number, entry: StagedTable): Promise<void> {
  await tx`update spillway.staging set tables = jsonb_set(tables, ${[String(index)]}::text[], ${tx.json(entry as never)}), updated_at = now() where id`;
}

/**
 * Locks the staged copy's row for the transaction that publishes it, and answers its
 * position in the change stream.
 *
 * @example
 * const appliedLsn = await claimStaging(dst);
 */
export async function claimStaging(tx: Db): Promise<string | null> {
  const [row] = await tx<{ applied_lsn: string | null }[]>`select applied_lsn::text from spillway.staging where id for update`;
  return row?.applied_lsn ?? null;
}

/**
 * Forgets the staged copy (its stage tables are dropped by the caller, in the same transaction).
 *
 * @example
 * await deleteStaging(tx);
 */
export async function deleteStaging(tx: Db): Promise<void> {
  await tx`delete from spillway.staging where id`;
}

/**
 * The change stream of a staged copy: each table skips the transactions its own snapshot
 * saw (Auth's changes, those its staged copy saw, given `authSnapshot`). Its position moves
 * only from where this stream read or last left it, under the lease of `holder`, so two
 * appliers never both apply the same changes to the stage.
 *
 * @example
 * const stream = stageStream(staging, null, lease.holder);
 */
export function stageStream(staging: Staging, authSnapshot: string | null, holder: string): ChangeStream {
  const snapshots = new Map(staging.tables.map((t) => [t.table, t.snapshot === null ? null : visibleIn(t.snapshot)]));
  if (authSnapshot !== null) snapshots.set(AUTH_CHANGES, visibleIn(authSnapshot));
  let expected = staging.appliedLsn;
  return {
    slot: staging.slot,
    appliedLsn: staging.appliedLsn,
    seen: (txn, table) => snapshots.get(table)?.(txn) ?? false,
    async save(tx, appliedLsn) {
      await holdLease(tx, holder);
      const moved = await tx`
        update spillway.staging set applied_lsn = ${appliedLsn}::pg_lsn, updated_at = now()
        where id and slot = ${staging.slot} and applied_lsn is not distinct from ${expected}::pg_lsn returning 1`;
      if (moved.length !== 1) throw positionMoved();
      expected = appliedLsn;
    },
  };
}
