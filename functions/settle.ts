import { resolveFailovers } from "./divergent.ts";
import { describeError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { fence, liftFence, writePublished } from "./fence.ts";
import { PROJECT_NAMES } from "./names.ts";
import type { Projects } from "./project.ts";
import { readSettings } from "./settings.ts";
import { readStates } from "./state.ts";

/** What `settle` changed. */
export interface Settled {
  propagated: string[];
  unfenced: string | null;
  /** The standby, when this fenced it (before its first switch, or after a forced one). */
  fencedStandby?: string;
  /** False when the changes of a project failed away from could not be listed: nothing may be backed up to it now. */
  failoversListed: boolean;
}

/**
 * Brings both copies of the state in line with the highest epoch, after anything that was
 * interrupted: a copy left at a lower epoch gets the winner's state (fenced, when it is not
 * the active project), and an active project left fenced by a switch that never finished is
 * unfenced (its epoch did not move, so it is still the one apps must use). An old active
 * failed away from is fenced at once when it answers again, and its divergent changes are
 * listed (`resolveFailovers`). Must run under the operation lease, so that no switch is in
 * progress.
 *
 * @example
 * await settle(projects, events);
 */
export async function settle(projects: Projects, events: EventLog): Promise<Settled> {
  const { copies, winner } = await readStates(projects);
  const out: Settled = { propagated: [], unfenced: null, failoversListed: true };
  for (const name of PROJECT_NAMES) {
    const copy = copies[name];
    if (!copy.ok || copy.value.epoch >= winner.epoch) continue;
    const fenced = name !== winner.active;
    await writePublished(projects[name], { to: winner.active, epoch: winner.epoch, since: winner.since });
    out.propagated.push(name);
    await events.record(
      "warn",
      "state.propagated",
      `${name} still had epoch ${copy.value.epoch}; it now has epoch ${winner.epoch} (active ${winner.active})${fenced ? " and is fenced" : ""}`,
      { project: name },
    );
  }
  // An old active failed away from is fenced just above, the first time it answers; what it
  // committed that the failover did not carry is listed now, never applied.
  const failovers = await readSettings(projects)
    .then(({ settings }) => resolveFailovers(projects, events, { copies, winner, schemas: settings.schemas }))
    .then(() => true)
    .catch(async (e) => {
      await events.record(
        "error",
        "failover.unresolved",
        `the changes of a project failed away from could not be listed yet: ${describeError(e)}`,
        {
          project: winner.standby,
        },
      );
      return false;
    });
  out.failoversListed = failovers;
  // The standby takes no app writes before it is the published active: they would be
  // overwritten by the next backup, or collide with the rows it brings.
  const standbyCopy = copies[winner.standby];
  if (
    standbyCopy.ok &&
    !standbyCopy.value.fenced &&
    standbyCopy.value.epoch === winner.epoch &&
    standbyCopy.value.active === winner.active
  ) {
    const { settings } = await readSettings(projects);
    await fence(projects[winner.standby], { active: winner.active, epoch: winner.epoch, naming: winner.active, schemas: settings.schemas });
    out.fencedStandby = winner.standby;
    await events.record(
      "info",
      "state.standby_fenced",
      `${winner.standby} is the standby: it refuses app writes, naming ${winner.active} (epoch ${winner.epoch}) as the active project`,
      { project: winner.standby },
    );
  }
  const active = copies[winner.active];
  const other = copies[winner.standby];
  if (active.ok && active.value.fenced && active.value.epoch === winner.epoch) {
    // Unfenced only while the other project answers with no newer epoch: a switch that
    // published there before it was interrupted made that project the active one.
    if (!other.ok) {
      await events.record(
        "warn",
        "switch.unsettled",
        `a switch away from ${winner.active} was interrupted and ${winner.standby} cannot be read: ${winner.active} stays fenced until it can be told whether ${winner.standby} was published`,
        { project: winner.active },
      );
      return out;
    }
    const unfenced = await liftFence(projects[winner.active], { from: winner.active, epoch: winner.epoch });
    if (unfenced) {
      out.unfenced = winner.active;
      await events.record(
        "warn",
        "switch.rolled_back",
        `a switch away from ${winner.active} was interrupted before it published; ${winner.active} is unfenced and stays active (epoch ${winner.epoch})`,
        { project: winner.active },
      );
    }
  }
  return out;
}
