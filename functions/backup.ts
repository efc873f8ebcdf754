import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { renewLease, takeLease, type Lease } from "./lease.ts";
import { onProject, type Db, type Projects, type Project } from "./project.ts";
import { changeCounter } from "./status.ts";
import { readSettings, type Settings } from "./settings.ts";
import { readActive } from "./state.ts";
import { readRun, type Run } from "./runs.ts";
import { fullLoad, type Progress } from "./backup/full.ts";
import { readCatalog, type Table } from "./backup/catalog.ts";
import { applyChanges, dropOtherSlots, dropSlot, newSlotName, prepareCapture, readPosition, slotRetainedBytes, tableSet, writePosition } from "./backup/incremental.ts";
import { schemaDiff } from "./backup/schema-diff.ts";

/** What `POST /force-backup` asks for. */
export interface BackupRequest {
  mode: "auto" | "full" | "incremental";
  verify: boolean;
}

/** What a backup works with. */
export interface BackupContext {
  projects: Projects;
  events: EventLog;
}

const LEASE_SECONDS = 120;
/** How long an operator's request waits for a running tick to give the lease back. */
const OPERATOR_WAIT_MS = 10_000;

/**
 * Runs one backup from the active project to the standby under the operation lease, and
 * records it as a run in the standby (its success is committed in the same transaction as
 * the copied data) with events for its start and end. Throws 409 `BUSY` when another
 * operation holds the lease, 503 `PROJECT_UNREACHABLE` when a project cannot be reached,
 * 409 `SCHEMA_MISMATCH` with every difference when the tables differ.
 *
 * @example
 * const run = await runBackup({ projects, events }, { mode: "auto", verify: false });
 */
export async function runBackup(ctx: BackupContext, request: BackupRequest, heldLease?: Lease): Promise<Run> {
  const lease = heldLease ?? await takeLease(ctx.projects, "backup", LEASE_SECONDS, { waitMs: OPERATOR_WAIT_MS });
  const renew = setInterval(() => void renewLease(ctx.projects, lease, LEASE_SECONDS).catch(() => undefined), (LEASE_SECONDS / 3) * 1000);
  try {
    return await backupUnderLease(ctx, request);
  } finally {
    clearInterval(renew);
    if (!heldLease) await lease.release();
  }
}

async function backupUnderLease(ctx: BackupContext, request: BackupRequest): Promise<Run> {
  const { projects, events } = ctx;
  const state = await readActive(projects);
  const source = projects[state.active];
  const target = projects[state.standby];
  await requireReachable(ctx, source, target);
  const { settings } = await readSettings(projects);
  const sourceCatalog = await readCatalog(source.sql, settings.schemas);
  // Checked before anything is written; a mismatch fails the run with every difference.
  const diffs = schemaDiff(sourceCatalog, await readCatalog(target.sql, settings.schemas));
  const choice = await chooseKind(source, target, sourceCatalog.tables);
  if (request.mode === "incremental" && choice.kind === "full") {
    throw new SpillwayError("INCREMENTAL_UNAVAILABLE", 409, `an incremental backup is not possible: ${choice.reason}; use mode "full" or "auto"`);
  }
  const kind = request.mode === "full" ? "full" as const : choice.kind;
  const reason = request.mode === "full" ? "full backup requested" : choice.reason;

  await target.sql`
    update spillway.runs set status = 'failed', finished_at = now(), error = 'interrupted before it could finish'
    where status = 'running'`;
  const id = crypto.randomUUID();
  const started = Date.now();
  await target.sql`
    insert into spillway.runs (id, kind, status, source, target, strategy, details)
    values (${id}, ${kind}, 'running', ${source.name}, ${target.name}, ${settings.strategy}, ${target.sql.json({ reason, verify: request.verify })})`;
  await events.record("info", "backup.started", `${kind} backup from ${source.name} to ${target.name} started (${reason}, strategy ${settings.strategy})`, {
    project: target.name, data: { runId: id, kind, strategy: settings.strategy, reason },
  });

  const progress = progressWriter(target, id);
  try {
    if (diffs.length > 0) {
      throw new SpillwayError("SCHEMA_MISMATCH", 409, `the standby's tables differ from the active's (${diffs.length} difference${diffs.length === 1 ? "" : "s"}): ${diffs.slice(0, 3).join("; ")}`, { differences: diffs });
    }
    const run = kind === "incremental"
      ? await incremental({ source, target, settings, id, started, progress })
      : await full({ source, target, settings, id, started, progress, verify: request.verify, tables: sourceCatalog.tables });
    await events.record("info", "backup.succeeded",
      `${kind} backup to ${target.name} finished: ${run.tables} tables, ${run.rows} rows, ${run.bytes} bytes in ${run.durationMs} ms${request.verify && kind === "full" ? ", verified" : ""}`,
      { project: target.name, data: { runId: id, kind, tables: run.tables, rows: run.rows, bytes: run.bytes, durationMs: run.durationMs, snapshotAt: run.snapshotAt } });
    return run;
  } catch (e) {
    await progress.flush();
    const error = await classify(e, source, target);
    const message = events.redact(describeError(error));
    await onProject(target, (sql) => sql`
      update spillway.runs set status = 'failed', finished_at = now(), duration_ms = ${Date.now() - started}, error = ${message},
        details = details || ${sql.json(error instanceof SpillwayError && error.details ? { failure: error.details } as never : {})}
      where id = ${id}`).catch(() => undefined);
    await events.record("error", error instanceof SpillwayError && error.code === "VERIFY_FAILED" ? "backup.verify_failed" : "backup.failed",
      `${kind} backup to ${target.name} failed: ${message}`,
      { project: target.name, data: { runId: id, code: error instanceof SpillwayError ? error.code : "BACKUP_FAILED", details: error instanceof SpillwayError ? error.details ?? null : null } });
    throw error instanceof SpillwayError ? error : new SpillwayError("BACKUP_FAILED", 500, `backup failed: ${message}; the standby keeps its previous copy`, { runId: id });
  }
}

interface RunInput {
  source: Project;
  target: Project;
  settings: Settings;
  id: string;
  started: number;
  progress: ReturnType<typeof progressWriter>;
}

// Incremental when the standby's copy came from this active through a slot that still
// exists, over the same tables; full otherwise, saying why.
async function chooseKind(source: Project, target: Project, tables: Table[]): Promise<{ kind: "full" | "incremental"; reason: string }> {
  const position = await readPosition(target.sql);
  if (!position) return { kind: "full", reason: "no earlier copy to build on: full backup" };
  if (position.source !== source.name) return { kind: "full", reason: `the standby's copy came from ${position.source}: full backup` };
  if ((await slotRetainedBytes(source, position.slot)) === null) return { kind: "full", reason: "the change capture slot is gone (retention guard or dropped): full backup" };
  if (JSON.stringify(position.tables) !== JSON.stringify(tableSet(tables))) return { kind: "full", reason: "the replicated tables changed: full backup" };
  return { kind: "incremental", reason: `changes since ${position.appliedLsn ?? "the last full copy"}` };
}

async function full(r: RunInput & { verify: boolean; tables: Table[] }): Promise<Run> {
  // The slot must exist before the copy's snapshot: then nothing falls between them.
  const slot = newSlotName(r.source.name, r.target.name);
  await prepareCapture(r.source, r.tables, slot);
  try {
    await fullLoad({
    source: r.source, target: r.target, schemas: r.settings.schemas, strategy: r.settings.strategy, verify: r.verify, sourceUrl: r.source.url,
    onProgress: r.progress.update,
    async beforeCommit(tx, res) {
      await writePosition(tx, { source: r.source.name, slot, baseSnapshot: res.snapshot, appliedLsn: null, tables: tableSet(r.tables) });
      await finishRun(tx, r, { tables: res.tables, rows: res.rows, bytes: res.bytes, snapshotAt: res.snapshotAt, changeCounter: res.changeCounter, extra: { perTable: res.perTable, verified: res.checksums !== null, slot } });
    },
    });
  } catch (e) {
    await dropSlot(r.source, slot).catch(() => undefined);
    throw e;
  }
  await r.progress.flush();
  await dropOtherSlots(r.source, r.source.name, r.target.name, slot).catch(() => undefined);
  return (await readRun(r.target.sql, r.id))!;
}

async function incremental(r: RunInput): Promise<Run> {
  const position = (await readPosition(r.target.sql))!;
  const targetCatalog = await readCatalog(r.target.sql, r.settings.schemas);
  const [snap] = await r.source.sql<{ at: Date }[]>`select now() as at`;
  const counter = await changeCounter(r.source, r.settings.schemas);
  const result = await applyChanges({
    source: r.source, target: r.target, position, tables: targetCatalog.tables,
    deadline: r.started + r.settings.budgetSeconds * 1000,
    onProgress: (rows, bytes) => r.progress.update({ phase: "load", table: null, tablesDone: 0, tablesTotal: 0, rows, bytes }),
  });
  await r.target.sql.begin((tx) => finishRun(tx, r, {
    tables: targetCatalog.tables.length, rows: result.rows, bytes: result.bytes, snapshotAt: result.more ? null : snap!.at.toISOString(),
    changeCounter: result.more ? null : counter, extra: { transactions: result.transactions, appliedLsn: result.appliedLsn, more: result.more },
  }));
  await r.progress.flush();
  return (await readRun(r.target.sql, r.id))!;
}

async function finishRun(tx: Db, r: RunInput, f: { tables: number; rows: number; bytes: number; snapshotAt: string | null; changeCounter: string | null; extra: Record<string, unknown> }): Promise<void> {
  await tx`
    update spillway.runs set status = 'succeeded', finished_at = clock_timestamp(), tables = ${f.tables}, rows = ${f.rows},
      bytes = ${f.bytes}, duration_ms = ${Date.now() - r.started}, snapshot_at = ${f.snapshotAt},
      progress = ${tx.json({ phase: "done", tablesDone: f.tables, tablesTotal: f.tables, rows: f.rows, bytes: f.bytes })},
      details = details || ${tx.json({ changeCounter: f.changeCounter, ...f.extra } as never)}
    where id = ${r.id}`;
}

async function requireReachable(ctx: BackupContext, source: Project, target: Project): Promise<void> {
  for (const p of [target, source]) {
    try {
      await onProject(p, (sql) => sql`select 1`);
    } catch (e) {
      await ctx.events.record("error", "backup.unreachable", `backup from ${source.name} to ${target.name} cannot start: ${describeError(e)}`, { project: p.name });
      throw e;
    }
  }
}

// A failure in the middle of a copy is a connection error from one side or the other:
// name the side that no longer answers.
async function classify(e: unknown, source: Project, target: Project): Promise<unknown> {
  if (e instanceof SpillwayError) return e;
  for (const p of [target, source]) {
    try {
      await onProject(p, (sql) => sql`select 1`);
    } catch (down) {
      return down;
    }
  }
  return e;
}

// Progress goes to the run row on its own connection, at most once a second, so /status
// can show a long copy moving.
function progressWriter(target: Project, id: string) {
  let latest: Progress | null = null;
  let lastWrite = 0;
  let chain: Promise<unknown> = Promise.resolve();
  const write = (p: Progress) => {
    chain = chain.then(() => target.sql`update spillway.runs set progress = ${target.sql.json({ ...p })}, tables = ${p.tablesDone}, rows = ${p.rows}, bytes = ${p.bytes} where id = ${id} and status = 'running'`).catch(() => undefined);
  };
  return {
    update(p: Progress) {
      latest = p;
      const now = Date.now();
      if (now - lastWrite >= 1000 || p.phase !== "load") {
        lastWrite = now;
        write(p);
      }
    },
    async flush() {
      if (latest) write(latest);
      await chain;
    },
  };
}
