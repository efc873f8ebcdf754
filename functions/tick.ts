import { readPosition, readStaging, type Staging } from "./backup/position.ts";
import { cleanSlots } from "./backup/slots.ts";
import { dropSlot, slotRetainedBytes } from "./backup/source.ts";
import { discardStaging } from "./backup/staged.ts";
import { type BackupContext, runBackup } from "./backup.ts";
import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { ensureFence } from "./fence.ts";
import { type Lease, renewLease, requireLease, takeLease } from "./lease.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { type Decision, decide, type Phase } from "./policy.ts";
import { onBoth, type Projects } from "./project.ts";
import { trackReachability } from "./reachability.ts";
import type { Run } from "./runs.ts";
import { latestRun } from "./runs.ts";
import { carriedSchemas } from "./schemas.ts";
import { convergeSettings, type Settings } from "./settings.ts";
import { settle } from "./settle.ts";
import { readStates, recordPhase } from "./state.ts";
import { type SwitchResult, switchOver } from "./switchover.ts";
import { type Measurement, measure, replicatedBytes, storeSample, usageAfterSwitch } from "./usage.ts";

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
  const [{ settings }, { copies, winner }] = await Promise.all([convergeSettings(projects, events), readStates(projects)]);
  // Tables an app's migration created since the last tick get the fence trigger (where the
  // event trigger that does it at once could not be installed).
  await onBoth(projects, (p) => ensureFence(p, settings.schemas));
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
      usageAfterSwitch: standby.ok ? await standbyAfterSwitch(projects, winner.active, winner.standby, standby.value, settings) : null,
      continues: staging?.source === winner.active,
    },
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
    await recordPhase(projects[winner.active], winner.epoch, decision.phase).catch(() => undefined);
  }
  return result;
}

// The standby's usage once it holds what the active holds now, by the switch's own formula.
async function standbyAfterSwitch(
  projects: Projects,
  active: ProjectName,
  standby: ProjectName,
  m: Measurement,
  settings: Settings,
): Promise<number> {
  // The active's carried schemas on both sides: what the standby holds besides stays after a switch.
  const schemas = await carriedSchemas(projects[active].sql, settings.schemas).catch(() => null);
  const sizes = await onBoth(projects, async (p) => replicatedBytes(p, schemas ?? (await carriedSchemas(p.sql, settings.schemas))));
  const source = sizes[active];
  const target = sizes[standby];
  return usageAfterSwitch({
    targetUsedBytes: m.usedBytes,
    targetQuotaBytes: settings.quotaBytes[standby],
    sourceReplicatedBytes: source.ok ? source.value : null,
    targetReplicatedBytes: target.ok ? target.value : 0,
  });
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
