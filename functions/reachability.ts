import { describeError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { other, PROJECT_NAMES } from "./names.ts";
import { type Outcome, onBoth, type Projects } from "./project.ts";

/** Ticks in a row a project must be found down before it is told: one may be a blip. */
export const UNREACHABLE_TICKS = 2;

/**
 * What a tick tells of a project's reachability: `unreachable` on the tick that finds it
 * down for the `UNREACHABLE_TICKS`-th time in a row (once, not every tick after),
 * `reachable` when it answers again after that was told, else nothing.
 *
 * @example
 * reachabilityChange({ up: false, ticksDown: 2 }) // "unreachable"
 */
export function reachabilityChange(seen: { up: boolean; ticksDown: number }): "unreachable" | "reachable" | null {
  if (!seen.up) return seen.ticksDown === UNREACHABLE_TICKS ? "unreachable" : null;
  return seen.ticksDown >= UNREACHABLE_TICKS ? "reachable" : null;
}

/**
 * Counts, in the project a tick could reach, the ticks in a row that found the other one
 * down (`spillway.unreachable`), and records `project.unreachable` / `project.reachable`
 * events as `reachabilityChange` says. With both projects down there is nowhere to count.
 *
 * @example
 * await trackReachability(projects, measured, events);
 */
export async function trackReachability(
  projects: Projects,
  measured: Record<(typeof PROJECT_NAMES)[number], Outcome<unknown>>,
  events: EventLog,
): Promise<void> {
  for (const name of PROJECT_NAMES) {
    const seen = measured[name];
    if (!seen.ok) {
      const keeper = other(name);
      if (!measured[keeper].ok) continue;
      const [row] = await projects[keeper].sql<{ ticks: number; since: Date }[]>`
        insert into spillway.unreachable (project) values (${name})
        on conflict (project) do update set ticks = spillway.unreachable.ticks + 1
        returning ticks, since`;
      if (row && reachabilityChange({ up: false, ticksDown: row.ticks }) === "unreachable") {
        await events.record(
          "error",
          "project.unreachable",
          `${name} has been unreachable for ${row.ticks} ticks in a row, since ${row.since.toISOString()}: ${describeError(seen.error)}`,
          {
            project: name,
            data: { since: row.since.toISOString(), ticks: row.ticks },
          },
        );
      }
      continue;
    }
    const cleared = await onBoth(
      projects,
      (p) => p.sql<{ ticks: number; since: Date }[]>`
      delete from spillway.unreachable where project = ${name} returning ticks, since`,
    );
    const rows = PROJECT_NAMES.flatMap((n) => (cleared[n].ok ? cleared[n].value : []));
    const longest = rows.sort((a, b) => b.ticks - a.ticks)[0];
    if (longest && reachabilityChange({ up: true, ticksDown: longest.ticks }) === "reachable") {
      await events.record(
        "info",
        "project.reachable",
        `${name} is reachable again (unreachable for ${longest.ticks} ticks, since ${longest.since.toISOString()})`,
        {
          project: name,
          data: { since: longest.since.toISOString(), ticks: longest.ticks },
        },
      );
    }
  }
}
