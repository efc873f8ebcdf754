import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { takeLease } from "./lease.ts";
import { onBoth, type Projects } from "./project.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { readSettings } from "./settings.ts";
import { readActive } from "./state.ts";
import { measure, storeSample } from "./usage.ts";

/** What a tick did. */
export interface TickResult {
  action: "none" | "backup" | "switch" | "alert" | "busy";
  reason: string;
  usage: Record<ProjectName, number | null>;
}

const TICK_LEASE_SECONDS = 60;

/**
 * One scheduled pass: take the lease, measure both projects and store a usage sample in
 * each. A tick that finds the lease taken does nothing and says so.
 *
 * @example
 * const result = await tick(projects, events);
 */
export async function tick(projects: Projects, events: EventLog): Promise<TickResult> {
  let lease;
  try {
    lease = await takeLease(projects, "tick", TICK_LEASE_SECONDS);
  } catch (e) {
    if (e instanceof SpillwayError && e.code === "BUSY") {
      return { action: "busy", reason: e.message, usage: { primary: null, secondary: null } };
    }
    throw e;
  }
  try {
    const [{ settings }, state] = await Promise.all([readSettings(projects), readActive(projects)]);
    const measured = await onBoth(projects, async (p) => {
      const m = await measure(p);
      await storeSample(p.sql, p.name, m.usedBytes, settings.quotaBytes[p.name]);
      return m.usedBytes / settings.quotaBytes[p.name];
    });
    const usage = { primary: null, secondary: null } as Record<ProjectName, number | null>;
    for (const name of PROJECT_NAMES) {
      const o = measured[name];
      if (o.ok) usage[name] = o.value;
      else await events.record("warn", "usage.unmeasured", `could not measure ${name}: ${describeError(o.error)}`, { project: name });
    }
    return { action: "none", reason: `active ${state.active} at ${formatUsage(usage[state.active])}`, usage };
  } finally {
    await lease.release();
  }
}

function formatUsage(u: number | null): string {
  return u === null ? "unknown usage" : `${(u * 100).toFixed(1)} %`;
}
