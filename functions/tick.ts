import { recordActivity } from "./activity.ts";
import { unpublishUnidentified } from "./backup/identity.ts";
import { readPosition, readStaging, type Staging } from "./backup/position.ts";
import { cleanSlots } from "./backup/slots.ts";
import { dropSlot, slotRetainedBytes } from "./backup/source.ts";
import { discardStaging } from "./backup/staged.ts";
import { type BackupContext, runBackup } from "./backup.ts";
import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { considerFailover } from "./failover.ts";
import { ensureFence } from "./fence.ts";
import { type Lease, renewLease, requireLease, takeLease } from "./lease.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { type Decision, decide, type Phase } from "./policy.ts";
import { onBoth, type Projects } from "./project.ts";
import { trackReachability } from "./reachability.ts";
import { followingSince, latestRun, type Run } from "./runs.ts";
import { carriedSchemas } from "./schemas.ts";
import { convergeSettings, readSettings } from "./settings.ts";
import { settle } from "./settle.ts";
import { readStates, recordPhase } from "./state.ts";
import { readStatus, recordHealthChange, standbyLag } from "./status.ts";
import { type SwitchResult, switchOver } from "./switchover.ts";
import { measure, storeSample, switchFigures, usageAfterSwitch } from "./usage.ts";

/** What a tick did. */
export interface TickResult {
  action: "none" | "backup" | "switch" | "alert" | "busy";
  reason: string;
  phase: Phase | null;
  usage: Record<ProjectName, number | null>;
  run?: Run;
  switch?: SwitchResult;
  /** Set when the chosen action failed; the events say more. */
  error?: string;
}

const TICK_LEASE_SECONDS = 120;

/**
 * One scheduled pass under the lease: settle anything an interrupted operation left, measure
 * both projects and store a sample in each, decide (see `decide`), act, and remember the
 * phase. A tick that finds the lease taken does nothing and says so.
 *
 * @example
 * const result = await tick({ projects, events });
 */
export async function tick(ctx: BackupContext): Promise<TickResult> {
  const started = Date.now();
  let lease: Lease;
  try {
    lease = await takeLease(ctx.projects, "tick", TICK_LEASE_SECONDS);
  } catch (e) {
    if (e instanceof SpillwayError && e.code === "BUSY") {
      return { action: "busy", reason: e.message, phase: null, usage: { primary: null, secondary: null } };
    }
    throw e;
  }
  const renew = setInterval(() => void renewLease(ctx.projects, lease, TICK_LEASE_SECONDS).catch(() => undefined), 40_000);
  try {
    return await tickUnderLease(ctx, lease, started);
  } finally {
    clearInterval(renew);
    await lease.release();
  }
}

async function tickUnderLease(ctx: BackupContext, lease: Lease, started: number): Promise<TickResult> {
  const { projects, events } = ctx;
  const settled = await settle(projects, events);
  const [{ settings }, { copies, winner }] = await Promise.all([convergeSettings(projects, events), readStates(projects)]);
  // Tables an app's migration created since the last tick get the fence trigger, and tables
  // it left without a replica identity leave change capture (where the event triggers that
  // do both at once could not be installed).
  await onBoth(projects, async (p) => {
    await ensureFence(p, settings.schemas);
    await unpublishUnidentified(p);
  });
  const staging = await guardRetention(projects, winner.active, winner.standby, settings.maxRetainedBytes, events).catch(() => null);
  // Only while the lease is still this tick's: the next holder's copy makes its slot before a record names it.
  await requireLease(projects[winner.active].sql, lease.holder)
    .then(() => cleanSlots(projects, winner.active, winner.standby, events))
    .catch(() => undefined);
  const measured = await onBoth(projects, async (p) => {
    const m = await measure(p);
    await storeSample(p.sql, p.name, m.usedBytes, settings.quotaBytes[p.name]);
    return m;
  });
  await trackReachability(projects, measured, events).catch(() => undefined);
  await recordActivity(projects, measured).catch(() => undefined);
  const usage = { primary: null, secondary: null } as Record<ProjectName, number | null>;
  for (const name of PROJECT_NAMES) {
    const o = measured[name];
    if (o.ok) usage[name] = o.value.usedBytes / settings.quotaBytes[name];
  }
  const failover = await considerFailover(ctx, { winner, settings, measured, holder: lease.holder });
  if (failover.result)
    return { action: "switch", reason: `failover: ${failover.decision.reason}`, phase: "normal", usage, switch: failover.result };

  const activeCopy = copies[winner.active];
  const previous: Phase = activeCopy.ok ? activeCopy.value.phase : "normal";
  const standby = measured[winner.standby];
  const lastBackup = standby.ok ? await latestRun(projects[winner.standby].sql, "succeeded").catch(() => null) : null;
  const decision: Decision = decide({
    previous,
    activeUsage: usage[winner.active],
    thresholds: { backup: settings.backupThreshold, switch: settings.switchThreshold },
    autoBackup: settings.autoBackup,
    autoSwitch: settings.autoSwitch,
    standby: {
      reachable: standby.ok,
      hasBackup: lastBackup?.source === winner.active,
      usageAfterSwitch: standby.ok
        ? usageAfterSwitch(await switchFigures(projects[winner.active], projects[winner.standby], settings, standby.value.usedBytes))
        : null,
      continues: staging?.source === winner.active,
    },
    followAlways: settings.failover !== null,
  });
  if (decision.phase !== previous) {
    await events.record(
      decision.phase === "normal" ? "info" : "warn",
      "policy.phase",
      `${winner.active} moved from ${previous} to ${decision.phase}: ${decision.reason}`,
      { project: winner.active },
    );
  }
  const result: TickResult = { action: decision.action, reason: decision.reason, phase: decision.phase, usage };
  try {
    // What an old active committed is listed before anything is written to it.
    if (!settled.failoversListed && (decision.action === "backup" || decision.action === "switch"))
      throw new SpillwayError(
        "FAILOVER_UNRESOLVED",
        409,
        `no ${decision.action}: the changes of a project failed away from could not be listed`,
      );
    if (decision.action === "backup") {
      result.run = await runBackup(ctx, { mode: "auto", verify: false, follows: decision.follows }, lease);
      if (decision.follows && result.run.details.follows) await reportFollowing(ctx, winner.active, winner.standby).catch(() => undefined);
    } else if (decision.action === "switch") {
      // The switch's wall clock counts from the tick's start: the tick's call is the one limited.
      result.switch = await switchOver(ctx, { force: false }, lease, started);
    } else if (decision.action === "alert") {
      await events.record("warn", "policy.alert", decision.reason, { project: winner.active });
    }
  } catch (e) {
    result.error = events.redact(describeError(e));
  }
  if (!result.switch) {
    await recordPhase(projects[winner.active], winner.epoch, decision.phase).catch(() => undefined);
  }
  await readStatus(projects, (t) => events.redact(t))
    .then((status) => recordHealthChange(projects, events, status.health))
    .catch(() => undefined);
  return result;
}

/** How often the standby following the active is told: one summary, not a pair of events per tick. */
const FOLLOWING_SUMMARY_MS = 5 * 60_000;

// One `backup.following` event per FOLLOWING_SUMMARY_MS, of the following runs since the last.
async function reportFollowing(ctx: BackupContext, active: ProjectName, standby: ProjectName): Promise<void> {
  const target = ctx.projects[standby];
  const [last] = await target.sql<{ at: Date }[]>`
    select at from spillway.events where kind = 'backup.following' order by at desc limit 1`;
  if (last && Date.now() - last.at.getTime() < FOLLOWING_SUMMARY_MS) return;
  const since = last?.at.toISOString() ?? null;
  const [f, run, { settings }] = await Promise.all([
    followingSince(target.sql, since),
    latestRun(target.sql, "succeeded"),
    readSettings(ctx.projects),
  ]);
  if (f.runs === 0) return;
  const lag = run ? await standbyLag(ctx.projects[active], run, await carriedSchemas(ctx.projects[active].sql, settings.schemas)) : null;
  const minutes = Math.max(1, Math.round((Date.now() - Date.parse(since ?? f.firstAt!)) / 60_000));
  await ctx.events.record(
    "info",
    "backup.following",
    `${standby} follows ${active}: ${f.runs} incremental ${f.runs === 1 ? "backup" : "backups"} ${since ? `in the last ${minutes} min` : "so far"}, ${f.rows} rows; lag ${lag === null ? "unknown" : `${lag} s`}`,
    { project: standby, data: { runs: f.runs, rows: f.rows, lagSeconds: lag, since } },
  );
}

// A slot keeps WAL on the active until its changes are backed up; on a nearly full database
// that must not grow without bound. Past the limit the slot goes, and the next backup is full
// (or, for a staged one, begins anew). Answers the staged backup that is left, if any.
async function guardRetention(
  projects: Projects,
  active: ProjectName,
  standby: ProjectName,
  limit: number,
  events: EventLog,
): Promise<Staging | null> {
  const over = async (slot: string) => {
    const retained = await slotRetainedBytes(projects[active], slot);
    return retained !== null && retained > limit ? retained : null;
  };
  let staging = await readStaging(projects[standby].sql);
  const stagedRetained = staging?.source === active ? await over(staging.slot) : null;
  if (staging && stagedRetained !== null) {
    await discardStaging(projects[standby], projects[active]);
    await events.record(
      "warn",
      "backup.retention_guard",
      `the change capture slot of the full backup staged on ${standby} held ${stagedRetained} bytes of WAL on ${active}, over the limit of ${limit}: the staged backup was dropped, and the next backup starts a new one`,
      {
        project: active,
        data: { slot: staging.slot, retainedBytes: stagedRetained, maxRetainedBytes: limit },
      },
    );
    staging = null;
  }
  const position = await readPosition(projects[standby].sql);
  const retained = position?.source === active ? await over(position.slot) : null;
  if (position && retained !== null) {
    await dropSlot(projects[active], position.slot);
    await events.record(
      "warn",
      "backup.retention_guard",
      `the change capture slot on ${active} held ${retained} bytes of WAL, over the limit of ${limit}: it was dropped, and the next backup to ${standby} will be a full one`,
      {
        project: active,
        data: { slot: position.slot, retainedBytes: retained, maxRetainedBytes: limit },
      },
    );
  }
  return staging;
}
