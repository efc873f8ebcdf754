import type { HeldFailover } from "./failover-hold.ts";
import type { ProjectName } from "./names.ts";
import { type Phase, standbyProblem } from "./policy.ts";
import type { Run } from "./runs.ts";

/** One thing an operator can act on. */
export interface HealthReason {
  code:
    | "active_unreachable"
    | "active_read_only"
    | "active_over_switch"
    | "standby_unreachable"
    | "standby_behind"
    | "switch_refused"
    | "little_headroom"
    | "backup_failed"
    | "slot_retention"
    | "auth_not_carried"
    | "no_tick"
    | "failover_unresolved";
  message: string;
}

/** `health` in `GET /status`: the worst of its reasons. */
export interface Health {
  state: "ok" | "degraded" | "critical";
  reasons: HealthReason[];
}

/** `afterSwitch` in `GET /status`: the standby right after a switch. */
export interface AfterSwitch {
  project: ProjectName;
  usedBytes: number;
  usage: number;
  /** Bytes below its switch threshold; negative when over it. */
  headroomBytes: number;
  /** How long the headroom lasts at the active's current growth; null without a growth. */
  days: number | null;
  basis: string;
}

/** What `assessHealth` judges from; `readStatus` gathers it. */
export interface HealthFacts {
  now: Date;
  active: ProjectName;
  standby: ProjectName;
  phase: Phase;
  thresholds: { backup: number; switch: number };
  activeReachable: boolean;
  activeError: string | null;
  activeUsage: number | null;
  activeReadOnly: boolean | null;
  standbyReachable: boolean;
  standbyError: string | null;
  /** The latest run into the standby, and whether a backup from the active has ever completed there. */
  lastBackup: (Pick<Run, "status" | "error" | "startedAt"> & { details?: Pick<Run["details"], "authNotCarried"> }) | null;
  hasBackup: boolean;
  standbyLagSeconds: number | null;
  /** Seconds between ticks, from the spacing of the samples; null before two. */
  tickSeconds: number | null;
  /** The latest tick's time (its sample), null before any. */
  lastTickAt: string | null;
  afterSwitch: AfterSwitch | null;
  slot: { retainedBytes: number; maxRetainedBytes: number } | null;
  /** Failovers whose old active is not backed up to until its changes are listed or acknowledged (`heldFailovers`). */
  heldFailovers?: HeldFailover[];
}

/** A tick older than this means nothing is watching usage. */
export const TICK_SILENCE_MS = 3 * 60_000;
/** Ticks the standby may lag in the backup phase before it counts as behind. */
export const BEHIND_TICKS = 2;
/** Headroom after a switch that lasts less than this buys little. */
export const LITTLE_HEADROOM_DAYS = 7;

const pct = (u: number) => `${(u * 100).toFixed(1)} %`;

function mb(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

/**
 * Judges Spillway's health from the status facts: `critical` when apps cannot write or a
 * needed switch cannot happen, `degraded` when protection is weaker than it looks, `ok`
 * otherwise; each reason says what to do.
 *
 * @example
 * assessHealth(facts) // { state: "degraded", reasons: [{ code: "backup_failed", message: "…" }] }
 */
export function assessHealth(f: HealthFacts): Health {
  const reasons: (HealthReason & { critical: boolean })[] = [];
  const add = (critical: boolean, code: HealthReason["code"], message: string) => reasons.push({ critical, code, message });
  const pressing = f.phase !== "normal";

  if (!f.activeReachable) {
    add(
      true,
      "active_unreachable",
      `${f.active} (active) cannot be reached${f.activeError ? `: ${f.activeError}` : ""}; apps cannot use it`,
    );
  } else {
    if (f.activeReadOnly) {
      add(true, "active_read_only", `${f.active} (active) is read-only, so app writes fail: free space on it, or switch to ${f.standby}`);
    }
    if (f.phase === "critical" && f.activeUsage !== null) {
      add(
        true,
        "active_over_switch",
        `${f.active} (active) is at ${pct(f.activeUsage)}, at or over its switch threshold of ${pct(f.thresholds.switch)}`,
      );
    }
  }

  if (!f.standbyReachable) {
    add(
      pressing,
      "standby_unreachable",
      `${f.standby} (standby) cannot be reached${f.standbyError ? `: ${f.standbyError}` : ""}; no backup or switch can happen until it answers`,
    );
  } else {
    const problem = standbyProblem(
      { reachable: true, hasBackup: f.hasBackup, usageAfterSwitch: f.afterSwitch?.usage ?? null },
      f.thresholds.switch,
    );
    if (problem) {
      const fix = !f.hasBackup ? "; a backup (Force backup) makes one" : `. ${fixes(f)}`;
      add(f.phase === "critical", "switch_refused", `a switch to ${f.standby} would be refused: ${problem}${fix}`);
    } else if (f.afterSwitch && littleHeadroom(f.afterSwitch, f.thresholds)) {
      const a = f.afterSwitch;
      const lasts =
        a.days === null
          ? ""
          : `, about ${a.days < 1 ? `${Math.round(a.days * 24)} hours` : `${a.days.toFixed(1)} days`} at ${f.active}'s growth`;
      add(
        false,
        "little_headroom",
        `a switch would buy little: ${f.standby} would be at ${pct(a.usage)} right after it, ${mb(Math.max(0, a.headroomBytes))} below its switch threshold${lasts}. ${fixes(f)}`,
      );
    }
    if (pressing && f.standbyLagSeconds !== null && f.tickSeconds !== null && f.standbyLagSeconds > BEHIND_TICKS * f.tickSeconds) {
      add(
        false,
        "standby_behind",
        `${f.standby} is ${f.standbyLagSeconds} s behind ${f.active}, more than ${BEHIND_TICKS} ticks (one every ${Math.round(f.tickSeconds)} s): the backups that follow it are not keeping up; see the events`,
      );
    }
  }

  if (f.lastBackup?.status === "failed") {
    add(
      false,
      "backup_failed",
      `the last backup to ${f.standby} (${f.lastBackup.startedAt}) failed: ${f.lastBackup.error ?? "no error recorded"}`,
    );
  }
  const authNotCarried = f.lastBackup?.details?.authNotCarried;
  if (f.lastBackup?.status === "succeeded" && authNotCarried && authNotCarried.length > 0) {
    add(
      false,
      "auth_not_carried",
      `the last backup to ${f.standby} (${f.lastBackup.startedAt}) carried the app's tables but not Auth's users: ${authNotCarried.slice(0, 2).join("; ")}. Upgrade GoTrue on ${f.standby} to match ${f.active} (or the other way round), then back up; until then a switch is refused`,
    );
  }
  if (f.slot && f.slot.retainedBytes > f.slot.maxRetainedBytes / 2) {
    add(
      false,
      "slot_retention",
      `the change capture slot keeps ${mb(f.slot.retainedBytes)} of WAL on ${f.active}, over half its cap of ${mb(f.slot.maxRetainedBytes)}: at the cap it is dropped and the next backup is a full one; back up now, or raise maxRetainedBytes`,
    );
  }
  for (const h of f.heldFailovers ?? []) {
    add(
      false,
      "failover_unresolved",
      h.note
        ? `${h.from} was failed away from (epoch ${h.epoch}) and ${h.note}: its tables were copied aside on it (schema spillway_divergent_${h.epoch}) and it is not backed up to; compare it with ${f.active} by hand, then POST /failover/ack {"epoch": ${h.epoch}} (docs/failover.md)`
        : `${h.from} was failed away from (epoch ${h.epoch}) and what it committed after the failover is not listed yet: it is not backed up to until a tick reaches it`,
    );
  }
  if (!f.lastTickAt) {
    add(pressing, "no_tick", "no tick has run yet: nothing watches usage until one does (spillway init schedules them)");
  } else if (f.now.getTime() - Date.parse(f.lastTickAt) > TICK_SILENCE_MS) {
    const minutes = Math.floor((f.now.getTime() - Date.parse(f.lastTickAt)) / 60_000);
    add(
      pressing,
      "no_tick",
      `no tick for ${minutes} min (the last at ${f.lastTickAt}): nothing watches usage; check the schedule (pg_cron job, or the server)`,
    );
  }

  const state = reasons.some((r) => r.critical) ? "critical" : reasons.length > 0 ? "degraded" : "ok";
  // The most pressing first: what an operator reads first is what to do first.
  const ordered = [...reasons.filter((r) => r.critical), ...reasons.filter((r) => !r.critical)];
  return { state, reasons: ordered.map(({ code, message }) => ({ code, message })) };
}

/**
 * Whether a switch would leave the new active with little room: at or past its backup
 * threshold at once, or with headroom that lasts less than `LITTLE_HEADROOM_DAYS`.
 *
 * @example
 * littleHeadroom({ usage: 0.87, days: null, … }, { backup: 0.85, switch: 0.9 }) // true
 */
export function littleHeadroom(a: Pick<AfterSwitch, "usage" | "days">, t: { backup: number; switch: number }): boolean {
  return a.usage >= t.backup || (a.days !== null && a.days < LITTLE_HEADROOM_DAYS);
}

function fixes(f: HealthFacts): string {
  return `What makes room: a larger plan for ${f.standby} (then raise its quota in the settings), reclaiming bloat on ${f.active} (VACUUM FULL or pg_repack of its largest tables), or moving data out of ${f.active}`;
}
