import { invalid, SpillwayError } from "./errors.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { onProject, type Projects } from "./project.ts";
import { isAppSchema, type Settings } from "./settings.ts";
import { readActive } from "./state.ts";
import { measure } from "./usage.ts";

/** What a settings change is checked against: the projects as they are now. */
export interface PatchFacts {
  active: ProjectName;
  /** Each project's used bytes; null when it could not be measured. */
  usedBytes: Record<ProjectName, number | null>;
  /** The active's schemas (Postgres's own left out), with how many app tables each holds. */
  tablesBySchema: Record<string, number>;
}

/** What `checkPatch` finds. */
export interface PatchCheck {
  /** Per field, why the change cannot be made at all (a 400). */
  invalid: Record<string, string>;
  /** What the change would do that the operator must confirm (a 409 without `confirm`). */
  consequences: string[];
}

/**
 * The schemas a backup carries under `schemas`: the list itself, or with null every schema
 * of the active holding app tables.
 *
 * @example
 * carriedSchemas(null, { public: 3, shop: 1, empty: 0 }) // ["public", "shop"]
 */
export function carriedSchemas(schemas: string[] | null, tablesBySchema: Record<string, number>): string[] {
  if (schemas !== null) return schemas;
  return Object.keys(tablesBySchema).filter((s) => isAppSchema(s) && (tablesBySchema[s] ?? 0) > 0);
}

/**
 * The schemas of the active holding app tables that `schemas` does not carry: what a
 * PATCH of the list leaves out on purpose (recorded with its `config.changed` event). Pure.
 *
 * @example
 * schemasLeftOut(["public"], { public: 3, shop: 1, empty: 0 }) // ["shop"]
 */
export function schemasLeftOut(schemas: string[] | null, tablesBySchema: Record<string, number>): string[] {
  const carried = carriedSchemas(schemas, tablesBySchema);
  return carriedSchemas(null, tablesBySchema)
    .filter((s) => !carried.includes(s))
    .sort();
}

/**
 * Checks a settings change against the projects as they are: schemas that do not exist on
 * the active are invalid; dropping a schema that holds carried tables (their rows would stay
 * behind at the next switch), a quota below a project's used size, and thresholds or a quota
 * that would switch at the next tick are consequences to confirm. Pure.
 *
 * @example
 * checkPatch(current, { ...current, quotaBytes: { primary: 100, secondary: 524288000 } }, facts)
 * // { invalid: {}, consequences: ["quotaBytes.primary (100 B) is below what primary uses now (…); …"] }
 */
export function checkPatch(current: Settings, next: Settings, facts: PatchFacts): PatchCheck {
  const result: PatchCheck = { invalid: {}, consequences: [] };
  const nextSchemas = next.schemas as string[] | null;
  if (nextSchemas !== null && JSON.stringify(nextSchemas) !== JSON.stringify(current.schemas)) {
    const missing = nextSchemas.filter((s) => !(s in facts.tablesBySchema));
    if (missing.length > 0) {
      result.invalid.schemas = `names schema(s) that do not exist on the active project (${facts.active}): ${missing.join(", ")}`;
    }
  }
  const before = carriedSchemas(current.schemas as string[] | null, facts.tablesBySchema);
  const after = new Set(carriedSchemas(nextSchemas, facts.tablesBySchema));
  const dropped = before.filter((s) => !after.has(s) && (facts.tablesBySchema[s] ?? 0) > 0);
  if (dropped.length > 0) {
    const tables = dropped.reduce((n, s) => n + (facts.tablesBySchema[s] ?? 0), 0);
    result.consequences.push(
      `schemas: ${dropped.join(", ")} would no longer be carried; ${tables} table(s) there would stay behind on ${facts.active} at the next switch`,
    );
  }
  for (const name of PROJECT_NAMES) {
    const used = facts.usedBytes[name];
    const quota = next.quotaBytes[name];
    if (used !== null && quota !== current.quotaBytes[name] && quota < used) {
      result.consequences.push(`quotaBytes.${name} (${quota} bytes) is below what ${name} uses now (${used} bytes)`);
    }
  }
  const used = facts.usedBytes[facts.active];
  if (used !== null && next.autoSwitch) {
    const usageNow = used / current.quotaBytes[facts.active];
    const usageNext = used / next.quotaBytes[facts.active];
    const switchesNow = current.autoSwitch && usageNow >= current.switchThreshold;
    if (!switchesNow && usageNext >= next.switchThreshold) {
      result.consequences.push(
        `the active project (${facts.active}) would be at ${pct(usageNext)} of its quota, at or over the switch threshold of ${pct(next.switchThreshold)}: the next tick switches`,
      );
    }
  }
  return result;
}

/**
 * Reads what `checkPatch` needs: the active, each project's used size, the active's schemas.
 *
 * @example
 * const facts = await readPatchFacts(projects);
 */
export async function readPatchFacts(projects: Projects): Promise<PatchFacts> {
  const { active } = await readActive(projects);
  const usedBytes = { primary: null, secondary: null } as PatchFacts["usedBytes"];
  await Promise.all(
    PROJECT_NAMES.map(async (n) => {
      usedBytes[n] = await measure(projects[n]).then(
        (m) => m.usedBytes,
        () => null,
      );
    }),
  );
  const rows = await onProject(
    projects[active],
    (sql) => sql<{ schema: string; tables: number }[]>`
    select n.nspname as schema, count(c.oid) filter (
        where c.relkind in ('r', 'p') and not c.relispartition and not (n.nspname = 'public' and c.relname = 'spillway_active'))::int as tables
    from pg_catalog.pg_namespace n left join pg_catalog.pg_class c on c.relnamespace = n.oid
    where n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema'
    group by n.nspname`,
  );
  return { active, usedBytes, tablesBySchema: Object.fromEntries(rows.map((r) => [r.schema, r.tables])) };
}

/**
 * Throws what `checkPatch` found: a 400 `INVALID_CONFIG` naming the field, or without
 * `confirm` a 409 `CONFIRM_REQUIRED` naming each consequence. Answers the consequences the
 * operator confirmed (empty when there were none).
 *
 * @example
 * const confirmed = requireConfirmation(checkPatch(current, next, facts), body.confirm === true);
 */
export function requireConfirmation(check: PatchCheck, confirm: boolean): string[] {
  if (Object.keys(check.invalid).length > 0) throw invalid("INVALID_CONFIG", check.invalid);
  if (check.consequences.length > 0 && !confirm) {
    throw new SpillwayError("CONFIRM_REQUIRED", 409, `this change needs "confirm": true: ${check.consequences.join("; ")}`, {
      consequences: check.consequences,
    });
  }
  return check.consequences;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)} %`;
}
