import type { EventLog } from "../events.ts";
import type { Project, Projects } from "../project.ts";
import { noteRun, type Progress, type Run, readRun } from "../runs.ts";
import { applyChanges } from "./apply.ts";
import { AUTH_CHANGES } from "./auth.ts";
import { discardAuthStage, publishAuthStage, stageAuth } from "./auth-stage.ts";
import { qualify, readCatalog, type Table } from "./catalog.ts";
import { canonical } from "./checksum.ts";
import { tableShape, unpublished } from "./drift.ts";
import { beginLoad, createStage, fillFromStage, keyStage, rebuildAfterLoad, setSequences, stageShape } from "./load.ts";
import {
  claimStaging,
  deleteStaging,
  readStaging,
  recordStaged,
  type StagedTable,
  type Staging,
  stageStream,
  tableSet,
  writePosition,
  writeStaging,
} from "./position.ts";
import { appliedAs, type BackupRun, guardOf, recordSuccess } from "./run.ts";
import { dropOtherSlots, dropSlot, newSlotName, PUBLICATION, prepareCapture, slotRetainedBytes } from "./source.ts";

/**
 * A full backup built over one or more calls, its progress kept in `spillway.staging` on
 * the standby. Each call stages the tables not staged yet, each in one standby transaction
 * from its own snapshot of the active; then applies the changes made since the slot, each
 * table skipping what its snapshot saw, until the stage stands at one commit of the active;
 * then publishes it in one transaction (the replicated tables emptied and refilled from the
 * stage, with the position and the run's success). Every step commits with its position,
 * so a kill loses at most the step under way, and the published copy changes only in the
 * last transaction. A call that stops at its budget leaves the run `running` (`continues`).
 *
 * @example
 * const run = await stagedBackup(planned, await continuableStaging(projects, events, source, target, tables));
 */
export async function stagedBackup(run: BackupRun, resumed: Staging | null): Promise<Run> {
  const { source, target } = run;
  if (!resumed) await target.sql.begin((tx) => discardAuthStage(tx));
  const staging = resumed ?? (await beginStaging(run, newSlotName(source.name, target.name)));
  const published = await continueStaging(run, staging);
  await run.progress.flush();
  if (published) await dropOtherSlots(source, source.name, target.name, staging.slot).catch(() => undefined);
  else await noteRun(target.sql, run.id, { continues: true });
  return (await readRun(target.sql, run.id))!;
}

/**
 * The standby's staged copy, when this run can continue it; one that cannot (another
 * source, other tables, its slot gone, the publication no longer covering a table) is
 * dropped with a warn event, and null answered: a new copy begins.
 *
 * @example
 * const staging = await continuableStaging(projects, events, source, target, tables);
 */
export async function continuableStaging(
  projects: Projects,
  events: EventLog,
  source: Project,
  target: Project,
  tables: Table[],
): Promise<Staging | null> {
  const staging = await readStaging(target.sql);
  if (!staging) return null;
  const missing = staging.source === source.name ? await unpublished(source.sql, PUBLICATION, tables) : [];
  const problem =
    (await stagingProblem(staging, source, tables)) ??
    (missing.length > 0 ? `the change capture publication no longer covers ${missing.join(", ")} (dropped and created again?)` : null);
  if (!problem) return staging;
  await discardStaging(target, projects[staging.source]).catch(() => discardStaging(target));
  await events.record(
    "warn",
    "backup.staging_discarded",
    `the full backup staged on ${target.name} since ${staging.startedAt} was dropped: ${problem}; a new one begins`,
    { project: target.name },
  );
  return null;
}

// Why a staged copy cannot be continued from `source` over `tables` (in load order), or null.
async function stagingProblem(staging: Staging, source: Project, tables: Table[]): Promise<string | null> {
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
    await deleteStaging(tx);
  });
  if (source) await dropSlot(source, staging.slot);
}

// A new staged copy: the slot first (so that every later snapshot comes after it), then the
// row that names it, with one entry per table in load order.
async function beginStaging(run: BackupRun, slot: string): Promise<Staging> {
  await prepareCapture(run.source, run.tables, slot);
  const tables: StagedTable[] = run.tables.map((t, i) => ({
    table: `${t.schema}.${t.name}`,
    stage: qualify("spillway", `stage_${i}`),
    shape: tableShape(t),
    snapshot: null,
    rows: 0,
    bytes: 0,
  }));
  await run.target.sql.begin("read write", (tx) => writeStaging(tx, { runId: run.id, source: run.source.name, slot, tables }));
  return (await readStaging(run.target.sql))!;
}

// One call's share of a staged copy; true when it published the copy.
async function continueStaging(run: BackupRun, staging: Staging): Promise<boolean> {
  const { source, target, tables, transfer } = run;
  const byName = new Map(tables.map((t) => [`${t.schema}.${t.name}`, t]));
  // No new table is started past the deadline (one always is, so every call moves on); a
  // publish that would start past half the budget waits for the next call, which starts with it.
  const deadline = run.started + run.budgetMs;
  const publishBy = run.started + run.budgetMs / 2;
  const progress: Progress = {
    phase: "load",
    table: null,
    tablesTotal: tables.length,
    tablesDone: staging.tables.filter((t) => t.snapshot !== null).length,
    rows: staging.tables.reduce((n, t) => n + t.rows, 0),
    bytes: staging.tables.reduce((n, t) => n + t.bytes, 0),
  };
  await transfer.prepare(source, target);
  const authSnapshot = run.auth.tables
    ? await stageAuth({ source, target, tables: run.auth.tables, strategy: transfer.strategy, settingsVersion: run.settingsVersion })
    : null;

  let worked = false;
  for (const [i, entry] of staging.tables.entries()) {
    if (entry.snapshot !== null) continue;
    if (worked && Date.now() > deadline) return false;
    progress.table = entry.table;
    run.progress.update({ ...progress });
    const staged = await stageTable(run, byName.get(entry.table)!, entry, i, (n) => {
      progress.bytes += n;
    });
    entry.snapshot = staged.snapshot;
    progress.tablesDone += 1;
    progress.rows += staged.rows;
    worked = true;
  }

  progress.phase = "catch-up";
  progress.table = null;
  run.progress.update({ ...progress });
  const applied = await applyChanges({
    source,
    target,
    stream: stageStream(staging, authSnapshot, run.holder),
    deadline,
    // A stage table holds no unique constraint but its key (`keyStage`): no order of
    // its rows' updates can meet one.
    tables: new Map([
      ...staging.tables.map(
        (e) => [e.table, { ...stageShape(appliedAs(run, byName.get(e.table)!)), uniqueColumns: [] as string[], into: e.stage }] as const,
      ),
      [AUTH_CHANGES, run.auth.stageChanges],
    ]),
  });
  if (applied.more) return false;
  if (worked && Date.now() > publishBy) return false;

  progress.phase = "commit";
  run.progress.update({ ...progress });
  const [snap] = await source.sql<{ at: Date }[]>`select now() as at`;
  await publish(run, staging, { rows: progress.rows, bytes: progress.bytes, snapshotAt: snap!.at.toISOString() });
  return true;
}

// One table into its stage table, in one standby transaction inside the strategy's snapshot
// of the active, recorded with that snapshot: a stage table without rows is plain columns
// (generated ones recomputed at publish), keyed after the load so that catching up finds
// rows by key.
async function stageTable(
  run: BackupRun,
  table: Table,
  entry: StagedTable,
  index: number,
  onBytes: (n: number) => void,
): Promise<{ snapshot: string; rows: number }> {
  return await run.transfer.fromSource(run.source, (src) =>
    run.target.sql.begin(async (dst) => {
      await canonical(dst);
      await createStage(dst, table, entry.stage);
      // One link: a staged table has no second transaction to try again in.
      const channel = await run.transfer.open(dst, src, run.settings.schemas, [table], { lanes: 1 });
      const moved = await channel.move(table, entry.stage, onBytes);
      await channel.close();
      await keyStage(dst, table, entry.stage);
      await recordStaged(dst, index, { ...entry, snapshot: channel.snapshot, rows: moved.rows, bytes: moved.bytes });
      return { snapshot: channel.snapshot, rows: moved.rows };
    }),
  );
}

// The one transaction in which the stage becomes the standby's copy, with the position and
// the run's success.
async function publish(run: BackupRun, staging: Staging, copied: { rows: number; bytes: number; snapshotAt: string }): Promise<void> {
  const { source, target, tables } = run;
  await target.sql.begin(async (dst) => {
    const appliedLsn = await claimStaging(dst);
    const rebuild = await beginLoad(dst, run.targetCatalog, tables);
    for (const [i, table] of tables.entries()) await fillFromStage(dst, table, staging.tables[i]!.stage);
    await rebuildAfterLoad(dst, rebuild);
    await publishAuthStage(dst, run.auth.tables);
    // Sequences are not transactional: read now, they are at least where the stage's rows need them.
    await setSequences(dst, (await readCatalog(source.sql, run.settings.schemas)).sequences);
    for (const t of staging.tables) await dst.unsafe(`drop table ${t.stage}`);
    await deleteStaging(dst);
    run.keeper.check();
    await writePosition(
      dst,
      { source: source.name, slot: staging.slot, baseSnapshot: null, appliedLsn, tables: tableSet(tables) },
      guardOf(run),
    );
    // A copy built over several calls has no single moment to compare against while the
    // active keeps changing: `spillway verify` checks it once writes pause.
    await recordSuccess(dst, run, {
      tables: tables.length,
      rows: copied.rows,
      bytes: copied.bytes,
      snapshotAt: copied.snapshotAt,
      details: { changeCounter: null, slot: staging.slot, verified: false, appliedLsn },
    });
  });
}
