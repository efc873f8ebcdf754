import { SpillwayError } from "../errors.ts";
import type { ProjectName } from "../names.ts";
import type { Catalog, Rule, Table } from "./catalog.ts";

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

/** Which project is which, for differences that name the project to migrate. */
export interface Sides {
  active: ProjectName;
  standby: ProjectName;
}

/**
 * The differences in what the rows must satisfy, on the tables both sides replicate, that
 * would make applying the active's rows on the standby fail (or compute other values): an
 * enum label only the active has; a NOT NULL, check, unique or exclusion constraint or a
 * unique index only the standby has (a unique index changed on one side is one only that
 * side has); a generated column's expression or a domain that is not the same on both
 * sides. Each names the object and the project to migrate. Rules are compared by what they
 * say: names and NOT VALID are not. What only the active has (the standby is looser) and a
 * check changed under its name are allowed here (`ruleWarnings`); the latter refuses the run
 * where the active holds rows the standby's version refuses (`rowsChangedChecksRefuse`).
 *
 * @example
 * ruleDiff(active, standby, { active: "primary", standby: "secondary" })
 * // ['type public.status: label "archived" exists only on primary (the active); migrate secondary: alter type public.status add value \'archived\'']
 */
export function ruleDiff(active: Catalog, standby: Catalog, sides: Sides): string[] {
  return compareRules(active, standby, sides).refusals;
}

/**
 * The rules only the active has, on the tables both sides replicate (a NOT NULL, check,
 * unique or exclusion constraint, a unique index): the standby accepts every row the active
 * holds, but would accept rows the active refuses once it is active; and a check changed
 * under its name on one side (a row the standby's refuses fails the run, named). Each names
 * the project to migrate.
 *
 * @example
 * ruleWarnings(active, standby, sides) // ["public.orders: check constraint orders_total_check exists only on primary (the active); ..."]
 */
export function ruleWarnings(active: Catalog, standby: Catalog, sides: Sides): string[] {
  return compareRules(active, standby, sides).warnings;
}

// Rules that refuse rows, compared by table and what they say: the same rule under another name
// or NOT VALID on one side is the same rule.
const RESTRICTING = new Set<Rule["kind"]>(["check constraint", "unique constraint", "exclusion constraint", "unique index"]);

function said(r: Rule): string {
  const definition = r.definition.replace(/ NOT VALID$/, "");
  return r.kind === "unique index"
    ? definition.replace(/^CREATE UNIQUE INDEX (?:"(?:[^"]|"")*"|\S+) ON /, "CREATE UNIQUE INDEX ON ")
    : definition;
}

function compareRules(active: Catalog, standby: Catalog, sides: Sides): { refusals: string[]; warnings: string[] } {
  const a = `${sides.active} (the active)`;
  const s = `${sides.standby} (the standby)`;
  const diffs: string[] = [];
  const warnings: string[] = [];
  const standbyEnums = new Map(standby.enums.map((e) => [e.name, new Set(e.labels)]));
  for (const e of active.enums) {
    const labels = standbyEnums.get(e.name);
    if (!labels) continue;
    for (const label of e.labels.filter((l) => !labels.has(l))) {
      const literal = `'${label.replace(/'/g, "''")}'`;
      diffs.push(
        `type ${e.name}: label "${label}" exists only on ${a}; migrate ${sides.standby}: alter type ${e.name} add value ${literal}`,
      );
    }
  }
  const label = (t: Table) => `${t.schema}.${t.name}`;
  const both = new Set(active.tables.map(label).filter((n) => standby.tables.some((t) => label(t) === n)));
  const standbyTables = new Map(standby.tables.map((t) => [label(t), t]));
  for (const t of active.tables.filter((t) => both.has(label(t)))) {
    const other = new Map(standbyTables.get(label(t))!.columns.map((c) => [c.name, c]));
    for (const c of t.columns) {
      const sc = other.get(c.name);
      if (!sc || sc.notNull === c.notNull) continue;
      if (sc.notNull)
        diffs.push(
          `${label(t)}: column ${c.name} is NOT NULL only on ${s}; migrate ${sides.active} the same way, or drop the NOT NULL on ${sides.standby}`,
        );
      else
        warnings.push(
          `${label(t)}: column ${c.name} is NOT NULL only on ${a}; migrate ${sides.standby}: alter table ${label(t)} alter column ${c.name} set not null`,
        );
    }
  }
  const key = (r: Rule) => `${r.table ?? ""}|${r.kind}|${RESTRICTING.has(r.kind) ? said(r) : r.name}`;
  const compared = (rules: Rule[]) => new Map(rules.filter((r) => r.table === null || both.has(r.table)).map((r) => [key(r), r]));
  const onActive = compared(active.rules);
  const onStandby = compared(standby.rules);
  const what = (r: Rule) => `${r.table ? `${r.table}: ` : ""}${r.kind} ${r.name}`;
  // A check changed on one side keeps its name: whether the standby's is looser (migrated
  // first, as told) or stricter no catalog says; the active's rows are tried against it
  // (changed-checks.ts), and a later row it refuses fails the run named.
  const changed = (r: Rule, side: Catalog) =>
    r.kind === "check constraint" ? side.rules.find((o) => o.table === r.table && o.kind === r.kind && o.name === r.name) : undefined;
  for (const [k, r] of onActive) {
    const other = onStandby.get(k);
    const renamed = other ? undefined : changed(r, standby);
    if (renamed)
      warnings.push(
        `${what(r)} is ${r.definition} on ${a}, ${renamed.definition} on ${s}; rows the standby's refuses fail the backup; migrate ${sides.active} the same way`,
      );
    else if (!other) {
      // The standby is looser: it takes every row the active holds.
      (RESTRICTING.has(r.kind) ? warnings : diffs).push(`${what(r)} exists only on ${a}; migrate ${sides.standby}: ${r.definition}`);
    } else if (said(other) !== said(r))
      diffs.push(`${what(r)} is ${r.definition} on ${a}, ${other.definition} on ${s}; migrate ${sides.standby} to match ${sides.active}`);
  }
  for (const [k, r] of onStandby) {
    if (!onActive.has(k) && !changed(r, active))
      diffs.push(`${what(r)} exists only on ${s}; migrate ${sides.active} the same way, or drop it from ${sides.standby}: ${r.definition}`);
  }
  return { refusals: diffs, warnings };
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
