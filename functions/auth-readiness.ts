import { type AuthPlan, authCopyBuildsOn } from "./backup/auth.ts";
import { SpillwayError } from "./errors.ts";
import type { ProjectName } from "./names.ts";
import type { Project } from "./project.ts";

/** What decides whether a switch target holds the active's users. */
export interface AuthReadiness {
  from: ProjectName;
  to: ProjectName;
  /** Why the target's Auth cannot hold the active's users (`AuthPlan.refused`); empty: it can. */
  refused: string[];
  /** Of those, the columns the target requires that the active's Auth lacks (`AuthPlan.lacking`). */
  lacking: string[];
  /** Whether the target's Auth tables are the active's, as its last backup left them; unset: not checked yet. */
  inStep?: boolean;
}

/**
 * Why a switch to `to` would lose users, or null when it would not: its Auth cannot hold
 * the active's users (GoTrue's migrations ran on one project only: backups carry the app's
 * tables without Auth then), or its copy of Auth is not in step with the active. Users who
 * signed up since its last copy of Auth would be missing on the new active and the rows
 * referencing them orphaned; `force` does not override this. Names what to migrate.
 *
 * @example
 * authNotReady({ from: "primary", to: "secondary", refused: [], lacking: [], inStep: false })
 * // "secondary holds no copy of primary's Auth in step with it: ..."
 */
export function authNotReady(r: AuthReadiness): string | null {
  if (r.refused.length > 0) {
    const migrate =
      r.lacking.length > 0
        ? `migrate ${r.from}'s Auth (GoTrue) so that it has ${r.lacking.join(", ")} as ${r.to}'s does`
        : `migrate the Auth (GoTrue) of whichever of ${r.from} and ${r.to} is older until their Auth tables match`;
    return `${r.to}'s Auth cannot hold ${r.from}'s users (${r.refused.join("; ")}): users who signed up on ${r.from} since ${r.to}'s last copy of Auth would be missing there and the rows referencing them orphaned; ${migrate}, run a backup, then switch (force: true does not override this)`;
  }
  if (r.inStep === false) {
    return `${r.to} holds no copy of ${r.from}'s Auth in step with it (its last backup did not carry Auth, or the Auth settings changed since): users who signed up on ${r.from} since would be missing there; run a backup that carries Auth, then switch (force: true does not override this)`;
  }
  return null;
}

/**
 * Whether `target`'s Auth tables are in step with the active's under `plan` (`planAuth`):
 * true when nothing of Auth is carried, false when the plan refused Auth.
 *
 * @example
 * const inStep = await authInStep(target, "primary", plan);
 */
export async function authInStep(target: Project, from: ProjectName, plan: AuthPlan): Promise<boolean> {
  if (plan.refused.length > 0) return false;
  return plan.tables === null || (await authCopyBuildsOn(target.sql, from, plan.tables, plan.generation));
}

/**
 * The refusal of a switch whose target would lose users (`authNotReady`).
 *
 * @example
 * throw authRefusal(problem, plan.refused);
 */
export function authRefusal(message: string, refused: string[]): SpillwayError {
  return new SpillwayError("TARGET_UNFIT", 409, message, { auth: refused });
}
