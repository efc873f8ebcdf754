import type { Sql } from "postgres";
import type { Catalog, Table } from "./catalog.ts";
import type { Sides } from "./schema-diff.ts";

/** A check constraint both sides have under one name, saying different things. */
export interface ChangedCheck {
  table: Table;
  name: string;
  activeDefinition: string;
  standbyDefinition: string;
}

const expression = (definition: string) => definition.replace(/ NOT VALID$/, "").replace(/^CHECK /, "");

/**
 * The check constraints changed under their name on one side, on the tables both sides
 * replicate. Whether the standby's is looser or stricter no catalog says: the active's rows
 * tell (`rowsChangedChecksRefuse`).
 *
 * @example
 * changedChecks(active, standby) // [{ table, name: "tasks_title_min", activeDefinition: "CHECK ((length(title) >= 1))", standbyDefinition: "CHECK ((length(title) >= 7))" }]
 */
export function changedChecks(active: Catalog, standby: Catalog): ChangedCheck[] {
  const label = (t: Table) => `${t.schema}.${t.name}`;
  const tables = new Map(active.tables.map((t) => [label(t), t]));
  const changed: ChangedCheck[] = [];
  for (const r of active.rules) {
    const table = r.table === null ? undefined : tables.get(r.table);
    if (r.kind !== "check constraint" || !table) continue;
    const other = standby.rules.find((o) => o.kind === r.kind && o.table === r.table && o.name === r.name);
    if (other && expression(other.definition) !== expression(r.definition))
      changed.push({ table, name: r.name, activeDefinition: r.definition, standbyDefinition: other.definition });
  }
  return changed;
}

/**
 * The changed checks the standby's version of which refuses rows the active holds, each as
 * a difference naming the constraint, how many rows and the project to migrate: applying
 * them would fail, so the run is refused before anything is written. The standby's
 * expression is the standby's own catalog text, evaluated on the active in a read-only
 * transaction; one the active cannot evaluate (a function only the standby has) is a
 * difference too.
 *
 * @example
 * await rowsChangedChecksRefuse(activeSql, changedChecks(active, standby), sides)
 * // ["public.tasks: check constraint tasks_title_min is CHECK ((length(title) >= 7)) on secondary (the standby), which refuses 9 rows primary holds; ..."]
 */
export async function rowsChangedChecksRefuse(sql: Sql, checks: ChangedCheck[], sides: Sides): Promise<string[]> {
  const refusals: string[] = [];
  for (const c of checks) {
    const where = `${c.table.schema}.${c.table.name}: check constraint ${c.name} is ${c.standbyDefinition} on ${sides.standby} (the standby), ${c.activeDefinition} on ${sides.active} (the active)`;
    try {
      const [row] = await sql.begin("read only", async (tx) => {
        await tx`set local statement_timeout = '30s'`;
        // Catalog text of the standby's constraint, not user input; NULL passes a check, as in Postgres.
        return tx.unsafe<{ n: number }[]>(
          `select count(*)::int as n from ${c.table.qualified} where not (${expression(c.standbyDefinition)})`,
        );
      });
      if (row!.n > 0)
        refusals.push(
          `${where}, and refuses ${row!.n} row${row!.n === 1 ? "" : "s"} ${sides.active} holds; migrate ${sides.standby} to match ${sides.active}`,
        );
    } catch (e) {
      refusals.push(
        `${where}, which cannot be checked against ${sides.active}'s rows (${e instanceof Error ? e.message : String(e)}); migrate ${sides.standby} to match ${sides.active}`,
      );
    }
  }
  return refusals;
}
