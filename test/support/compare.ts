import type { Sql } from "postgres";

/**
 * A test-side fingerprint of every table in `public` (Spillway's own row excepted), or in
 * `schemas` (tables outside `public` named `schema.table`): the rows' text, sorted, hashed.
 * Independent of the engine's own checksum code.
 *
 * @example
 * assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
 */
export async function fingerprint(sql: Sql, schemas = ["public"]): Promise<Record<string, string>> {
  return await sql.begin("isolation level repeatable read", async (tx) => {
    await tx`set local timezone = 'UTC'`;
    await tx`set local extra_float_digits = 1`;
    const tables = await tx<{ schema: string; name: string }[]>`
      select n.nspname as schema, c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = any(${schemas}) and c.relkind = 'r' and not (n.nspname = 'public' and c.relname = 'spillway_active') order by 1, 2`;
    const out: Record<string, string> = {};
    for (const { schema, name } of tables) {
      const [row] = await tx.unsafe(
        `select count(*) as n, coalesce(md5(string_agg(t::text, '|' order by t::text)), '') as h from "${schema}"."${name}" t`,
      );
      out[schema === "public" ? name : `${schema}.${name}`] = `${row!.n}:${row!.h}`;
    }
    return out;
  });
}

/**
 * Positions of the sequences in `public`.
 *
 * @example
 * assert.deepEqual(await sequencePositions(a), await sequencePositions(b));
 */
export async function sequencePositions(sql: Sql): Promise<Record<string, string | null>> {
  const rows = await sql<
    { name: string; last_value: string | null }[]
  >`select sequencename as name, last_value::text from pg_sequences where schemaname = 'public' order by 1`;
  return Object.fromEntries(rows.map((r) => [r.name, r.last_value]));
}
