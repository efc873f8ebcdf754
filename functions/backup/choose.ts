import type { Project } from "../project.ts";
import type { Table } from "./catalog.ts";
import { captureDrift, unpublished } from "./drift.ts";
import { dropSlot, PUBLICATION, type ReplicaPosition, tableSet } from "./incremental.ts";
import { slotHealth } from "./slots.ts";

/** Which kind of backup a run makes, and why. */
export interface KindChoice {
  kind: "full" | "incremental";
  reason: string;
  /**
   * True when the standby's copy could have been built on but no longer can (its slot was
   * invalidated, a table was recreated or reshaped, the publication lost a table): the
   * operator is told with a warn event.
   */
  broken: boolean;
}

/**
 * Incremental when the standby's copy came from this active through a slot that can still
 * be read, over the same tables as they were then (same OIDs, same columns and key) and a
 * publication that still covers each of them; full otherwise, saying why. A slot the server
 * invalidated is dropped here: it can never be read again.
 *
 * @example
 * const choice = await chooseKind(source, position, tables);
 */
export async function chooseKind(source: Project, position: ReplicaPosition | null, tables: Table[]): Promise<KindChoice> {
  const full = (reason: string, broken = false): KindChoice => ({ kind: "full", reason: `${reason}: full backup`, broken });
  if (!position) return full("no earlier copy to build on");
  if (position.source !== source.name) return full(`the standby's copy came from ${position.source}`);
  const health = await slotHealth(source, position.slot);
  if (health.state === "missing") return full("the change capture slot is gone (retention guard or dropped)");
  if (health.state === "lost") {
    await dropSlot(source, position.slot);
    return full(
      `the change capture slot ${position.slot} was invalidated by the server (it fell behind max_slot_wal_keep_size) and was dropped`,
      true,
    );
  }
  const drift = captureDrift(position.tables, tableSet(tables));
  if (drift) return full(`the replicated tables changed since the last full copy (${drift})`, true);
  const missing = await unpublished(source.sql, PUBLICATION, tables);
  if (missing.length > 0) return full(`the change capture publication no longer covers ${missing.join(", ")}`, true);
  return { kind: "incremental", reason: `changes since ${position.appliedLsn ?? "the last full copy"}`, broken: false };
}
