import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { renewLease, takeLease, type Lease } from "./lease.ts";
import { onProject, type Projects, type Project } from "./project.ts";
import { readSettings } from "./settings.ts";
import { readActive } from "./state.ts";
import { readRun, type Run } from "./runs.ts";
import { fullLoad, type Progress } from "./backup/full.ts";

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
  const lease = heldLease ?? await takeLease(ctx.projects, "backup", LEASE_SECONDS);
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
  if (request.mode === "incremental") {
    throw new SpillwayError("INCREMENTAL_UNAVAILABLE", 409, "incremental backups are not available yet; use mode \"full\" or \"auto\"");
  }
  const { settings } = await readSettings(projects);
  const kind = "full" as const;
  const reason = request.mode === "full" ? "full backup requested" : "no incremental base: full backup";

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
    const result = await fullLoad({
      source, target, schemas: settings.schemas, strategy: settings.strategy, verify: request.verify, sourceUrl: source.url,
      onProgress: progress.update,
      async beforeCommit(tx, r) {
        await tx`
          update spillway.runs set status = 'succeeded', finished_at = clock_timestamp(), tables = ${r.tables}, rows = ${r.rows},
            bytes = ${r.bytes}, duration_ms = ${Date.now() - started}, snapshot_at = ${r.snapshotAt},
            progress = ${tx.json({ phase: "done", tablesDone: r.tables, tablesTotal: r.tables, rows: r.rows, bytes: r.bytes })},
            details = details || ${tx.json({ changeCounter: r.changeCounter, perTable: r.perTable, verified: r.checksums !== null })}
          where id = ${id}`;
      },
    });
    await progress.flush();
    const run = (await readRun(target.sql, id))!;
    await events.record("info", "backup.succeeded",
      `${kind} backup to ${target.name} finished: ${result.tables} tables, ${result.rows} rows, ${result.bytes} bytes in ${run.durationMs} ms${request.verify ? ", verified" : ""}`,
      { project: target.name, data: { runId: id, tables: result.tables, rows: result.rows, bytes: result.bytes, durationMs: run.durationMs, snapshotAt: result.snapshotAt } });
    return run;
  } catch (e) {
    await progress.flush();
    const error = await classify(ctx, e, source, target);
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
async function classify(ctx: BackupContext, e: unknown, source: Project, target: Project): Promise<unknown> {
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
