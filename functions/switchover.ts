import { authInStep, authNotReady, authRefusal } from "./auth-readiness.ts";
import { type AuthPlan, fencedSchemas, planAuth, recordAuthCopy } from "./backup/auth.ts";
import { readCatalog, readSequences } from "./backup/catalog.ts";
import { setSequences } from "./backup/load.ts";
import { readPosition, tableSet, writePosition } from "./backup/position.ts";
import { dropOtherSlots, dropSlot, newSlotName, prepareCapture, slotProgress } from "./backup/source.ts";
import { discardStaging } from "./backup/staged.ts";
import { runBackup } from "./backup.ts";
import { describeError, fromPostgres, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { requireNotHeld } from "./failover-hold.ts";
import { ensureFence, fence, liftFence, publishSwitch, writePublished } from "./fence.ts";
import { type Lease, renewLease, takeLease } from "./lease.ts";
import { other, type ProjectName } from "./names.ts";
import { onProject, type Projects, probe } from "./project.ts";
import { latestRun, type Run, recordSameData } from "./runs.ts";
import { type CarriedSettings, withCarriedSchemas } from "./schemas.ts";
import { convergeSettings, type Runtime } from "./settings.ts";
import { settle } from "./settle.ts";
import { type ProjectState, readActive, readProjectState } from "./state.ts";
import { changeCounter } from "./status.ts";
import {
  behind,
  carryStorageUntil,
  STORAGE_BUDGET_MS,
  type StorageApis,
  storageBehind,
  storageNotFenced,
  storageUnfenced,
} from "./storage.ts";
import {
  type Backlog,
  catchUpBeforeFenceUntil,
  catchUpBehindFenceUntil,
  fitsBehindFence,
  type SwitchClock,
  switchTooLong,
} from "./switch-budget.ts";
import { switchFigures, usageAfterSwitch } from "./usage.ts";

/** What `POST /force-switch` asks for. */
export interface SwitchRequest {
  to?: ProjectName;
  force: boolean;
}

/** The answer of a switch. */
export interface SwitchResult {
  from: ProjectName;
  to: ProjectName;
  epoch: number;
  durationMs: number;
  writesBlockedMs: number;
  /** Only on the forced path with the active unreachable: the target may lack changes since then. */
  dataLossSince?: string | null;
}

/** The steps of a switch, as named to `hooks.step`. */
export type SwitchStep = "pre-caught-up" | "fenced" | "caught-up" | "capture-reversed" | "published-target" | "published";

interface Context {
  projects: Projects;
  events: EventLog;
  runtime?: Runtime;
  /** The runtime's wall-clock limit for one call (the Edge Function's 150 s), told by the entry; unset: none. */
  wallClockMs?: number;
  /** Called after each step; the crash tests end the process there. */
  hooks?: { step(name: SwitchStep): void | Promise<void> };
  /** Both projects' Storage APIs: the switch publishes only with every object carried. */
  storage?: StorageApis;
}

/**
 * How long the switch copies Storage behind its fence: only what changed since the copy
 * before it, well within the time clients hold their writes (10 s).
 */
const STORAGE_BEHIND_FENCE_MS = 5_000;

const LEASE_SECONDS = 120;
/** Catch-up runs at most before the fence without a wall clock; the rest is caught up behind it. */
const PRE_FENCE_RUNS = 4;
/**
 * Steps the new active's sequences move past the old active's at the switch: the fenced old
 * active can still hand out numbers by `nextval` (it writes no table), and those must not
 * be handed out again.
 */
const SEQUENCE_GAP_STEPS = 1000;
/** How long making the reverse capture (publication, slot) may wait for locks behind the fence. */
const REVERSE_CAPTURE_TIMEOUT_MS = 10_000;
/** How long an operator's request waits for a running tick to give the lease back. */
const OPERATOR_WAIT_MS = 10_000;

/**
 * Switches the active project: fence the active (app writes fail at once with SQLSTATE
 * SPWFN), wait for transactions already in flight there, catch the target up, publish the
 * new state (new active, epoch + 1) in the target first, then in the old active, which stays
 * fenced. The same operation fails back. Refuses with 409 `TARGET_UNFIT` when the target is
 * unreachable, has never received a backup, would be at or over its switch threshold
 * (`force` overrides only this), or, with Auth carried, cannot hold the active's users or
 * holds no copy of its Auth in step with it (`authNotReady`), before anything is fenced;
 * with the active unreachable it needs `force` and says how far behind the target may be.
 * Under a wall clock (`wallClockMs`, counted from `startedAt`) the whole switch fits it
 * with margin, or it refuses with 409 `SWITCH_TOO_LONG` before fencing. A Postgres error
 * the data or the schema caused is a named error (`fromPostgres`).
 *
 * @example
 * const result = await switchOver({ projects, events }, { force: false });
 */
export async function switchOver(ctx: Context, request: SwitchRequest, heldLease?: Lease, startedAt = Date.now()): Promise<SwitchResult> {
  const lease = heldLease ?? (await takeLease(ctx.projects, "switch", LEASE_SECONDS, { waitMs: OPERATOR_WAIT_MS }));
  const renew = setInterval(() => void renewLease(ctx.projects, lease, LEASE_SECONDS).catch(() => undefined), (LEASE_SECONDS / 3) * 1000);
  const clock = ctx.wallClockMs ? { limitMs: ctx.wallClockMs, startedAt } : null;
  try {
    await settle(ctx.projects, ctx.events).catch(() => undefined);
    return await switchUnderLease(ctx, request, lease, clock);
  } catch (e) {
    throw fromPostgres(e, "the switch") ?? e;
  } finally {
    clearInterval(renew);
    if (!heldLease) await lease.release();
  }
}

async function switchUnderLease(ctx: Context, request: SwitchRequest, lease: Lease, clock: SwitchClock | null): Promise<SwitchResult> {
  const { projects, events } = ctx;
  const started = Date.now();
  const state = await readActive(projects);
  const from = state.active;
  const to = request.to ?? other(from);
  if (to === from) throw unfit(`${to} is already the active project (epoch ${state.epoch})`);
  const source = projects[from];
  const target = projects[to];
  const { settings: stored, version: settingsVersion } = await convergeSettings(projects, events);

  if ((await probe(target)) !== null) {
    await events.record("error", "switch.refused", `switch to ${to} refused: ${to} is unreachable`, { project: to });
    throw unfit(`${to} is unreachable`);
  }
  const lastBackup = await latestRun(target.sql, "succeeded");
  if (!lastBackup || lastBackup.source !== from) {
    await events.record("error", "switch.refused", `switch to ${to} refused: no backup from ${from} has completed to it`, { project: to });
    throw unfit(`no backup from ${from} has ever completed to ${to}; run a backup first`);
  }
  const sourceUp = (await probe(source)) === null;
  // Failovers held are recorded on the active: with it down, a forced switch says what it may lose.
  if (sourceUp) await requireNotHeld(source, to, "a switch");
  if (!sourceUp && !request.force) {
    throw new SpillwayError(
      "PROJECT_UNREACHABLE",
      503,
      `the active project ${from} is unreachable; force: true switches to ${to} anyway, which may lose the changes made on ${from} since its last backup (${lastBackup.snapshotAt})`,
      { project: from, lastBackupAt: lastBackup.snapshotAt },
    );
  }
  // The schemas the switch carries, as the active's catalog says (only read where it answers).
  const settings: CarriedSettings = sourceUp ? await withCarriedSchemas(source.sql, stored) : { ...stored, schemas: [] };
  if (sourceUp) {
    const after = usageAfterSwitch(await switchFigures(source, target, settings));
    if (after >= settings.switchThreshold && !request.force) {
      await events.record(
        "warn",
        "switch.refused",
        `switch to ${to} refused: its usage after the switch would be ${(after * 100).toFixed(1)} %, at or over its switch threshold`,
        { project: to },
      );
      throw unfit(
        `${to} would be at ${(after * 100).toFixed(1)} % of its quota after the switch, at or over its switch threshold of ${(settings.switchThreshold * 100).toFixed(0)} % (force: true overrides this)`,
        { usageAfterSwitch: after },
      );
    }
  }
  // Users who signed up since the target's last copy of Auth would be lost: no `force` for this.
  const auth = sourceUp ? await planAuth(source, target, settings) : null;
  if (auth) await refuseUnlessAuthReady(ctx, { from, to, auth });

  const epoch = state.epoch + 1;
  await events.record(
    "info",
    "switch.started",
    `switch from ${from} to ${to} started (epoch ${state.epoch} → ${epoch})${request.force ? ", forced" : ""}`,
    { project: to, data: { from, to, epoch, force: request.force } },
  );

  if (!sourceUp) {
    await writePublished(target, { to, epoch });
    const lagSeconds = lastBackup.snapshotAt ? Math.round((Date.now() - Date.parse(lastBackup.snapshotAt)) / 1000) : null;
    await events.record(
      "warn",
      "switch.forced",
      `${to} is active at epoch ${epoch} without a final catch-up: ${from} was unreachable; changes made on ${from} after ${lastBackup.snapshotAt} (${lagSeconds} s before the switch) may be missing`,
      {
        project: to,
        data: { dataLossSince: lastBackup.snapshotAt, lagSeconds },
      },
    );
    return { from, to, epoch, durationMs: Date.now() - started, writesBlockedMs: 0, dataLossSince: lastBackup.snapshotAt };
  }

  await ensureFence(source, fencedSchemas(settings));
  if (await storageUnfenced(source)) {
    const error = storageNotFenced(from);
    await events.record("error", "switch.refused", `switch to ${to} refused: ${error.message}`, { project: from });
    throw error;
  }
  // Catch up while apps still write, so that the catch-up behind the fence is a short one
  // (bounded: apps writing faster than the standby applies must not hold the switch off).
  if (clock) await catchUpToFit(ctx, lease, clock, { from, to });
  else await catchUp(ctx, lease, { maxRuns: PRE_FENCE_RUNS });
  // Storage in step before the fence, so that only what changes meanwhile is copied behind it.
  await carryStorageForSwitch(ctx, { from, to }, clock ? catchUpBeforeFenceUntil(clock) : Date.now() + STORAGE_BUDGET_MS, "before");
  // The catch-up carried Auth (in full, when the target's copy was stale): checked before the fence.
  if (auth) await refuseUnlessAuthReady(ctx, { from, to, auth, inStep: await authInStep(target, from, auth) });
  await ctx.hooks?.step("pre-caught-up");
  const fencedAt = Date.now();
  await fence(source, { active: from, epoch: state.epoch, naming: null, schemas: fencedSchemas(settings) });
  await events.record("info", "switch.fenced", `${from} is fenced: app writes wait until the new active project is published`, {
    project: from,
  });
  await ctx.hooks?.step("fenced");

  let run: Run | undefined;
  let newSlot: string | null = null;
  let publishing = false;
  try {
    // The fence's own wait for transactions in flight (at most 10 s) moves the end: the margin holds it.
    const fenceWaitMs = Date.now() - fencedAt;
    // Under a wall clock only changes are applied behind the fence: a full copy (the slot
    // dropped since, the tables changed) is refused before anything is copied.
    run = await catchUp(
      ctx,
      lease,
      clock ? { until: catchUpBehindFenceUntil(clock) + fenceWaitMs, mustEnd: true, incrementalOnly: true } : {},
    );
    const storageUntil = Date.now() + STORAGE_BEHIND_FENCE_MS;
    await carryStorageForSwitch(
      ctx,
      { from, to },
      clock ? Math.min(storageUntil, catchUpBehindFenceUntil(clock) + fenceWaitMs) : storageUntil,
      "behind",
    );
    // GoTrue migrated on one project since: the catch-up behind the fence refused Auth.
    if (auth && !(await authInStep(target, from, auth))) {
      throw authRefusal(`switch to ${to} refused: its copy of ${from}'s Auth fell out of step while it was caught up`, auth.refused);
    }
    // Read under the fence, after the last rows were: at least where every row needs them.
    const sequences = await readSequences(source.sql, settings.schemas);
    await target.sql.begin("read write", (tx) => setSequences(tx, sequences, { gapSteps: SEQUENCE_GAP_STEPS }));
    await ctx.hooks?.step("caught-up");
    // No app writes reach either project now: a slot made on the new active starts exactly
    // at what the old active holds, so backups the other way can be incremental at once.
    newSlot = await startReverseCapture(projects, { from, to, settings });
    await ctx.hooks?.step("capture-reversed");
    publishing = true;
    await publishSwitch(projects, {
      from,
      to,
      oldEpoch: state.epoch,
      epoch,
      holder: lease.holder,
      between: () => ctx.hooks?.step("published-target"),
    });
    await ctx.hooks?.step("published");
  } catch (e) {
    const outcome = publishing ? await afterFailedPublish(projects, { from, to, oldEpoch: state.epoch, epoch }) : "unpublished";
    if (outcome === "unpublished") {
      await liftFence(source, { from, epoch: state.epoch }).catch(() => undefined);
      if (newSlot) await dropSlot(target, newSlot).catch(() => undefined);
      await events.record(
        "error",
        "switch.failed",
        `switch from ${from} to ${to} failed and was rolled back (${from} stays active, unfenced): ${describeError(e)}`,
        { project: to },
      );
      throw e;
    }
    if (outcome === "unknown") {
      await events.record(
        "error",
        "switch.failed",
        `switch from ${from} to ${to} failed while publishing, and ${to} cannot be read: ${from} stays fenced until ${to} answers (the next tick settles it): ${describeError(e)}`,
        { project: to },
      );
      throw e;
    }
    await events.record(
      "warn",
      "switch.published_after_error",
      `${to} was published as the active project before an error (${describeError(e)}); the switch was completed: ${from} stays fenced`,
      { project: to },
    );
  }
  const writesBlockedMs = Date.now() - fencedAt;
  await recordSwitchCopy(projects, { from, to, settings }).catch(() => undefined);
  // Under the settings the switch read, as a run's record: `auth` turned off and on since
  // leaves sign-ups on the new active that nothing captured.
  await planAuth(target, source, settings)
    .then((auth) => source.sql.begin("read write", (tx) => recordAuthCopy(tx, to, auth.tables, settingsVersion, auth.generation)))
    .catch(() => undefined);
  // The old active feeds no backups any more: its slots would only hold WAL.
  await dropOtherSlots(source, from, to, null).catch(() => undefined);
  // A full backup staged on the new active has nothing left to feed.
  await discardStaging(target).catch(() => undefined);
  const durationMs = Date.now() - started;
  await events.record(
    "info",
    "switch.completed",
    `${to} is the active project (epoch ${epoch}); app writes were blocked for ${writesBlockedMs} ms; the final catch-up copied ${run?.rows ?? 0} rows`,
    {
      project: to,
      data: { from, to, epoch, durationMs, writesBlockedMs, runId: run?.id ?? null },
    },
  );
  return { from, to, epoch, durationMs, writesBlockedMs };
}

// Behind the fence nothing new comes: incremental runs go on until one ends with nothing
// left (each stops at the budget), so the target holds every change before it is published.
// Before the fence, `maxRuns` or `until` bounds it; with `until` each run's budget ends
// there, and with `mustEnd` a run still behind past it fails the switch.
async function catchUp(
  ctx: Context,
  lease: Lease,
  bound: { maxRuns?: number; until?: number; mustEnd?: boolean; incrementalOnly?: boolean },
): Promise<Run> {
  let rows = 0;
  let skippedBytes = 0;
  for (let n = 1; ; n++) {
    const budgetMs = bound.until === undefined ? undefined : Math.max(0, bound.until - Date.now());
    const mode = bound.incrementalOnly ? "incremental" : "auto";
    // Storage is carried by the switch itself, within its own bounds.
    const run = await runBackup({ ...ctx, storage: null }, { mode, verify: false, continuable: false, budgetMs }, lease).catch(
      (e: unknown) => {
        if (!(e instanceof SpillwayError && e.code === "INCREMENTAL_UNAVAILABLE")) throw e;
        throw new SpillwayError(
          "SWITCH_TOO_LONG",
          409,
          `the catch-up behind the fence would need a full copy, which does not fit this runtime's wall clock (${e.message}); the fence was lifted: run a backup, then switch again`,
        );
      },
    );
    rows += run.rows;
    skippedBytes += run.details.skippedBytes ?? 0;
    const summed = { ...run, rows, details: { ...run.details, skippedBytes } };
    if (run.details.more !== true) return summed;
    if (bound.until !== undefined && Date.now() >= bound.until) {
      if (!bound.mustEnd) return summed;
      throw new SpillwayError(
        "SWITCH_TOO_LONG",
        409,
        "the catch-up behind the fence did not end within this runtime's wall clock (apps wrote faster than estimated before the fence); the fence was lifted, try again",
      );
    }
    if (n >= (bound.maxRuns ?? Infinity)) return summed;
  }
}

// Under a wall clock: catch up while apps still write until a third of it has passed, then
// fence only if what is left fits behind the fence at the speed the catch-up went.
async function catchUpToFit(ctx: Context, lease: Lease, clock: SwitchClock, p: { from: ProjectName; to: ProjectName }): Promise<void> {
  const source = ctx.projects[p.from];
  const target = ctx.projects[p.to];
  const where = async () => {
    const position = await readPosition(target.sql);
    return position?.source === p.from ? { slot: position.slot, progress: await slotProgress(source, position.slot) } : null;
  };
  const before = await where();
  const started = Date.now();
  const run = await catchUp(ctx, lease, { until: catchUpBeforeFenceUntil(clock) });
  const caughtUpMs = Date.now() - started;
  const after = await where();
  if (!after?.progress) return;
  // A full copy made a new slot: its speed is not the catch-up's, which then counts as unmeasured.
  // WAL skipped to a mark (nothing in it to carry) was not applied: it says nothing of the speed.
  const skipped = run.details.skippedBytes ?? 0;
  const moved = before?.slot === after.slot && before.progress ? after.progress.consumedBytes - before.progress.consumedBytes - skipped : 0;
  const backlog: Backlog = { pendingBytes: after.progress.pendingBytes, caughtUpBytes: Math.max(0, moved), caughtUpMs };
  const estimate = fitsBehindFence(clock, Date.now(), backlog);
  if (estimate.fits) return;
  const error = switchTooLong(clock, estimate, backlog);
  await ctx.events.record("warn", "switch.refused", `switch to ${p.to} refused: ${error.message}`, {
    project: p.to,
    data: error.details as Record<string, unknown>,
  });
  throw error;
}

// Carries Storage until it is in step or `until`; a switch never publishes with objects
// missing: refused before the fence, or failed (the fence lifted) behind it.
async function carryStorageForSwitch(ctx: Context, p: { from: ProjectName; to: ProjectName }, until: number, when: "before" | "behind") {
  if (!ctx.storage) return;
  const carried = await carryStorageUntil(ctx.projects, ctx.storage, p.from, p.to, until);
  if (!behind(carried)) return;
  const error = storageBehind(p.to, carried);
  if (when === "before")
    await ctx.events.record("warn", "switch.refused", error.message, { project: p.to, data: error.details as Record<string, unknown> });
  throw error;
}

async function startReverseCapture(
  projects: Projects,
  p: { from: ProjectName; to: ProjectName; settings: CarriedSettings },
): Promise<string> {
  const tables = (await readCatalog(projects[p.to].sql, p.settings.schemas)).tables;
  const slot = newSlotName(p.to, p.from);
  // Behind the fence: a lock or a long transaction on the target must not hold it up unbounded.
  await prepareCapture(projects[p.to], tables, slot, { timeoutMs: REVERSE_CAPTURE_TIMEOUT_MS });
  await projects[p.from].sql.begin("read write", (tx) =>
    writePosition(tx, { source: p.to, slot, baseSnapshot: null, appliedLsn: null, tables: tableSet(tables) }),
  );
  return slot;
}

// At the switch the old active holds exactly what the new active holds (the final catch-up
// made them equal and the fence kept it so): record that as its latest copy, so that a
// failback does not need a backup first.
async function recordSwitchCopy(projects: Projects, p: { from: ProjectName; to: ProjectName; settings: CarriedSettings }): Promise<void> {
  await recordSameData(projects[p.from].sql, {
    source: p.to,
    target: p.from,
    reason: `the switch to ${p.to} left ${p.from} holding the same data`,
    changeCounter: await changeCounter(projects[p.to].sql, p.settings.schemas),
  });
}

async function refuseUnlessAuthReady(
  ctx: Context,
  p: { from: ProjectName; to: ProjectName; auth: AuthPlan; inStep?: boolean },
): Promise<void> {
  const problem = authNotReady({ from: p.from, to: p.to, refused: p.auth.refused, lacking: p.auth.lacking, inStep: p.inStep });
  if (problem === null) return;
  await ctx.events.record("error", "switch.refused", `switch to ${p.to} refused: ${problem}`, {
    project: p.to,
    data: { auth: p.auth.refused },
  });
  throw authRefusal(`switch to ${p.to} refused: ${problem}`, p.auth.refused);
}

function unfit(message: string, details?: Record<string, unknown>): SpillwayError {
  return new SpillwayError("TARGET_UNFIT", 409, message, details);
}

// A failure while publishing: once the target holds the new epoch, the switch has happened
// (apps may already write there), so the old active must stay fenced and learn the new
// state; only when the target is known not to have it may the old active be unfenced.
async function afterFailedPublish(
  projects: Projects,
  p: { from: ProjectName; to: ProjectName; oldEpoch: number; epoch: number },
): Promise<"published" | "unpublished" | "unknown"> {
  let target: ProjectState;
  try {
    // Locking the row waits for a publish whose commit is still under way there.
    target = await onProject(projects[p.to], (sql) =>
      sql.begin("read write", async (tx) => {
        await tx`set local lock_timeout = '5s'`;
        await tx`select 1 from spillway.state where id for update`;
        return await readProjectState(tx);
      }),
    );
  } catch {
    return "unknown";
  }
  if (target.epoch < p.epoch) return "unpublished";
  await writePublished(projects[p.from], { to: p.to, epoch: p.epoch, since: target.since }).catch(() => undefined);
  return "published";
}
