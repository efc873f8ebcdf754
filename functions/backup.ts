import { prepareAuthCapture, pruneAuthChanges } from "./backup/auth.ts";
import { planWithFacts, readFacts } from "./backup/facts.ts";
import { fullBackup } from "./backup/full.ts";
import { incrementalBackup } from "./backup/incremental.ts";
import { adoptStaging } from "./backup/position.ts";
import type { BackupRun } from "./backup/run.ts";
import { dropSlot } from "./backup/source.ts";
import { stagedBackup } from "./backup/staged.ts";
import { describeError, fromPostgres, isConnectionError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { requireNotHeld } from "./failover-hold.ts";
import { keepLease, type Lease, type LeaseKeeper, takeLease } from "./lease.ts";
import type { ProjectName } from "./names.ts";
import { type Outcome, onProject, type Project, type Projects, probe } from "./project.ts";
import { failInterrupted, failRun, progressWriter, type Run, readRun, startRun } from "./runs.ts";
import { type Runtime, readSettings } from "./settings.ts";
import { readActive, readStates } from "./state.ts";
import { carryStorageAfter, type StorageApis } from "./storage.ts";
import { type SwitchFigures, switchFigures, usageAfterSwitch } from "./usage.ts";

/** What `POST /force-backup` asks for. */
export interface BackupRequest {
  mode: "auto" | "full" | "incremental";
  verify: boolean;
  /**
   * False for a switch's catch-ups, which must finish in the call: a staged copy in
   * progress is left alone and a full copy is never staged. Default true.
   */
  continuable?: boolean;
  /** Stage a new full copy whatever its estimate says (default: when it would not fit the budget). */
  staged?: boolean;
  /** This call's budget, instead of the `budgetSeconds` setting. */
  budgetMs?: number;
  /**
   * The standby following the active at a tick: an incremental run that succeeds records no
   * events of its own (the tick summarises them, `backup.following`); failures still do.
   */
  follows?: boolean;
}

/** What a backup works with. */
export interface BackupContext {
  projects: Projects;
  events: EventLog;
  /** Called once a full copy has committed, before the slot it replaced is dropped; the crash tests end the process there. */
  afterCommit?: () => void | Promise<void>;
  /** Told by the entry (default node): picks the strategy when the setting is `auto`. */
  runtime?: Runtime;
  /** The runtime's wall-clock limit for one call, told by the entry: a tick's switch fits it (see `switchOver`). */
  wallClockMs?: number;
  /** Both projects' Storage APIs: Storage is carried after each backup that succeeds (null or absent: not carried). */
  storage?: StorageApis;
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
  const lease = heldLease ?? (await takeLease(ctx.projects, "backup", LEASE_SECONDS, { waitMs: OPERATOR_WAIT_MS }));
  const keeper = keepLease(ctx.projects, lease, LEASE_SECONDS);
  try {
    const run = await backupUnderLease(ctx, request, lease.holder, keeper);
    if (run.status === "succeeded" && ctx.storage) await carryStorageAfter(ctx, ctx.storage, run);
    return run;
  } finally {
    keeper.stop();
    if (!heldLease) await lease.release();
  }
}

// Read the facts, plan, act, record.
async function backupUnderLease(ctx: BackupContext, request: BackupRequest, holder: string, keeper: LeaseKeeper): Promise<Run> {
  const { projects, events } = ctx;
  const { copies, winner: state } = await readStates(projects);
  const source = projects[state.active];
  const target = projects[state.standby];
  await requireReachable(ctx, source, target, copies);
  // An old active whose changes are not listed yet holds the only record of them.
  await requireNotHeld(source, target.name, "a backup");
  const read = await readFacts(projects, events, ctx.runtime ?? "node", request, source, target, holder);
  keeper.check();
  const { plan, staging } = await planWithFacts(projects, events, read, source, target);

  if (plan.dropSlot) await dropSlot(source, plan.dropSlot);
  if (plan.broken) {
    await events.record("warn", "backup.capture_reset", `the next backup to ${target.name} cannot build on its copy: ${plan.reason}`, {
      project: target.name,
      data: { reason: plan.reason, slot: read.position?.slot ?? null },
    });
  }
  if (plan.refusal && !plan.refusal.recorded) throw plan.refusal.error;

  const kind = plan.kind === "incremental" ? "incremental" : "full";
  const staged = plan.kind === "staged";
  const quiet = request.follows === true && kind === "incremental";
  const { reason } = plan;
  const strategy = read.transfer.strategy;
  const started = Date.now();
  const resumed = staging && (await readRun(target.sql, staging.runId))?.status === "running" ? staging.runId : null;
  const id = resumed ?? crypto.randomUUID();
  if (resumed) await target.sql.begin("read write", (tx) => failInterrupted(tx, resumed));
  else {
    await target.sql.begin("read write", async (tx) => {
      await failInterrupted(tx, staging?.runId ?? null);
      await startRun(tx, {
        id,
        kind,
        source: source.name,
        target: target.name,
        strategy,
        details: {
          reason,
          verify: request.verify,
          staged,
          ...(quiet ? { follows: true } : {}),
          ...(read.auth.refused.length > 0 ? { authNotCarried: read.auth.refused } : {}),
        },
      });
      if (staging) await adoptStaging(tx, id);
    });
    if (!quiet)
      await events.record(
        "info",
        "backup.started",
        `${kind} backup from ${source.name} to ${target.name} started (${reason}, strategy ${strategy}${staged && !plan.continues ? ", staged: it may continue over several calls" : ""})`,
        { project: target.name, data: { runId: id, kind, strategy, reason, staged } },
      );
  }

  const progress = progressWriter(target, id);
  try {
    if (plan.refusal) throw plan.refusal.error;
    if (read.auth.tables) await prepareAuthCapture([source, target], read.auth.tables);
    const planned: BackupRun = {
      id,
      started,
      budgetMs: read.budgetMs,
      verify: request.verify,
      source,
      target,
      tables: read.tables,
      targetCatalog: read.targetCatalog,
      settings: read.settings,
      settingsVersion: read.settingsVersion,
      auth: read.auth,
      transfer: read.transfer,
      identities: read.identities,
      position: read.position,
      holder,
      keeper,
      progress,
      afterCommit: ctx.afterCommit,
    };
    const run =
      plan.kind === "staged"
        ? await stagedBackup(planned, staging)
        : plan.kind === "incremental"
          ? await incrementalBackup(planned)
          : await fullBackup(planned);
    if (run.status === "running") {
      const p = run.progress;
      await events.record(
        "info",
        "backup.continues",
        `full backup to ${target.name} continues on the next call: ${p.tablesDone ?? 0} of ${p.tablesTotal ?? 0} tables staged${p.phase === "catch-up" || p.phase === "commit" ? ", catching up" : ""}`,
        { project: target.name, data: { runId: id, progress: run.progress } },
      );
      return run;
    }
    if (!quiet)
      await events.record(
        "info",
        "backup.succeeded",
        `${kind} backup to ${target.name} finished: ${run.tables} tables, ${run.rows} rows, ${run.bytes} bytes in ${run.durationMs} ms${request.verify && kind === "full" ? ", verified" : ""}`,
        {
          project: target.name,
          data: {
            runId: id,
            kind,
            tables: run.tables,
            rows: run.rows,
            bytes: run.bytes,
            durationMs: run.durationMs,
            snapshotAt: run.snapshotAt,
          },
        },
      );
    if (read.auth.tables) await pruneAuthChanges(source).catch(() => undefined);
    return run;
  } catch (e) {
    await progress.flush();
    const error = await classify(e, source, target);
    const message = events.redact(describeError(error));
    const failure = error instanceof SpillwayError ? error.details : undefined;
    await onProject(target, (sql) => failRun(sql, id, { durationMs: Date.now() - started, message, failure })).catch(() => undefined);
    await events.record(
      "error",
      error instanceof SpillwayError && error.code === "VERIFY_FAILED" ? "backup.verify_failed" : "backup.failed",
      `${kind} backup to ${target.name} failed: ${message}`,
      {
        project: target.name,
        data: {
          runId: id,
          code: error instanceof SpillwayError ? error.code : "BACKUP_FAILED",
          details: error instanceof SpillwayError ? (error.details ?? null) : null,
        },
      },
    );
    const kept = staged ? "; the staged tables are kept and the next backup continues from them" : "";
    throw error instanceof SpillwayError
      ? error
      : new SpillwayError("BACKUP_FAILED", 500, `backup failed: ${message}; the standby keeps its previous copy${kept}`, { runId: id });
  }
}

// A project whose state was just read answers; only the others are probed, for the reason.
async function requireReachable(
  ctx: BackupContext,
  source: Project,
  target: Project,
  copies: Record<ProjectName, Outcome<unknown>>,
): Promise<void> {
  const probes = await Promise.all([target, source].map(async (p) => ({ p, down: copies[p.name].ok ? null : await probe(p) })));
  for (const { p, down } of probes) {
    if (down === null) continue;
    await ctx.events.record(
      "error",
      "backup.unreachable",
      `backup from ${source.name} to ${target.name} cannot start: ${describeError(down)}`,
      { project: p.name },
    );
    throw down;
  }
}

// A failure in the middle of a copy is a connection error from one side or the other:
// name the side that no longer answers.
// Otherwise a Postgres error the data or the schema caused gets its name.
async function classify(e: unknown, source: Project, target: Project): Promise<unknown> {
  if (e instanceof SpillwayError) return e;
  return (await probe(target)) ?? (await probe(source)) ?? fromPostgres(e, "the backup") ?? e;
}

/**
 * Refuses an operator's backup the standby has no room for: 409 `TARGET_UNFIT`, naming the
 * figures, when holding the active's replicated tables would put the standby at or over its
 * switch threshold (the estimate a switch makes, `usageAfterSwitch`). `POST /force-backup`
 * with `force: true` skips this check.
 *
 * @example
 * await requireStandbyRoom(projects);
 */
export async function requireStandbyRoom(projects: Projects): Promise<void> {
  const [{ active, standby }, { settings }] = await Promise.all([readActive(projects), readSettings(projects)]);
  const quota = settings.quotaBytes[standby];
  let f: SwitchFigures;
  try {
    f = await switchFigures(projects[active], projects[standby], settings);
  } catch (e) {
    // A project that does not answer: the backup itself says which, and what it left.
    if (isConnectionError(e)) return;
    throw e;
  }
  const after = usageAfterSwitch(f);
  if (after < settings.switchThreshold) return;
  const growth = Math.max(0, (f.sourceCopyBytes ?? 0) - f.targetReplicatedBytes);
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  throw new SpillwayError(
    "TARGET_UNFIT",
    409,
    `the backup would put ${standby} at ${pct(after)} of its quota (${f.targetUsedBytes} bytes used now + ${growth} bytes more of ${active}'s tables, quota ${quota} bytes), at or over its switch threshold of ${pct(settings.switchThreshold)}; raise quotaBytes.${standby}, or send force: true to back up anyway`,
    { project: standby, usageAfterBackup: after, switchThreshold: settings.switchThreshold, ...f },
  );
}
