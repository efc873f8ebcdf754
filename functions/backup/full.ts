import { SpillwayError } from "../errors.ts";
import type { Db } from "../project.ts";
import { type Progress, type Run, readRun } from "../runs.ts";
import { changeCounter } from "../status.ts";
import { copyAuth } from "./auth.ts";
import { foreignKeyOrder, readCatalog, type Table } from "./catalog.ts";
import { checksumTable, compareChecksums, type TableChecksum } from "./checksum.ts";
import { beginLoad, rebuildAfterLoad, setSequences } from "./load.ts";
import { tableSet, writePosition } from "./position.ts";
import { type BackupRun, guardOf, recordSuccess } from "./run.ts";
import { ruleDiff, schemaDiff, schemaMismatch } from "./schema-diff.ts";
import { dropOtherSlots, dropSlot, inSnapshot, newSlotName, prepareCapture } from "./source.ts";
import { type Channel, LinksApart } from "./transfer.ts";

/**
 * A one-shot full backup: a new slot on the active first (then nothing falls between it and
 * the copy's snapshot), then every replicated table (and Auth's carried ones) copied as one
 * point in time and published atomically: the active is read in one repeatable-read
 * snapshot, and inside it the standby is emptied and loaded in one transaction (indexes
 * dropped first and rebuilt after, as pg_restore loads), which also writes the new position
 * and the run's success. A failure or a kill at any moment leaves the standby's previous
 * copy as it was; the slot it built on is dropped once the new copy has committed.
 *
 * @example
 * const run = await fullBackup(planned);
 */
export async function fullBackup(run: BackupRun): Promise<Run> {
  const { source, target } = run;
  const slot = newSlotName(source.name, target.name);
  run.keeper.check();
  await prepareCapture(source, run.tables, slot);
  try {
    await run.transfer.prepare(source, target);
    await load(run, slot);
  } catch (e) {
    await dropSlot(source, slot).catch(() => undefined);
    throw e;
  }
  await run.progress.flush();
  await run.afterCommit?.();
  // A slot left here (a kill, a failed drop) is dropped by the next tick (cleanSlots).
  await dropOtherSlots(source, source.name, target.name, slot).catch(() => undefined);
  return (await readRun(target.sql, run.id))!;
}

// The active's snapshot wrapped around the standby's load transaction: what commits is one
// point in time of the active, with the position that follows it.
async function load(run: BackupRun, slot: string): Promise<void> {
  const { source, target } = run;
  const schemas = run.settings.schemas;
  await inSnapshot(source, async (src) => {
    // The tables as this snapshot sees them, checked again: DDL may have come since the run's check.
    const catalog = await readCatalog(src, schemas);
    const diffs = [
      ...schemaDiff(catalog, run.targetCatalog),
      ...ruleDiff(catalog, run.targetCatalog, { active: source.name, standby: target.name }),
    ];
    if (diffs.length > 0) throw schemaMismatch(diffs);
    const tables = foreignKeyOrder(catalog.tables, catalog.foreignKeys);
    const [snap] = await src<{ at: Date }[]>`select now() as at`;
    const counter = await changeCounter(src, schemas);
    const progress: Progress = { phase: "load", table: null, tablesDone: 0, tablesTotal: tables.length, rows: 0, bytes: 0 };
    run.progress.update({ ...progress });

    // Links that could not be used together are tried again in a new standby transaction
    // (this one rolled back before anything else is done in it), the last time over one.
    for (let attempt = 1; ; attempt++) {
      const loaded = await target.sql
        .begin(async (dst) => {
          const channel = await run.transfer.open(dst, src, schemas, tables, { lanes: attempt < LANE_ATTEMPTS ? undefined : 1 });
          const rebuild = await beginLoad(dst, run.targetCatalog, tables);
          const perTable: { table: string; rows: number; bytes: number }[] = [];
          for (const table of tables) {
            progress.table = `${table.schema}.${table.name}`;
            run.progress.update({ ...progress });
            const moved = await channel.move(table, table.qualified, (n) => {
              progress.bytes += n;
            });
            progress.rows += moved.rows;
            progress.tablesDone += 1;
            perTable.push({ table: `${table.schema}.${table.name}`, ...moved });
          }
          if (run.auth.tables) {
            const auth = await copyAuth(src, dst, run.auth.tables, channel.foreign);
            progress.rows += auth.rows;
            progress.bytes += auth.bytes;
          }

          progress.phase = "indexes";
          progress.table = null;
          run.progress.update({ ...progress });
          await rebuildAfterLoad(dst, rebuild);
          // Sequences are not transactional: read after the data, they are at least where the
          // snapshot's rows need them. Read in the transaction the load already holds: a query on
          // the pool would wait for a connection this run holds (forever, on a pool of one).
          await setSequences(dst, (await readCatalog(src, schemas)).sequences);
          if (run.verify) {
            progress.phase = "verify";
            run.progress.update({ ...progress });
            await verify(channel, dst, tables);
          }
          await channel.close();

          progress.phase = "commit";
          run.progress.update({ ...progress });
          run.keeper.check();
          const position = { source: source.name, slot, baseSnapshot: channel.snapshot, appliedLsn: null, tables: tableSet(run.tables) };
          await writePosition(dst, position, guardOf(run));
          await recordSuccess(dst, run, {
            tables: tables.length,
            rows: progress.rows,
            bytes: progress.bytes,
            snapshotAt: snap!.at.toISOString(),
            details: { changeCounter: counter, perTable, verified: run.verify, slot, lanes: channel.lanes },
          });
          return true;
        })
        .catch((e) => {
          if (e instanceof LinksApart) return false;
          throw e;
        });
      if (loaded) return;
    }
  });
}

// A load over several links is tried this many times, the last over one: each try costs
// the links' first round trips, and on a busy active a transaction may complete between
// their snapshots every time.
const LANE_ATTEMPTS = 3;

// Both sides' checksums of every table, the active's read in the copy's snapshot; throws
// 500 `VERIFY_FAILED` naming the tables that differ, which rolls the load back.
async function verify(channel: Channel, dst: Db, tables: Table[]): Promise<void> {
  const active: TableChecksum[] = [];
  const standby: TableChecksum[] = [];
  for (const table of tables) {
    active.push(await channel.checksum(table));
    standby.push(await checksumTable(dst, table));
  }
  const mismatches = compareChecksums(active, standby);
  if (mismatches.length > 0) {
    throw new SpillwayError("VERIFY_FAILED", 500, `verification failed for ${mismatches.length} table(s): ${mismatches.join("; ")}`, {
      tables: mismatches,
    });
  }
}
