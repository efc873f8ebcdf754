// Realtime in `GET /status`: which tables each project publishes to Supabase Realtime.
// Apps' channels move to the new active at a switch (client/realtime.ts); they only hear
// the changes of the tables that project publishes, so the two lists must match.
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { onProject, type Projects } from "./project.ts";

/** Realtime in `GET /status`. */
export interface RealtimeStatus {
  /** Per project, the tables in the `supabase_realtime` publication (null: none, or unreachable). */
  projects: Record<ProjectName, { publishedTables: string[] } | null>;
  /** Both projects publish the same tables: channels moved at a switch hear the same changes. */
  inStep: boolean;
}

/**
 * Reads the tables each project publishes to Realtime (`supabase_realtime`), and whether
 * the two lists match.
 *
 * @example
 * const { inStep } = await realtimeStatus(projects);
 */
export async function realtimeStatus(projects: Projects): Promise<RealtimeStatus> {
  const read = async (name: ProjectName) => {
    try {
      const rows = await onProject(
        projects[name],
        (sql) => sql<{ name: string }[]>`
        select schemaname || '.' || tablename as name from pg_catalog.pg_publication_tables
        where pubname = 'supabase_realtime' order by 1`,
      );
      const [publication] = await onProject(
        projects[name],
        (sql) => sql`select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime'`,
      );
      return publication ? { publishedTables: rows.map((r) => r.name) } : null;
    } catch {
      return null;
    }
  };
  const [primary, secondary] = await Promise.all(PROJECT_NAMES.map(read));
  const list = (p: { publishedTables: string[] } | null | undefined) => JSON.stringify(p?.publishedTables ?? []);
  return { projects: { primary: primary ?? null, secondary: secondary ?? null }, inStep: list(primary) === list(secondary) };
}
