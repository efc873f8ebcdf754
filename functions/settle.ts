import type { EventLog } from "./events.ts";
import { onProject, type Projects } from "./project.ts";
import { PROJECT_NAMES } from "./names.ts";
import { readStates } from "./state.ts";

/** What `settle` changed. */
export interface Settled {
  propagated: string[];
  unfenced: string | null;
}

/**
 * Brings both copies of the state in line with the highest epoch, after anything that was
 * interrupted: a copy left at a lower epoch gets the winner's state (fenced, when it is not
 * the active project), and an active project left fenced by a switch that never finished is
 * unfenced (its epoch did not move, so it is still the one apps must use). Must run under
 * the operation lease, so that no switch is in progress.
 *
 * @example
 * await settle(projects, events);
 */
export async function settle(projects: Projects, events: EventLog): Promise<Settled> {
  const { copies, winner } = await readStates(projects);
  const out: Settled = { propagated: [], unfenced: null };
  for (const name of PROJECT_NAMES) {
    const copy = copies[name];
    if (!copy.ok || copy.value.epoch >= winner.epoch) continue;
    const fenced = name !== winner.active;
    await onProject(projects[name], (sql) => sql.begin(async (tx) => {
      await tx`
        update spillway.state set active = ${winner.active}, epoch = ${winner.epoch}, since = ${winner.since},
          fenced = ${fenced}, fenced_for = ${fenced ? winner.active : null}, fenced_epoch = ${fenced ? winner.epoch : null},
          phase = 'normal', updated_at = now()
        where id and epoch < ${winner.epoch}`;
      await tx`update public.spillway_active set active = ${winner.active}, epoch = ${winner.epoch}, since = ${winner.since} where id and epoch < ${winner.epoch}`;
    }));
    out.propagated.push(name);
    await events.record("warn", "state.propagated", `${name} still had epoch ${copy.value.epoch}; it now has epoch ${winner.epoch} (active ${winner.active})${fenced ? " and is fenced" : ""}`, { project: name });
  }
  const active = copies[winner.active];
  if (active.ok && active.value.fenced && active.value.epoch === winner.epoch) {
    // Only at the winner's epoch: a switch that published a newer epoch meanwhile wins.
    const rows = await onProject(projects[winner.active], (sql) => sql.begin("read write", (tx) => tx`
      update spillway.state set fenced = false, fenced_for = null, fenced_epoch = null, updated_at = now()
      where id and fenced and epoch = ${winner.epoch} and active = ${winner.active}
      returning 1`));
    if (rows.length === 1) {
      out.unfenced = winner.active;
      await events.record("warn", "switch.rolled_back", `a switch away from ${winner.active} was interrupted before it published; ${winner.active} is unfenced and stays active (epoch ${winner.epoch})`, { project: winner.active });
    }
  }
  return out;
}
