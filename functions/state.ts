import { SpillwayError } from "./errors.ts";
import { isProjectName, other, PROJECT_NAMES, type ProjectName } from "./names.ts";
import { type Db, type Outcome, onBoth, onProject, type Project, type Projects } from "./project.ts";

/** Which project is active, from the copy with the highest epoch. */
export interface ActiveState {
  active: ProjectName;
  standby: ProjectName;
  epoch: number;
  since: string;
}

/** One project's own copy of the state, including whether it is fenced. */
export interface ProjectState {
  active: ProjectName;
  epoch: number;
  fenced: boolean;
  since: string;
  phase: "normal" | "backup" | "critical";
}

/**
 * Reads one project's copy of the state.
 *
 * @example
 * const s = await readProjectState(projects.primary.sql);
 */
export async function readProjectState(sql: Db): Promise<ProjectState> {
  // The phase counts only at the epoch it was recorded at: a switch starts at 'normal'.
  const [row] = await sql<{ active: string; epoch: string; fenced: boolean; since: Date; phase: ProjectState["phase"] }[]>`
    select s.active, s.epoch, s.fenced, s.since, coalesce(p.phase, 'normal') as phase
    from spillway.state s left join spillway.phase p on p.id and p.epoch = s.epoch
    where s.id`;
  if (!row || !isProjectName(row.active)) throw new SpillwayError("NOT_INSTALLED", 503, "Spillway's state row is missing");
  return { active: row.active, epoch: Number(row.epoch), fenced: row.fenced, since: row.since.toISOString(), phase: row.phase };
}

/**
 * Picks the winning state among the copies that could be read: the highest epoch wins.
 *
 * @example
 * resolveActive({ primary: { ok: true, value: s1 }, secondary: { ok: false, error } })
 */
export function resolveActive(copies: Record<ProjectName, Outcome<ProjectState>>): ActiveState | null {
  let best: ProjectState | null = null;
  for (const name of PROJECT_NAMES) {
    const o = copies[name];
    if (o.ok && (!best || o.value.epoch > best.epoch)) best = o.value;
  }
  return best && { active: best.active, standby: other(best.active), epoch: best.epoch, since: best.since };
}

/**
 * Reads both copies of the state; the highest epoch wins. Fails only when neither project
 * can be read.
 *
 * @example
 * const { copies, winner } = await readStates(projects);
 */
export async function readStates(projects: Projects): Promise<{ copies: Record<ProjectName, Outcome<ProjectState>>; winner: ActiveState }> {
  const copies = await onBoth(projects, (p) => readProjectState(p.sql));
  const winner = resolveActive(copies);
  if (!winner) {
    const failed = copies.primary.ok ? copies.secondary : copies.primary;
    throw failed.ok ? new SpillwayError("NOT_INSTALLED", 503, "no state found") : failed.error;
  }
  return { copies, winner };
}

/**
 * The active project by highest epoch.
 *
 * @example
 * const { active } = await readActive(projects);
 */
export async function readActive(projects: Projects): Promise<ActiveState> {
  return (await readStates(projects)).winner;
}

/**
 * Records the policy's phase for the active project at `epoch`, in its own row (never in
 * the state row, which app writes lock). Writes only a change.
 *
 * @example
 * await recordPhase(projects.primary, 1, "backup");
 */
export async function recordPhase(project: Project, epoch: number, phase: ProjectState["phase"]): Promise<void> {
  await onProject(project, (sql) =>
    sql.begin(
      "read write",
      (tx) => tx`
    insert into spillway.phase (id, epoch, phase)
    select true, s.epoch, ${phase} from spillway.state s where s.id and s.epoch = ${epoch}
    on conflict (id) do update set epoch = excluded.epoch, phase = excluded.phase, updated_at = now()
    where (spillway.phase.epoch, spillway.phase.phase) is distinct from (excluded.epoch, excluded.phase)`,
    ),
  );
}
