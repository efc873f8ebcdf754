import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { takeLease, renewLease, type Lease } from "./lease.ts";
import { onBoth, onProject, type Outcome, type Projects } from "./project.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { readSettings } from "./settings.ts";
import { readStates } from "./state.ts";
import { measure, storeSample, type Measurement } from "./usage.ts";
import { decide, type Decision, type Phase } from "./policy.ts";
import { latestRun } from "./runs.ts";
import { runBackup, type BackupContext } from "./backup.ts";
import { switchOver, type SwitchResult } from "./switchover.ts";
import { settle } from "./settle.ts";
import { dropSlot, readPosition, slotRetainedBytes } from "./backup/incremental.ts";
import type { Run } from "./runs.ts";
import { discardStaging, readStaging, type Staging } from "./backup/staged.ts";

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
    return await tickUnderLease(ctx, lease);
  } finally {
    clearInterval(renew);
    await lease.release();
  }
}

async function tickUnderLease(ctx: BackupContext, lease: Lease): Promise<TickResult> {
  const { projects, events } = ctx;
  await settle(projects, events);
  const [{ settings }, { copies, winner }] = await Promise.all([readSettings(projects), readStates(projects)]);
  const staging = await guardRetention(projects, winner.active, winner.standby, settings.maxRetainedBytes, events).catch(() => null);
  const measured = await onBoth(projects, async (p) => {
    const m = await measure(p);
    await storeSample(p.sql, p.name, m.usedBytes, settings.quotaBytes[p.name]);
    return m;
  });
  const usage = { primary: null, secondary: null } as Record<ProjectName, number | null>;
  for (const name of PROJECT_NAMES) {
    const o = measured[name];
    if (o.ok) usage[name] = o.value.usedBytes / settings.quotaBytes[name];
  }

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
      usageAfterSwitch: usageAfterSwitch(measured[winner.active], standby, settings.quotaBytes[winner.standby]),
      continues: staging?.source === winner.active,
    },
  });
  if (decision.phase !== previous) {
    await events.record(decision.phase === "normal" ? "info" : "warn", "policy.phase", `${winner.active} moved from ${previous} to ${decision.phase}: ${decision.reason}`, { project: winner.active });
  }
  const result: TickResult = { action: decision.action, reason: decision.reason, phase: decision.phase, usage };
  try {
    if (decision.action === "backup") {
      result.run = await runBackup(ctx, { mode: "auto", verify: false }, lease);
    } else if (decision.action === "switch") {
      result.switch = await switchOver(ctx, { force: false }, lease);
    } else if (decision.action === "alert") {
      await events.record("warn", "policy.alert", decision.reason, { project: winner.active });
    }
  } catch (e) {
    result.error = events.redact(describeError(e));
  }
  if (!result.switch) {
    await onProject(projects[winner.active], (sql) => sql.begin("read write", (tx) => tx`update spillway.state set phase = ${decision.phase} where id and epoch = ${winner.epoch}`)).catch(() => undefined);
  }
  return result;
}

// Once it holds the active's data, the standby weighs about what the active weighs now.
function usageAfterSwitch(active: Outcome<Measurement>, standby: Outcome<Measurement>, quota: number): number | null {
  if (!standby.ok) return null;
  return Math.max(standby.value.usedBytes, active.ok ? active.value.usedBytes : 0) / quota;
}

// A slot keeps WAL on the active until its changes are backed up; on a nearly full database
// that must not grow without bound. Past the limit the slot goes, and the next backup is full
// (or, for a staged one, begins anew). Answers the staged backup that is left, if any.
async function guardRetention(projects: Projects, active: ProjectName, standby: ProjectName, limit: number, events: EventLog): Promise<Staging | null> {
  const over = async (slot: string) => {
    const retained = await slotRetainedBytes(projects[active], slot);
    return retained !== null && retained > limit ? retained : null;
  };
  let staging = await readStaging(projects[standby].sql);
  const stagedRetained = staging?.source === active ? await over(staging.slot) : null;
  if (staging && stagedRetained !== null) {
    await discardStaging(projects[standby], projects[active]);
    await events.record("warn", "backup.retention_guard", `the change capture slot of the full backup staged on ${standby} held ${stagedRetained} bytes of WAL on ${active}, over the limit of ${limit}: the staged backup was dropped, and the next backup starts a new one`, {
      project: active, data: { slot: staging.slot, retainedBytes: stagedRetained, maxRetainedBytes: limit },
    });
    staging = null;
  }
  const position = await readPosition(projects[standby].sql);
  const retained = position?.source === active ? await over(position.slot) : null;
  if (position && retained !== null) {
    await dropSlot(projects[active], position.slot);
    await events.record("warn", "backup.retention_guard", `the change capture slot on ${active} held ${retained} bytes of WAL, over the limit of ${limit}: it was dropped, and the next backup to ${standby} will be a full one`, {
      project: active, data: { slot: position.slot, retainedBytes: retained, maxRetainedBytes: limit },
    });
  }
  return staging;
}
