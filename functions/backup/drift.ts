import type { Db } from "../project.ts";
import type { Table } from "./catalog.ts";

/**
 * What a table's shape is compared by: its columns, their types, and its key.
 *
 * @example
 * tableShape(table) // "id:bigint:false,name:text:false|id"
 */
export function tableShape(t: Table): string {
  return `${t.columns.map((c) => `${c.name}:${c.type}:${c.generated}`).join(",")}|${t.primaryKey.join(",")}`;
}

/**
 * How a replicated table is recorded with the copy that incremental backups build on: its
 * name, its OID (the publication and the change stream know a table by it, so a table
 * dropped and created again under the same name is another table) and its shape (columns,
 * types, key).
 *
 * @example
 * captureEntry(table) // "public.todos 16390 id:bigint:false,title:text:false|id"
 */
export function captureEntry(t: Table): string {
  return `${t.schema}.${t.name} ${t.oid} ${tableShape(t)}`;
}

/**
 * Why the tables as they are now (`current`, from `captureEntry`) cannot take the changes
 * recorded against `recorded`, or null when nothing differs. Names each table that was
 * added, removed, created again or reshaped.
 *
 * @example
 * captureDrift(["public.todos 16390 id:bigint:false|id"], ["public.todos 16422 id:bigint:false|id"])
 * // "public.todos was dropped and created again"
 */
export function captureDrift(recorded: string[], current: string[]): string | null {
  const parse = (entries: string[]) =>
    new Map(
      entries.map((e) => {
        const [name, oid, ...shape] = e.split(" ");
        return [name!, { oid: oid ?? null, shape: shape.join(" ") }] as const;
      }),
    );
  const before = parse(recorded);
  const now = parse(current);
  const problems: string[] = [];
  for (const [name, was] of before) {
    const is = now.get(name);
    if (!is) problems.push(`${name} is no longer replicated`);
    else if (was.oid === null) problems.push(`${name} was recorded without its shape`);
    else if (was.oid !== is.oid) problems.push(`${name} was dropped and created again`);
    else if (was.shape !== is.shape) problems.push(`${name} changed its columns or key`);
  }
  for (const name of now.keys()) if (!before.has(name)) problems.push(`${name} is new`);
  return problems.length === 0 ? null : problems.join("; ");
}

/**
 * The replicated tables that a publication does not cover (membership is by OID).
 *
 * @example
 * const missing = await unpublished(source.sql, "spillway", tables); // ["public.todos"]
 */
export async function unpublished(sql: Db, publication: string, tables: Table[]): Promise<string[]> {
  const rows = await sql<{ oid: string }[]>`
    select r.prrelid::int8::text as oid from pg_catalog.pg_publication_rel r
    join pg_catalog.pg_publication p on p.oid = r.prpubid where p.pubname = ${publication}`;
  const covered = new Set(rows.map((r) => Number(r.oid)));
  return tables.filter((t) => !covered.has(t.oid)).map((t) => `${t.schema}.${t.name}`);
}
