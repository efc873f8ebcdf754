import { readSequences } from "./backup/catalog.ts";
import { setSequences } from "./backup/load.ts";
import { readPosition } from "./backup/position.ts";
import { discardStaging } from "./backup/staged.ts";
import { isOutage } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { publishFailover } from "./fence.ts";
import type { ProjectName } from "./names.ts";
import { decideFailover, type FailoverDecision } from "./policy.ts";
import { type Outcome, type Projects, probe } from "./project.ts";
import { latestRun } from "./runs.ts";
import { carriedSchemas } from "./schemas.ts";
import type { Settings } from "./settings.ts";
import type { ActiveState } from "./state.ts";
import type { SwitchResult } from "./switchover.ts";

/**
 * Steps the new active's sequences move past where its copy had them: the old active may
 * have handed out numbers after the last change carried, and its divergent rows keep
 * keys of their own, so that they can be reviewed and put back by hand.
 */
export const FAILOVER_SEQUENCE_GAP_STEPS = 10_000;

/** What a failover recorded: the data-loss window with the switch's figures. */
export interface FailoverResult extends SwitchResult {
  /** The old active's commit position the standby's copy stood at; null when unknown. */
  carriedLsn: string | null;
  /** Every change the old active committed before this time was carried. */
  carriedUntil: string | null;
  /** The last time a tick reached the old active. */
  silentAfter: string | null;
  lagSeconds: number | null;
}

/**
 * At a tick that could not reach the active, reads what `decideFailover` needs from the
 * standby (how long the active has been down, how far its copy stands, when the active was
 * last reached) and, when it says so, publishes the standby as the active project at
 * epoch + 1 without fencing the old one, in one transaction (checked to hold the lease `holder`
 * and the winner's epoch) with the `spillway.failover`
 * record of the data-loss window (and its sequences moved on by a gap). Records
 * `failover.completed`, an alert. Must run under the tick's lease.
 *
 * @example
 * const { decision, result } = await considerFailover({ projects, events }, { winner, settings, measured, holder: lease.holder });
 */
export async function considerFailover(
  ctx: { projects: Projects; events: EventLog },
  p: { winner: ActiveState; settings: Settings; measured: Record<ProjectName, Outcome<unknown>>; holder: string },
): Promise<{ decision: FailoverDecision; result: FailoverResult | null }> {
  const { active, standby } = p.winner;
  // Only an outage counts: a login refused to Spillway (a rotated password, a pooler refusing
  // its user) leaves a project apps may still write to.
  const seen = p.measured[active];
  const facts = {
    failover: p.settings.failover,
    activeReachable: seen.ok || !isOutage(seen.error),
    standbyReachable: p.measured[standby].ok,
  };
  if (!facts.failover || facts.activeReachable || !facts.standbyReachable) {
    const decision = decideFailover({
      failover: facts.failover,
      activeReachable: facts.activeReachable,
      down: null,
      standby: { reachable: facts.standbyReachable, hasBackup: false },
      inStepAt: null,
      silentAfter: null,
    });
    return { decision, result: null };
  }
  const sql = ctx.projects[standby].sql;
  const [[down], [inStep], [lastSeen], last] = await Promise.all([
    sql<{ ticks: number; seconds: number }[]>`
      select ticks, extract(epoch from now() - since)::float8 as seconds from spillway.unreachable where project = ${active}`,
    sql<{ at: Date | null }[]>`
      select max(snapshot_at) as at from spillway.runs where status = 'succeeded' and source = ${active} and target = ${standby}`,
    sql<{ at: Date }[]>`select at from spillway.activity where project = ${active}`,
    latestRun(sql, "succeeded"),
  ]);
  const inStepAt = inStep?.at?.toISOString() ?? null;
  const silentAfter = lastSeen?.at.toISOString() ?? null;
  const decision = decideFailover({
    failover: facts.failover,
    activeReachable: false,
    down: down ?? null,
    standby: { reachable: true, hasBackup: last?.source === active },
    inStepAt,
    silentAfter,
  });
  // One more look: an active that answers now is not failed away from.
  if (!decision.failover || !isOutage(await probe(ctx.projects[active])))
    return { decision: { ...decision, failover: false }, result: null };
  const result = await failOver(ctx, {
    winner: p.winner,
    settings: p.settings,
    holder: p.holder,
    inStepAt,
    silentAfter,
    lagSeconds: decision.lagSeconds,
  });
  return { decision, result };
}

async function failOver(
  ctx: { projects: Projects; events: EventLog },
  p: {
    winner: ActiveState;
    settings: Settings;
    holder: string;
    inStepAt: string | null;
    silentAfter: string | null;
    lagSeconds: number | null;
  },
): Promise<FailoverResult> {
  const started = Date.now();
  const { active: from, standby: to } = p.winner;
  const target = ctx.projects[to];
  const epoch = p.winner.epoch + 1;
  const position = await readPosition(target.sql);
  const carried = position?.source === from ? position : null;
  await publishFailover(target, { epoch, holder: p.holder }, async (tx) => {
    await tx`
      insert into spillway.failover (epoch, from_project, to_project, slot, base_snapshot, carried_lsn, carried_until, silent_after)
      values (${epoch}, ${from}, ${to}, ${carried?.slot ?? null}, ${carried?.baseSnapshot ?? null}, ${carried?.appliedLsn ?? null}::pg_lsn,
        ${p.inStepAt}::timestamptz, ${p.silentAfter}::timestamptz)
      on conflict (epoch) do nothing`;
    await setSequences(tx, await readSequences(tx, await carriedSchemas(tx, p.settings.schemas)), {
      gapSteps: FAILOVER_SEQUENCE_GAP_STEPS,
    });
  });
  // A full backup staged from the old active has nothing left to feed it.
  await discardStaging(target).catch(() => undefined);
  const result: FailoverResult = {
    from,
    to,
    epoch,
    durationMs: Date.now() - started,
    writesBlockedMs: 0,
    dataLossSince: p.inStepAt,
    carriedLsn: carried?.appliedLsn ?? null,
    carriedUntil: p.inStepAt,
    silentAfter: p.silentAfter,
    lagSeconds: p.lagSeconds,
  };
  await ctx.events.record(
    "warn",
    "failover.completed",
    `${to} is the active project (epoch ${epoch}): ${from} was unreachable and was not fenced. Changes ${from} committed after ${p.inStepAt} (position ${result.carriedLsn ?? "unknown"}) were not carried; ${from} is fenced at the first tick that reaches it, and those changes are then listed in spillway.divergent on ${to}`,
    {
      project: to,
      data: {
        from,
        to,
        epoch,
        carriedLsn: result.carriedLsn,
        carriedUntil: result.carriedUntil,
        silentAfter: result.silentAfter,
        lagSeconds: result.lagSeconds,
      },
    },
  );
  return result;
}
