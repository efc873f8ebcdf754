import { carriedAuthTables } from "./backup/auth.ts";
import { readCatalog } from "./backup/catalog.ts";
import { canonical, checksumTable, compareChecksums, type TableChecksum } from "./backup/checksum.ts";
import type { EventLog } from "./events.ts";
import type { ProjectName } from "./names.ts";
import { onProject, type Projects } from "./project.ts";
import { type LeftBehind, readCarried } from "./schemas.ts";
import { readSettings } from "./settings.ts";
import { readActive } from "./state.ts";
import { type StorageApis, type StorageDigest, storageDigest } from "./storage.ts";

/** The answer of `POST /verify`. */
export interface VerifyResult {
  ok: boolean;
  active: string;
  standby: string;
  checkedAt: string;
  tables: { table: string; activeRows: number; standbyRows: number; equal: boolean }[];
  /** Storage's objects on each side (count and a digest of names, sizes, etags); null where a project has no Storage. */
  storage: { active: StorageDigest | null; standby: StorageDigest | null; equal: boolean } | null;
  mismatches: string[];
  /** Tables outside the carried schemas tied to carried ones by a foreign key (`leftBehind`): never ok. */
  leftBehind: LeftBehind[];
}

/**
 * Compares every replicated table's row count and checksum (and the carried Auth tables',
 * and, where Storage is carried, the objects' count and digest) on the active (one
 * snapshot) and the standby, and reads the tables a backup leaves behind (`leftBehind`).
 * Differences are expected when the active changed since the last backup; they, and any
 * table left behind, are recorded as an error event naming the tables.
 *
 * @example
 * const result = await verify({ projects, events });
 */
export async function verify(ctx: { projects: Projects; events: EventLog; storage?: StorageApis }): Promise<VerifyResult> {
  const state = await readActive(ctx.projects);
  const { settings } = await readSettings(ctx.projects);
  const carried = await onProject(ctx.projects[state.active], (sql) => readCarried(sql, settings.schemas));
  const sums = async (name: "primary" | "secondary"): Promise<TableChecksum[]> =>
    await onProject(ctx.projects[name], (sql) =>
      sql.begin("isolation level repeatable read read only", async (tx) => {
        await canonical(tx, "set local row_security = off");
        const catalog = await readCatalog(tx, carried.schemas);
        const out: TableChecksum[] = [];
        for (const table of [...catalog.tables, ...(settings.auth ? await carriedAuthTables(tx, settings.authSessions) : [])])
          out.push(await checksumTable(tx, table));
        return out;
      }),
    );
  const [active, standby] = await Promise.all([sums(state.active), sums(state.standby)]);
  const mismatches = [
    ...compareChecksums(active, standby),
    ...carried.left.map((l) => `${l.table}: not carried (${l.because}); add "${l.schema}" to the setting schemas, or set it to null`),
  ];
  const storage = settings.storage ? await compareStorage(ctx.projects, state.active, state.standby) : null;
  if (storage && !storage.equal)
    mismatches.push(
      `storage: ${storage.active?.objects ?? 0} object(s) on the active, ${storage.standby?.objects ?? 0} on the standby, or their names, sizes or etags differ${ctx.storage ? "" : " (Storage is not carried: SPILLWAY_PRIMARY_API_URL, SPILLWAY_SECONDARY_API_URL and their SERVICE_KEY variables are not set)"}`,
    );
  const standbyByTable = new Map(standby.map((c) => [c.table, c]));
  const result: VerifyResult = {
    ok: mismatches.length === 0,
    active: state.active,
    standby: state.standby,
    checkedAt: new Date().toISOString(),
    storage,
    tables: active.map((a) => {
      const s = standbyByTable.get(a.table);
      return { table: a.table, activeRows: a.rows, standbyRows: s?.rows ?? 0, equal: !!s && s.rows === a.rows && s.sum === a.sum };
    }),
    mismatches,
    leftBehind: carried.left,
  };
  if (result.ok) {
    await ctx.events.record(
      "info",
      "verify.ok",
      `the standby ${state.standby} matches the active ${state.active} (${active.length} tables)`,
      { project: state.standby },
    );
  } else {
    await ctx.events.record(
      "error",
      "verify.mismatch",
      `the standby ${state.standby} differs from the active in ${mismatches.length} table(s): ${mismatches.map((m) => m.split(":")[0]).join(", ")}`,
      {
        project: state.standby,
        data: { mismatches },
      },
    );
  }
  return result;
}

// Storage's objects on both sides; null when neither has Storage.
async function compareStorage(projects: Projects, active: ProjectName, standby: ProjectName): Promise<VerifyResult["storage"]> {
  const [a, s] = await Promise.all([storageDigest(projects[active]), storageDigest(projects[standby])]);
  if (!a && !s) return null;
  return { active: a, standby: s, equal: !!a && !!s && a.objects === s.objects && a.digest === s.digest };
}
