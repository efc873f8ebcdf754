import type { LeaseKeeper } from "../lease.ts";
import type { Db, Project } from "../project.ts";
import { finishRun, type ProgressWriter, type Run, type RunFigures } from "../runs.ts";
import type { CarriedSettings } from "../schemas.ts";
import { type AuthPlan, recordAuthCopy, settleSessions } from "./auth.ts";
import type { Catalog, Table } from "./catalog.ts";
import { applyKey, type Identity } from "./identity.ts";
import type { PositionGuard, ReplicaPosition } from "./position.ts";
import type { Transfer } from "./transfer.ts";

/** What a planned run works with: the facts it was planned on, and where it records itself. */
export interface BackupRun {
  /** The run's id in the standby's `spillway.runs`. */
  id: string;
  /** When the run started (ms), which its budget counts from. */
  started: number;
  budgetMs: number;
  /** Checksum both sides once a one-shot full copy is loaded. */
  verify: boolean;
  source: Project;
  target: Project;
  /** The replicated tables, in load order (a table after those it references). */
  tables: Table[];
  /** The standby's tables, as the run checked them. */
  targetCatalog: Catalog;
  settings: CarriedSettings;
  /** The settings' version the run read: Auth's copy is recorded only if none changed meanwhile. */
  settingsVersion: number;
  auth: AuthPlan;
  transfer: Transfer;
  /** The active's replica identities: changes find their rows by them. */
  identities: Map<string, Identity>;
  /** The standby's position as the run read it (null: no copy yet). */
  position: ReplicaPosition | null;
  /** The lease this run holds. */
  holder: string;
  keeper: LeaseKeeper;
  progress: ProgressWriter;
  /** Called once a full copy has committed, before the slot it replaced is dropped; the crash tests end the process there. */
  afterCommit?: () => void | Promise<void>;
}

/**
 * The guard of the run's position write: its lease still held, the position as it read it.
 *
 * @example
 * await writePosition(tx, position, guardOf(run));
 */
export function guardOf(run: BackupRun): PositionGuard {
  return { holder: run.holder, expected: run.position };
}

/**
 * A replicated table as its changes are applied: keyed by what the active's change stream
 * sends to find a row (its replica identity).
 *
 * @example
 * const keyed = appliedAs(run, table);
 */
export function appliedAs(run: BackupRun, table: Table): Table {
  return applyKey(table, run.identities.get(`${table.schema}.${table.name}`));
}

/**
 * Records the run's success, with the record of Auth's copy it carried (and the standby's
 * sessions settled), inside the transaction that publishes the copy: the copy, its record
 * and the run commit together or not at all.
 *
 * @example
 * await recordSuccess(dst, run, { tables: 3, rows: 120, bytes: 8192, snapshotAt, details: { slot } });
 */
export async function recordSuccess(tx: Db, run: BackupRun, figures: RunFigures): Promise<Run> {
  await recordAuthCopy(tx, run.auth.tables ? run.source.name : null, run.auth.tables, run.settingsVersion, run.auth.generation);
  await settleSessions(tx, run.auth);
  return await finishRun(tx, run.id, figures);
}
