/** The active project's phase. */
export type Phase = "normal" | "backup" | "critical";

/** What a tick should do. */
export type Action = "none" | "backup" | "switch" | "alert";

/** The figures the policy decides from. */
export interface PolicyInput {
  /** The phase decided at the previous tick (the hysteresis memory). */
  previous: Phase;
  /** Usage of the active project; null when it could not be measured. */
  activeUsage: number | null;
  thresholds: { backup: number; switch: number };
  autoBackup: boolean;
  autoSwitch: boolean;
  standby: {
    reachable: boolean;
    /** A backup from the active has completed to it. */
    hasBackup: boolean;
    /** Its usage once it holds the active's data; null when unknown. */
    usageAfterSwitch: number | null;
    /** A staged full backup from the active is in progress on it. */
    continues?: boolean;
  };
  /** How far below a threshold usage must fall before the phase steps down. Default 0.01. */
  hysteresis?: number;
  /** The standby follows the active at every tick, in every phase (setting `failover` on). */
  followAlways?: boolean;
}

/** The policy's answer. */
export interface Decision {
  action: Action;
  phase: Phase;
  reason: string;
  /** The backup only keeps the standby following the active (told in a summary, not run by run). */
  follows?: boolean;
}

const RANK: Record<Phase, number> = { normal: 0, backup: 1, critical: 2 };

/**
 * The phase of a usage, with hysteresis: it rises as soon as usage reaches a threshold, and
 * steps down only once usage is `hysteresis` below it, so usage hovering at a threshold
 * does not flap.
 *
 * @example
 * nextPhase("backup", 0.845, { backup: 0.85, switch: 0.9 }, 0.01) // "backup"
 */
export function nextPhase(previous: Phase, usage: number, t: { backup: number; switch: number }, hysteresis: number): Phase {
  const at = (u: number): Phase => (u >= t.switch ? "critical" : u >= t.backup ? "backup" : "normal");
  const up = at(usage);
  if (RANK[up] >= RANK[previous]) return up;
  const down = at(usage + hysteresis);
  return RANK[down] < RANK[previous] ? down : previous;
}

/**
 * Why the standby cannot take over, or null when it can.
 *
 * @example
 * standbyProblem({ reachable: false, hasBackup: true, usageAfterSwitch: null }, 0.9) // "the standby is unreachable"
 */
export function standbyProblem(s: PolicyInput["standby"], switchThreshold: number): string | null {
  if (!s.reachable) return "the standby is unreachable";
  if (!s.hasBackup) return "the standby has no completed backup of the active";
  if (s.usageAfterSwitch !== null && s.usageAfterSwitch >= switchThreshold) {
    return `the standby would be at ${(s.usageAfterSwitch * 100).toFixed(1)} % after a switch, at or over its switch threshold`;
  }
  return null;
}

/**
 * Decides a tick's action from both projects' figures: a backup at every tick once the
 * active reaches the backup threshold (the standby follows it, incremental when it can),
 * a switch when it reaches the switch threshold and the standby can take over, an alert
 * when it cannot (or automation is off) and backups meanwhile, nothing otherwise.
 *
 * @example
 * decide({ previous: "normal", activeUsage: 0.86, thresholds, autoBackup: true, autoSwitch: true, standby })
 * // { action: "backup", phase: "backup", reason: "..." }
 */
export function decide(input: PolicyInput): Decision {
  const decision = decideFromUsage(input);
  // A staged backup continues at every tick with nothing more pressing to do.
  if (decision.action === "none" && input.standby.continues && input.standby.reachable && input.activeUsage !== null) {
    return { ...decision, action: "backup", reason: `${decision.reason}; the staged full backup continues` };
  }
  // With failover on, a standby a tick behind is what bounds the data a failover loses.
  if (decision.action === "none" && input.followAlways && input.autoBackup && input.standby.reachable && input.activeUsage !== null) {
    return { ...decision, action: "backup", reason: `${decision.reason}; failover is on: the standby follows the active` };
  }
  return decision;
}

/** The figures a failover is decided from, all as a tick found them. */
export interface FailoverInput {
  /** The setting: null when failover is off. */
  failover: { afterSeconds: number; maxLagSeconds: number } | null;
  activeReachable: boolean;
  /** Ticks in a row that found the active unreachable, and for how long (seconds since the first). */
  down: { ticks: number; seconds: number } | null;
  standby: { reachable: boolean; hasBackup: boolean };
  /** When the standby last held every change of the active (its latest complete copy's moment); null when never. */
  inStepAt: string | null;
  /** When the active went silent: the last time a tick reached it. */
  silentAfter: string | null;
}

/** Whether to fail over, why, and how far behind the standby was when the active went silent. */
export interface FailoverDecision {
  failover: boolean;
  reason: string;
  lagSeconds: number | null;
}

/**
 * Whether the standby is published as the active project because the active is down: every
 * tick for `afterSeconds` found it unreachable, the standby answers and holds a copy of it,
 * and that copy was in step no more than `maxLagSeconds` before the active went silent.
 *
 * @example
 * decideFailover({ failover: { afterSeconds: 180, maxLagSeconds: 60 }, activeReachable: false,
 *   down: { ticks: 4, seconds: 190 }, standby: { reachable: true, hasBackup: true },
 *   inStepAt: "2026-12-03T10:00:00Z", silentAfter: "2026-12-03T10:00:30Z" })
 * // { failover: true, lagSeconds: 30, reason: "..." }
 */
export function decideFailover(input: FailoverInput): FailoverDecision {
  const no = (reason: string, lagSeconds: number | null = null) => ({ failover: false, reason, lagSeconds });
  const f = input.failover;
  if (!f) return no("failover is off");
  if (input.activeReachable) return no("the active project answers");
  if (!input.down || input.down.ticks < 2 || input.down.seconds < f.afterSeconds) {
    return no(`the active project has been unreachable for ${Math.floor(input.down?.seconds ?? 0)} s; failover waits ${f.afterSeconds} s`);
  }
  if (!input.standby.reachable) return no("the standby is unreachable too");
  if (!input.standby.hasBackup || input.inStepAt === null) return no("the standby holds no complete copy of the active project");
  const silent = input.silentAfter === null ? Number.NaN : Date.parse(input.silentAfter);
  const lagSeconds = Number.isNaN(silent) ? null : Math.max(0, Math.round((silent - Date.parse(input.inStepAt)) / 1000));
  if (lagSeconds === null) return no("when the active project went silent is not known");
  if (lagSeconds > f.maxLagSeconds) {
    return no(
      `the standby's copy was ${lagSeconds} s behind when the active project went silent, over maxLagSeconds (${f.maxLagSeconds} s)`,
      lagSeconds,
    );
  }
  return {
    failover: true,
    lagSeconds,
    reason: `the active project has been unreachable for ${Math.floor(input.down.seconds)} s (${input.down.ticks} ticks), over afterSeconds (${f.afterSeconds} s), and the standby was ${lagSeconds} s behind when it went silent`,
  };
}

function decideFromUsage(input: PolicyInput): Decision {
  const { previous, activeUsage, thresholds } = input;
  const pct = (u: number) => `${(u * 100).toFixed(1)} %`;
  if (activeUsage === null) {
    return { action: "alert", phase: previous, reason: "the active project could not be measured (unreachable?)" };
  }
  const phase = nextPhase(previous, activeUsage, thresholds, input.hysteresis ?? 0.01);
  const problem = standbyProblem(input.standby, thresholds.switch);
  const entered = RANK[phase] > RANK[previous];

  if (phase === "critical") {
    if (!input.autoSwitch) {
      return entered
        ? { action: "alert", phase, reason: `active at ${pct(activeUsage)}, at or over the switch threshold; auto switch is off` }
        : follow(input, phase, `active at ${pct(activeUsage)}; auto switch is off`);
    }
    if (problem && input.standby.reachable && !input.standby.hasBackup && input.autoBackup) {
      // The standby is fine but empty: back it up now, switch at the next tick.
      return {
        action: "backup",
        phase,
        reason: `active at ${pct(activeUsage)}, at or over the switch threshold; the standby needs a backup before it can take over`,
      };
    }
    if (problem) {
      return entered
        ? { action: "alert", phase, reason: `active at ${pct(activeUsage)}, at or over the switch threshold, but ${problem}` }
        : follow(input, phase, `active at ${pct(activeUsage)}; still cannot switch: ${problem}`);
    }
    return {
      action: "switch",
      phase,
      reason: `active at ${pct(activeUsage)}, at or over the switch threshold of ${pct(thresholds.switch)}`,
    };
  }

  if (phase === "backup") {
    if (entered && problem && !input.standby.reachable) {
      return { action: "alert", phase, reason: `active at ${pct(activeUsage)}, over the backup threshold, but ${problem}` };
    }
    if (!input.autoBackup) {
      return entered
        ? { action: "alert", phase, reason: `active at ${pct(activeUsage)}, over the backup threshold; auto backup is off` }
        : { action: "none", phase, reason: `active at ${pct(activeUsage)}; auto backup is off` };
    }
    if (entered || !input.standby.hasBackup) {
      return {
        action: "backup",
        phase,
        reason: `active at ${pct(activeUsage)}, at or over the backup threshold of ${pct(thresholds.backup)}`,
      };
    }
    return follow(input, phase, `active at ${pct(activeUsage)}${problem ? `; ${problem}` : ""}`);
  }

  return { action: "none", phase, reason: `active at ${pct(activeUsage)}, below the backup threshold` };
}

// Past the backup threshold the standby follows the active at every tick (a switch, or a
// forced one with the active gone, then finds it at most a tick behind), when it holds a
// backup to build on and can be reached.
function follow(input: PolicyInput, phase: Phase, why: string): Decision {
  const s = input.standby;
  if (!input.autoBackup || !s.reachable || !s.hasBackup) return { action: "none", phase, reason: why };
  return { action: "backup", phase, reason: `${why}; the standby follows the active`, follows: true };
}
