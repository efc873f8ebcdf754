import { SpillwayError } from "../errors.ts";
import type { Db, Project } from "../project.ts";
import { qualify, type Table } from "./catalog.ts";
import { boundWaits, PUBLICATION } from "./source.ts";

/**
 * A table's replica identity: what the change stream sends to find the row an update or a
 * delete changed. `d` the primary key (none without one), `f` the whole old row, `i` the
 * columns of one unique index, `n` nothing.
 */
export interface Identity {
  kind: "d" | "f" | "i" | "n";
  /** For `i`: the index's columns, in index order. */
  columns: string[];
}

/**
 * The replica identities of `tables`, by `schema.name`.
 *
 * @example
 * const identities = await readIdentities(source.sql, tables);
 */
export async function readIdentities(sql: Db, tables: Table[]): Promise<Map<string, Identity>> {
  const rows = await sql<{ schema: string; name: string; kind: Identity["kind"]; columns: string[] | null }[]>`
    select n.nspname as schema, c.relname as name, c.relreplident as kind,
      (select array_agg(a.attname order by k.ord)
        from pg_catalog.pg_index i
        cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
        join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
        where i.indrelid = c.oid and i.indisreplident) as columns
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.oid = any(${tables.map((t) => t.oid)}::oid[])`;
  return new Map(rows.map((r) => [`${r.schema}.${r.name}`, { kind: r.kind, columns: r.columns ?? [] }]));
}

/**
 * Why change capture cannot carry some of the tables, one line each: a table with REPLICA
 * IDENTITY NOTHING (the stream would name no row for its updates and deletes, and once
 * published Postgres refuses the app's own updates of it).
 *
 * @example
 * identityProblems(tables, identities) // ["public.ledger has REPLICA IDENTITY NOTHING: ..."]
 */
export function identityProblems(tables: Table[], identities: Map<string, Identity>): string[] {
  return tables
    .filter((t) => identities.get(`${t.schema}.${t.name}`)?.kind === "n")
    .map(
      (t) =>
        `${t.schema}.${t.name} has REPLICA IDENTITY NOTHING: its updates and deletes cannot be backed up, and publishing it would make Postgres refuse the app's own updates; set it to DEFAULT (with a primary key), USING INDEX or FULL`,
    );
}

/**
 * The 409 `REPLICA_IDENTITY_UNSUPPORTED` error naming every table of `identityProblems`.
 *
 * @example
 * throw identityUnsupported(identityProblems(tables, identities));
 */
export function identityUnsupported(problems: string[]): SpillwayError {
  return new SpillwayError("REPLICA_IDENTITY_UNSUPPORTED", 409, problems.join("; "), { tables: problems });
}

/**
 * Takes every published table that lost its replica identity (primary key or identity
 * index dropped, or NOTHING set) out of the publication, as the event trigger does when the
 * DDL runs (where it could not be installed, the tick does it): Postgres would refuse the
 * app's updates and deletes of it. Each gets a warn event `backup.identity_lost` in the
 * project; the next backup is a full one. Answers the tables.
 *
 * @example
 * const unpublished = await unpublishUnidentified(source); // ["public.likes"]
 */
export async function unpublishUnidentified(project: Project): Promise<string[]> {
  // Read write of its own: a project past its quota may be read-only by default.
  const [row] = await project.sql.begin(
    "read write",
    (tx) => tx<{ tables: string[] }[]>`select spillway.unpublish_unidentified() as tables`,
  );
  return row?.tables ?? [];
}

/**
 * The table as its changes are applied: keyed by what the stream sends to find a row. With
 * REPLICA IDENTITY USING INDEX that is the index's columns (unique and not null), not the
 * primary key, whose columns arrive empty in an old row.
 *
 * @example
 * applyKey(table, { kind: "i", columns: ["email"] }).primaryKey // ["email"]
 */
export function applyKey(table: Table, identity: Identity | undefined): Table {
  return identity?.kind === "i" && identity.columns.length > 0 ? { ...table, primaryKey: identity.columns } : table;
}

/**
 * Makes a table without a primary key REPLICA IDENTITY FULL (without which Postgres refuses
 * its updates once published) and records that Spillway did, so `releaseCapture` and
 * `restoreIdentities` can put it back.
 *
 * @example
 * await makeIdentityFull(source, table);
 */
export async function makeIdentityFull(source: Project, table: Table, timeoutMs?: number): Promise<void> {
  await source.sql.begin("read write", async (tx) => {
    await boundWaits(tx, timeoutMs);
    await tx.unsafe(`alter table ${table.qualified} replica identity full`);
    await tx`insert into spillway.identity_changes (relid, qualified) values (${table.oid}, ${table.qualified}) on conflict (relid) do nothing`;
  });
}

/**
 * Puts back DEFAULT on the tables Spillway made FULL that no longer need it: those that are
 * not among `keyless` (the published tables without a primary key) any more.
 *
 * @example
 * await restoreIdentities(source, tables.filter((t) => t.primaryKey.length === 0));
 */
export async function restoreIdentities(source: Project, keyless: Table[], timeoutMs?: number): Promise<string[]> {
  return await source.sql.begin("read write", async (tx) => {
    await boundWaits(tx, timeoutMs);
    return await putBack(
      tx,
      keyless.map((t) => t.oid),
    );
  });
}

/**
 * On a project that feeds no backup any more (no Spillway slot left on it): drops the
 * publication and puts back every replica identity Spillway changed, in one transaction.
 * Answers the tables put back, or null when there was nothing to release.
 *
 * @example
 * const restored = await releaseCapture(standby);
 */
export async function releaseCapture(project: Project): Promise<string[] | null> {
  return await project.sql.begin("read write", async (tx) => {
    const [held] = await tx<{ publication: boolean; changes: boolean }[]>`
      select exists (select 1 from pg_catalog.pg_publication where pubname = ${PUBLICATION}) as publication,
        exists (select 1 from spillway.identity_changes) as changes`;
    if (!held?.publication && !held?.changes) return null;
    // The publication first: a published table without a key refuses updates under DEFAULT.
    if (held.publication) await tx.unsafe(`drop publication ${PUBLICATION}`);
    return await putBack(tx, []);
  });
}

// Tables recorded as made FULL by Spillway and not in `keep`: back to DEFAULT where they
// still exist and are still FULL (the app may have changed them since), and forgotten.
async function putBack(tx: Db, keep: number[]): Promise<string[]> {
  const rows = await tx<{ schema: string | null; name: string | null; full: boolean | null; relid: string }[]>`
    delete from spillway.identity_changes r where not (r.relid = any(${keep}::oid[]))
    returning r.relid::int8::text as relid,
      (select n.nspname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = r.relid) as schema,
      (select c.relname from pg_catalog.pg_class c where c.oid = r.relid) as name,
      (select c.relreplident = 'f' from pg_catalog.pg_class c where c.oid = r.relid) as full`;
  const restored: string[] = [];
  for (const r of rows) {
    if (!r.schema || !r.name || !r.full) continue;
    await tx.unsafe(`alter table ${qualify(r.schema, r.name)} replica identity default`);
    restored.push(`${r.schema}.${r.name}`);
  }
  return restored;
}
