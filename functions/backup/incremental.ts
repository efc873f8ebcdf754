import type { Run } from "../runs.ts";
import { changeCounter } from "../status.ts";
import { applyChanges } from "./apply.ts";
import { AUTH_CHANGES, settleAuthSequences } from "./auth.ts";
import { replicaStream } from "./position.ts";
import { appliedAs, type BackupRun, recordSuccess } from "./run.ts";
import { markWal, skipToMark } from "./source.ts";

/**
 * An incremental backup: the active's changes since the standby's position, applied in
 * batches (`applyChanges`), each batch in one standby transaction with its position and
 * sequences (Auth's too, so that a switch after a batch finds them past its rows); the run
 * stops at a commit boundary once past its budget and says `more`. Its success is recorded
 * after the last batch.
 *
 * @example
 * const run = await incrementalBackup(planned);
 */
export async function incrementalBackup(run: BackupRun): Promise<Run> {
  const { source, target, settings, auth } = run;
  // The plan builds on a position only when the standby has one.
  const position = run.position!;
  const carried = auth.tables;
  // Auth not carried by this run (refused, or turned off): the standby's Auth copy is not
  // built on, and the captured changes that still come through are not applied to it.
  // Read-write of its own: a project past its quota may be read-only by default.
  if (!carried) await target.sql.begin("read write", (tx) => tx`delete from spillway.auth_copy where id`);
  // One after the other: on one connection of the active's, not two.
  const [snap] = await source.sql<{ at: Date }[]>`select now() as at`;
  const counter = await changeCounter(source.sql, settings.schemas);
  const mark = await markWal(source);
  // The apply alone, without the run's checks around it: how fast the standby follows the active.
  const applyStarted = Date.now();
  const result = await applyChanges({
    source,
    target,
    stream: replicaStream(position, run.holder),
    tables: new Map([
      ...run.targetCatalog.tables.map((t) => [`${t.schema}.${t.name}`, appliedAs(run, t)] as const),
      [AUTH_CHANGES, auth.changes],
    ]),
    deadline: run.started + run.budgetMs,
    sequences: settings.schemas,
    // Auth's rows arrive through its change table: their sequences are settled by name.
    settle: carried ? (tx) => settleAuthSequences(tx, carried) : undefined,
    onProgress: (rows, bytes) => run.progress.update({ phase: "load", table: null, tablesDone: 0, tablesTotal: 0, rows, bytes }),
  });
  // Every change committed before the mark is on the standby: what else the slot holds up to
  // it has nothing to carry.
  const skippedBytes = result.more ? 0 : await skipToMark(source, position.slot, mark);
  const done = await target.sql.begin("read write", (tx) =>
    recordSuccess(tx, run, {
      tables: run.targetCatalog.tables.length,
      rows: result.rows,
      bytes: result.bytes,
      snapshotAt: result.more ? null : snap!.at.toISOString(),
      details: {
        changeCounter: result.more ? null : counter,
        transactions: result.transactions,
        appliedLsn: result.appliedLsn,
        more: result.more,
        applyMs: Date.now() - applyStarted,
        skippedBytes,
      },
    }),
  );
  await run.progress.flush();
  return done;
}
