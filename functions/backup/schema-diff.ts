import { SpillwayError } from "../errors.ts";
import type { Catalog, Table } from "./catalog.ts";

/**
 * Every difference between the active's and the standby's replicated tables that would make
 * a copy wrong: missing or extra tables and columns, column types, generated columns,
 * primary keys, and the foreign keys between replicated tables (the standby's stay in place
 * through a load unchecked, so they must be the active's, which the rows satisfy). An
 * empty list means the copy may go ahead.
 *
 * @example
 * schemaDiff(active, standby) // ["public.orders: column note is missing on the standby"]
 */
export function schemaDiff(active: Catalog, standby: Catalog): string[] {
  const diffs: string[] = [];
  const label = (t: Table) => `${t.schema}.${t.name}`;
  const standbyTables = new Map(standby.tables.map((t) => [label(t), t]));
  const activeTables = new Map(active.tables.map((t) => [label(t), t]));

  for (const [name, a] of activeTables) {
    const s = standbyTables.get(name);
    if (!s) {
      diffs.push(`${name}: table is missing on the standby`);
      continue;
    }
    const standbyColumns = new Map(s.columns.map((c) => [c.name, c]));
    for (const c of a.columns) {
      const sc = standbyColumns.get(c.name);
      if (!sc) diffs.push(`${name}: column ${c.name} is missing on the standby`);
      else {
        if (sc.type !== c.type) diffs.push(`${name}: column ${c.name} is ${c.type} on the active, ${sc.type} on the standby`);
        if (sc.generated !== c.generated)
          diffs.push(
            `${name}: column ${c.name} is ${c.generated ? "" : "not "}generated on the active, ${sc.generated ? "" : "not "}on the standby`,
          );
      }
    }
    const activeColumns = new Set(a.columns.map((c) => c.name));
    for (const c of s.columns) if (!activeColumns.has(c.name)) diffs.push(`${name}: column ${c.name} exists only on the standby`);
    const order = (cols: string[]) => cols.join(", ") || "none";
    if (order(a.primaryKey) !== order(s.primaryKey)) {
      diffs.push(`${name}: primary key is (${order(a.primaryKey)}) on the active, (${order(s.primaryKey)}) on the standby`);
    }
    if (a.partition !== s.partition)
      diffs.push(`${name}: is ${a.partition ? "" : "not "}a partition on the active, ${s.partition ? "" : "not "}on the standby`);
  }
  for (const name of standbyTables.keys()) if (!activeTables.has(name)) diffs.push(`${name}: table exists only on the standby`);
  diffs.push(...foreignKeyDiff(active, standby));
  return diffs;
}

// Foreign keys compared by table and name, on the tables both sides replicate.
function foreignKeyDiff(active: Catalog, standby: Catalog): string[] {
  const labels = new Map([...active.tables, ...standby.tables].map((t) => [t.qualified, `${t.schema}.${t.name}`]));
  const onStandby = new Set(standby.tables.map((t) => t.qualified));
  const both = new Set(active.tables.map((t) => t.qualified).filter((q) => onStandby.has(q)));
  const keyed = (c: Catalog) =>
    new Map(c.foreignKeys.filter((fk) => both.has(fk.table) && both.has(fk.references)).map((fk) => [`${fk.table} ${fk.name}`, fk]));
  const a = keyed(active);
  const s = keyed(standby);
  const diffs: string[] = [];
  for (const [key, fk] of a) {
    const other = s.get(key);
    if (!other) diffs.push(`${labels.get(fk.table)}: foreign key ${fk.name} is missing on the standby`);
    else if (other.definition !== fk.definition)
      diffs.push(`${labels.get(fk.table)}: foreign key ${fk.name} is ${fk.definition} on the active, ${other.definition} on the standby`);
  }
  for (const [key, fk] of s) if (!a.has(key)) diffs.push(`${labels.get(fk.table)}: foreign key ${fk.name} exists only on the standby`);
  return diffs;
}

/**
 * The 409 `SCHEMA_MISMATCH` error for a non-empty `schemaDiff`, every difference in its
 * details.
 *
 * @example
 * if (diffs.length > 0) throw schemaMismatch(diffs);
 */
export function schemaMismatch(diffs: string[]): SpillwayError {
  return new SpillwayError(
    "SCHEMA_MISMATCH",
    409,
    `the standby's tables differ from the active's (${diffs.length} difference${diffs.length === 1 ? "" : "s"}): ${diffs.slice(0, 3).join("; ")}`,
    { differences: diffs },
  );
}

/**
 * The active's carried sequences (`readSequences`) that the standby does not carry: the
 * standby could not be moved past the active's numbers.
 *
 * @example
 * sequenceDiff(active, standby) // ['sequence "app_private"."order_no" is missing on the standby, or no replicated column uses it there']
 */
export function sequenceDiff(active: Catalog, standby: Catalog): string[] {
  const onStandby = new Set(standby.sequences.map((s) => s.qualified));
  return active.sequences
    .filter((s) => !onStandby.has(s.qualified))
    .map((s) => `sequence ${s.qualified} is missing on the standby, or no replicated column uses it there`);
}
