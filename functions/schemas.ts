import { SpillwayError } from "./errors.ts";
import type { Db } from "./project.ts";
import type { Settings } from "./settings.ts";

/** Settings with the carried schemas resolved: what a run, a switch or a measure works with. */
export type CarriedSettings = Omit<Settings, "schemas"> & { schemas: string[] };

/**
 * The schemas Spillway carries: the `schemas` setting's list, or with the setting null
 * (the default) every schema of the active holding the app's tables (`public` and the
 * others but Postgres's, Supabase's and Spillway's own: `spillway.app_schemas()`, the same
 * rule the fence's event trigger follows). Ask the active: the standby's own extra schemas
 * are not the app's data.
 *
 * @example
 * const schemas = await carriedSchemas(active.sql, settings.schemas); // ["basejump", "public"]
 */
export async function carriedSchemas(sql: Db, setting: string[] | null): Promise<string[]> {
  if (setting) return setting;
  const [row] = await sql<{ schemas: string[] }[]>`select spillway.app_schemas() as schemas`;
  return row!.schemas;
}

/**
 * The settings with `schemas` resolved by `carriedSchemas` on the active.
 *
 * @example
 * const carried = await withCarriedSchemas(source.sql, settings);
 */
export async function withCarriedSchemas(sql: Db, settings: Settings): Promise<CarriedSettings> {
  return { ...settings, schemas: await carriedSchemas(sql, settings.schemas) };
}

/** A foreign key between two tables, as `readCarried` reads them (labels `schema.table`). */
export interface Reference {
  /** The constraint's name. */
  name: string;
  table: string;
  tableSchema: string;
  /** Whether the referencing table's schema may hold app data (`spillway.is_app_schema`). */
  tableApp: boolean;
  references: string;
  referencesSchema: string;
  referencesApp: boolean;
}

/** A table whose rows a backup would leave behind, and the foreign key that says so. */
export interface LeftBehind {
  /** The table not carried, `schema.table`. */
  table: string;
  schema: string;
  /** How it is tied to what is carried. */
  because: string;
}

/**
 * The tables a backup leaves behind although the carried data depends on them or they on
 * it: a table in an app schema that is not carried and references a carried table or
 * `auth.users`, or that a carried table references. Each appears once.
 *
 * @example
 * leftBehind(references, ["public"])
 * // [{ table: "basejump.accounts", schema: "basejump", because: "public.projects references it (projects_account_id_fkey)" }]
 */
export function leftBehind(references: Reference[], carried: string[]): LeftBehind[] {
  const isCarried = (schema: string) => carried.includes(schema);
  const out = new Map<string, LeftBehind>();
  const add = (table: string, schema: string, because: string) => {
    const known = out.get(table);
    if (known) known.because = `${known.because}, ${because}`;
    else out.set(table, { table, schema, because });
  };
  for (const r of references) {
    const target = isCarried(r.referencesSchema) || r.references === "auth.users";
    if (r.tableApp && !isCarried(r.tableSchema) && target) add(r.table, r.tableSchema, `it references ${r.references} (${r.name})`);
    if (r.referencesApp && !isCarried(r.referencesSchema) && isCarried(r.tableSchema))
      add(r.references, r.referencesSchema, `${r.table} references it (${r.name})`);
  }
  return [...out.values()].sort((a, b) => a.table.localeCompare(b.table));
}

/** An app table of the active (`schema.table`), as `readCarried` lists those outside the carried schemas. */
export interface AppTable {
  table: string;
  schema: string;
}

/**
 * The app tables a `schemas` list leaves out without the operator having said so: those of
 * an app schema the list does not name and that the last PATCH of `schemas` did not leave
 * out (`confirmed`, recorded as the `config.changed` event's `data.leftOut`), for example a
 * list kept from an older default, or a schema that got its tables after the list was
 * chosen. Tables `leftBehind` already names are not repeated. Pure.
 *
 * @example
 * leftOut([{ table: "billing.invoices", schema: "billing" }], ["public"], [], [])
 * // [{ table: "billing.invoices", schema: "billing", because: "schema billing is not in the setting schemas, and no PATCH /config left it out" }]
 */
export function leftOut(tables: AppTable[], carried: string[], confirmed: string[], tied: LeftBehind[]): LeftBehind[] {
  const named = new Set(tied.map((l) => l.table));
  return tables
    .filter((t) => !carried.includes(t.schema) && !confirmed.includes(t.schema) && !named.has(t.table))
    .map((t) => ({ ...t, because: `schema ${t.schema} is not in the setting schemas, and no PATCH /config left it out` }))
    .sort((a, b) => a.table.localeCompare(b.table));
}

/**
 * The 409 `TABLES_LEFT_BEHIND` for a non-empty `leftBehind`: it names each table and the
 * setting that carries it.
 *
 * @example
 * if (left.length > 0) throw tablesLeftBehind(left, ["public"]);
 */
export function tablesLeftBehind(left: LeftBehind[], carried: string[]): SpillwayError {
  const missing = [...new Set(left.map((l) => l.schema))].sort();
  // Tables only `leftOut` names are untied: leaving their schema out may be the operator's choice.
  const tiedOnly = left.every((l) => !l.because.startsWith("schema "));
  const named = left.map((l) => `${l.table} (${l.because})`);
  return new SpillwayError(
    "TABLES_LEFT_BEHIND",
    409,
    `${named.slice(0, 3).join("; ")}${named.length > 3 ? ` and ${named.length - 3} more` : ""}: ${left.length === 1 ? "this table is" : "these tables are"} not carried${tiedOnly ? ", so the standby would hold references to rows it lacks" : ""}; add ${missing.map((s) => `"${s}"`).join(", ")} to the setting schemas (PATCH /config {"schemas": ${JSON.stringify([...carried, ...missing])}}), or set schemas to null to carry every app schema${tiedOnly ? "" : `; to leave ${missing.length === 1 ? "it" : "them"} out on purpose, PATCH /config {"schemas": ${JSON.stringify(carried)}} again`}`,
    { setting: "schemas", schemas: [...carried, ...missing], tables: left },
  );
}

/**
 * Reads, in one statement, the carried schemas (`carriedSchemas`) and the tables a backup
 * would leave behind from the active: those tied to carried ones (`leftBehind`), and those
 * of app schemas a `schemas` list leaves out unconfirmed (`leftOut`).
 *
 * @example
 * const { schemas, left } = await readCarried(source.sql, settings.schemas);
 * if (left.length > 0) throw tablesLeftBehind(left, schemas);
 */
export async function readCarried(sql: Db, setting: string[] | null): Promise<{ schemas: string[]; left: LeftBehind[] }> {
  const [row] = await sql<{ schemas: string[]; refs: Reference[]; tables: AppTable[]; confirmed: string[] }[]>`
    select coalesce(${setting}::text[], spillway.app_schemas()) as schemas,
      (select coalesce(pg_catalog.json_agg(x order by x.table, x.name), '[]')
       from (
         select c.conname as name, tn.nspname || '.' || t.relname as table, tn.nspname as "tableSchema",
           spillway.is_app_schema(tn.nspname) as "tableApp",
           rn.nspname || '.' || r.relname as references, rn.nspname as "referencesSchema",
           spillway.is_app_schema(rn.nspname) as "referencesApp"
         from pg_catalog.pg_constraint c
         join pg_catalog.pg_class t on t.oid = c.conrelid join pg_catalog.pg_namespace tn on tn.oid = t.relnamespace
         join pg_catalog.pg_class r on r.oid = c.confrelid join pg_catalog.pg_namespace rn on rn.oid = r.relnamespace
         where c.contype = 'f' and c.conparentid = 0
           and (spillway.is_app_schema(tn.nspname) or spillway.is_app_schema(rn.nspname))) x) as refs,
      (select coalesce(pg_catalog.json_agg(pg_catalog.json_build_object('table', n.nspname || '.' || c.relname, 'schema', n.nspname)), '[]')
         from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where ${setting}::text[] is not null and n.nspname = any (spillway.app_schemas()) and not (n.nspname = any (${setting}::text[]))
          and c.relkind in ('r', 'p') and not c.relispartition
          and not exists (
            select 1 from pg_catalog.pg_depend d
             where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid and d.deptype = 'e')) as tables,
      array(select pg_catalog.jsonb_array_elements_text(coalesce(e.data -> 'leftOut', '[]'))
        from (select data from spillway.events
               where kind = 'config.changed' and data -> 'patch' ? 'schemas'
               order by at desc limit 1) e) as confirmed`;
  const tied = leftBehind(row!.refs, row!.schemas);
  const left = [...tied, ...leftOut(row!.tables, row!.schemas, row!.confirmed, tied)];
  return { schemas: row!.schemas, left };
}
