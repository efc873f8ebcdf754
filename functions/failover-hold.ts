import { SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import type { ProjectName } from "./names.ts";
import type { Db, Project } from "./project.ts";
import { carriedSchemas } from "./schemas.ts";

/** A failover that keeps its old active from being written to (see `heldFailovers`). */
export interface HeldFailover {
  epoch: number;
  from: ProjectName;
  /** Why its changes are not listed: null while the listing has not run yet. */
  note: string | null;
}

/**
 * The failovers, recorded on the active project, whose old active must not be backed up or
 * switched to yet: its changes since the last carried position are not listed (the listing
 * has not run, or could not be made: `note`), and no operator acknowledged it
 * (`acknowledgeFailover`). Until then the old active's rows are the only record of them.
 *
 * @example
 * const held = await heldFailovers(projects.secondary.sql); // [{ epoch: 2, from: "primary", note: null }]
 */
export async function heldFailovers(sql: Db): Promise<HeldFailover[]> {
  const rows = await sql<{ epoch: string; from_project: ProjectName; note: string | null }[]>`
    select epoch::text, from_project, note from spillway.failover
    where acked_at is null and (resolved_at is null or note is not null) order by epoch`;
  return rows.map((r) => ({ epoch: Number(r.epoch), from: r.from_project, note: r.note }));
}

/**
 * Refuses (409 `FAILOVER_UNRESOLVED`) an operation that would write to `target` while a
 * failover away from it is held (`heldFailovers`, read on the active project `active`).
 *
 * @example
 * await requireNotHeld(projects.secondary, "primary", "a backup");
 */
export async function requireNotHeld(active: Project, target: ProjectName, what: string): Promise<void> {
  const held = (await heldFailovers(active.sql)).find((f) => f.from === target);
  if (!held) return;
  throw new SpillwayError(
    "FAILOVER_UNRESOLVED",
    409,
    held.note
      ? `${what} to ${target} is refused: ${target} was failed away from (epoch ${held.epoch}) and ${held.note}; its rows are the only record of them. Compare it with ${active.name} by hand, then acknowledge with POST /failover/ack {"epoch": ${held.epoch}} (docs/failover.md)`
      : `${what} to ${target} is refused: ${target} was failed away from (epoch ${held.epoch}) and what it committed after the failover is not listed yet; the next tick that reaches it lists it`,
    { epoch: held.epoch, project: target },
  );
}

/**
 * Records that an operator has dealt with failover `epoch`'s unlisted changes: its old active
 * may be backed up to again (overwriting them). Records `failover.acknowledged`. 404 when
 * there is no such failover on the active project.
 *
 * @example
 * await acknowledgeFailover(projects.secondary, events, 2);
 */
export async function acknowledgeFailover(active: Project, events: EventLog, epoch: number): Promise<{ epoch: number; from: ProjectName }> {
  const [row] = await active.sql<{ from_project: ProjectName; note: string | null; resolved: boolean }[]>`
    update spillway.failover set acked_at = coalesce(acked_at, now()) where epoch = ${epoch}
    returning from_project, note, resolved_at is not null as resolved`;
  if (!row) throw new SpillwayError("NOT_FOUND", 404, `no failover at epoch ${epoch} is recorded on ${active.name}`, { epoch });
  await events.record(
    "warn",
    "failover.acknowledged",
    `the failover at epoch ${epoch} was acknowledged: ${row.from_project} may be backed up to again, overwriting ${row.note ? `the changes that could not be listed (${row.note})` : "what it holds"}`,
    { project: row.from_project, data: { epoch, note: row.note } },
  );
  return { epoch, from: row.from_project };
}

/**
 * Copies the carried tables of an old active whose changes could not be listed into schema
 * `spillway_divergent_<epoch>` on it (as `<schema>__<table>`) (`spillway.is_app_schema` leaves it out: never carried,
 * fenced nor overwritten), once: what it committed then outlives any later backup to it.
 * Answers the schema's name.
 *
 * @example
 * await keepAside(projects.primary, 2, settings.schemas); // "spillway_divergent_2"
 */
export async function keepAside(old: Project, epoch: number, setting: string[] | null): Promise<string> {
  const schema = `spillway_divergent_${epoch}`;
  await old.sql.begin(async (tx) => {
    const [exists] = await tx`select 1 from pg_catalog.pg_namespace where nspname = ${schema}`;
    if (exists) return;
    const carried = await carriedSchemas(tx, setting);
    const tables = await tx<{ schema: string; name: string }[]>`
      select n.nspname as schema, c.relname as name from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p') and not c.relispartition and n.nspname = any(${carried})
        and not (n.nspname = 'public' and c.relname = 'spillway_active')`;
    await tx`create schema ${tx(schema)}`;
    await tx`revoke all on schema ${tx(schema)} from public`;
    for (const t of tables) await tx`create table ${tx(schema)}.${tx(`${t.schema}__${t.name}`)} as table ${tx(t.schema)}.${tx(t.name)}`;
  });
  return schema;
}
