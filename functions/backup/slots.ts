import type { EventLog } from "../events.ts";
import { PROJECT_NAMES, type ProjectName } from "../names.ts";
import type { Db, Project, Projects } from "../project.ts";
import { releaseCapture } from "./identity.ts";
import { readPosition, readStaging } from "./position.ts";
import { dropSlot, slotPrefix } from "./source.ts";

/** A change capture slot as the server sees it. */
export type SlotHealth =
  | { state: "ok"; retainedBytes: number }
  /** Invalidated by the server (`max_slot_wal_keep_size`): it can never be read again. */
  | { state: "lost" }
  | { state: "missing" };

/**
 * Whether a slot exists and can still be read. A slot the server invalidated keeps its row
 * in `pg_replication_slots` with `wal_status = 'lost'` and no `restart_lsn`; it counts as
 * gone.
 *
 * @example
 * const health = await slotHealth(source, position.slot); // { state: "lost" }
 */
export async function slotHealth(source: Project, slot: string): Promise<SlotHealth> {
  const [row] = await source.sql<{ lost: boolean; bytes: string | null }[]>`
    select (wal_status = 'lost' or restart_lsn is null) as lost,
      pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::int8::text as bytes
    from pg_catalog.pg_replication_slots where slot_name = ${slot}`;
  if (!row) return { state: "missing" };
  return row.lost ? { state: "lost" } : { state: "ok", retainedBytes: Number(row.bytes ?? 0) };
}

/**
 * The Spillway slots among `slots` (named by `slotPrefix`, never an app's own) that are not
 * in `needed`: on the active, the slot of the standby's copy (`spillway.replica`) and of
 * its staged copy (`spillway.staging`), when they came from the active; nothing else.
 *
 * @example
 * orphans(["spillway_primary_to_secondary_1a2b3c4d"], new Set()) // ["spillway_primary_to_secondary_1a2b3c4d"]
 */
export function orphans(slots: string[], needed: Set<string>): string[] {
  const prefixes = PROJECT_NAMES.flatMap((from) => PROJECT_NAMES.filter((to) => to !== from).map((to) => slotPrefix(from, to)));
  return slots.filter((s) => prefixes.some((p) => s.startsWith(p)) && !needed.has(s));
}

/**
 * The slots the unresolved failovers recorded in `sql`'s project still have to be read from
 * (`divergent.ts`), by the project failed away from: kept until its divergent changes are listed.
 *
 * @example
 * const keep = await pendingSlots(projects.secondary.sql); // { primary: ["spillway_primary_to_secondary_1a2b3c4d"], secondary: [] }
 */
export async function pendingSlots(sql: Db): Promise<Record<ProjectName, string[]>> {
  const rows = await sql<{ from_project: ProjectName; slot: string }[]>`
    select from_project, slot from spillway.failover where resolved_at is null and slot is not null`;
  const out: Record<ProjectName, string[]> = { primary: [], secondary: [] };
  for (const r of rows) out[r.from_project].push(r.slot);
  return out;
}

/** What `cleanSlots` dropped, by project. */
export type Dropped = Record<ProjectName, string[]>;

/**
 * Drops, in both projects, every Spillway slot that no record needs (left by a process
 * killed between a copy's commit and the drop of the slot it replaced, a drop that failed,
 * a switch killed after it made the reverse slot), and the needed ones the server
 * invalidated; each with a warn event naming it. A slot in use at that moment is left for
 * the next tick. Must run under the operation lease, so that no copy is making a slot its
 * record does not name yet. Drops nothing when the standby's records cannot be read: they
 * might need any slot on the active. A standby left with no Spillway slot feeds no backup: its
 * publication is dropped and the replica identities Spillway changed there are put back.
 *
 * @example
 * const dropped = await cleanSlots(projects, "primary", "secondary", events);
 */
export async function cleanSlots(projects: Projects, active: ProjectName, standby: ProjectName, events: EventLog): Promise<Dropped> {
  const [position, staging] = await Promise.all([readPosition(projects[standby].sql), readStaging(projects[standby].sql)]);
  const needed = new Set([position, staging].filter((r) => r?.source === active).map((r) => r!.slot));
  // A project failed away from keeps its slot until its divergent changes are listed.
  const pending = await pendingSlots(projects[active].sql).catch(() => null);
  if (!pending) return { primary: [], secondary: [] };
  const dropped: Dropped = { primary: [], secondary: [] };
  let standbySlots = 0;
  for (const name of PROJECT_NAMES) {
    const project = projects[name];
    const all = await project.sql<{ slot_name: string; lost: boolean; active: boolean }[]>`
      select slot_name, (wal_status = 'lost' or restart_lsn is null) as lost, active
      from pg_catalog.pg_replication_slots where slot_type = 'logical' and database = current_database()`;
    const rows = all.filter((r) => !r.active);
    const kept = new Set([...(name === active ? needed : []), ...pending[name]]);
    const unneeded = orphans(
      rows.map((r) => r.slot_name),
      kept,
    );
    if (name === standby)
      standbySlots = orphans(
        all.map((r) => r.slot_name),
        new Set(),
      ).length;
    for (const slot of unneeded) {
      if (!(await dropSlot(project, slot).catch(() => false))) continue;
      dropped[name].push(slot);
      if (name === standby) standbySlots -= 1;
      await events.record(
        "warn",
        "backup.orphan_slot",
        `the change capture slot ${slot} on ${name} was needed by no backup and was dropped, freeing the WAL it held`,
        {
          project: name,
          data: { slot },
        },
      );
    }
    for (const r of rows) {
      if (!r.lost || !kept.has(r.slot_name) || !(await dropSlot(project, r.slot_name).catch(() => false))) continue;
      dropped[name].push(r.slot_name);
      await events.record(
        "warn",
        "backup.slot_lost",
        `the change capture slot ${r.slot_name} on ${name} was invalidated by the server (it fell behind max_slot_wal_keep_size) and was dropped; the next backup to ${standby} is a full one`,
        {
          project: name,
          data: { slot: r.slot_name },
        },
      );
    }
  }
  if (standbySlots === 0) {
    const restored = await releaseCapture(projects[standby]);
    if (restored) {
      await events.record(
        "info",
        "backup.capture_released",
        `${standby} feeds no backup: its change capture publication was dropped${restored.length > 0 ? ` and REPLICA IDENTITY DEFAULT put back on ${restored.join(", ")}` : ""}`,
        {
          project: standby,
          data: { restored },
        },
      );
    }
  }
  return dropped;
}
