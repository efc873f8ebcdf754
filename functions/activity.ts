import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { type Outcome, onBoth, type Projects } from "./project.ts";

/**
 * Records, in every project a tick reached, that it reached each of them now (it measured
 * them and wrote their samples): the standby then knows when the active was last seen, and
 * `/status` shows each project's last activity, even one that is down.
 *
 * @example
 * await recordActivity(projects, measured);
 */
export async function recordActivity(projects: Projects, measured: Record<ProjectName, Outcome<unknown>>): Promise<void> {
  const reached = PROJECT_NAMES.filter((n) => measured[n].ok);
  await onBoth(projects, async (p) => {
    if (!reached.includes(p.name)) return;
    await p.sql`
      insert into spillway.activity (project, at) select unnest(${reached}::text[]), now()
      on conflict (project) do update set at = excluded.at`;
  });
}

/**
 * When a tick last reached each project, the latest either project recorded; null when none did.
 *
 * @example
 * const { primary } = await readActivity(projects); // "2026-12-03T10:00:00.000Z"
 */
export async function readActivity(projects: Projects): Promise<Record<ProjectName, string | null>> {
  const out: Record<ProjectName, string | null> = { primary: null, secondary: null };
  const read = await onBoth(projects, (p) => p.sql<{ project: ProjectName; at: Date }[]>`select project, at from spillway.activity`);
  for (const name of PROJECT_NAMES) {
    const o = read[name];
    for (const r of o.ok ? o.value : []) {
      const at = r.at.toISOString();
      if (out[r.project] === null || out[r.project]! < at) out[r.project] = at;
    }
  }
  return out;
}
