import type { Db as Sql } from "../project.ts";
import { type Catalog, copiedColumns, type Index, quoteIdent, type Sequence, type Table } from "./catalog.ts";
import { canonical, LOAD_MARK } from "./checksum.ts";

/** Settings of a transaction that loads the standby. */
const LOAD_SETTINGS = [
  // Replica mode: the standby's own triggers (foreign key checks included) stay quiet while
  // it is loaded. Its foreign keys stay in place and need no check afterwards: every row
  // comes from one consistent snapshot of the active, where they held.
  "set local session_replication_role = replica",
  // The fence trigger fires in replica mode too; this mark lets Spillway's own loads through.
  LOAD_MARK,
  "set local lock_timeout = '30s'",
  // Index rebuilds after the load sort in memory rather than on disk.
  "set local maintenance_work_mem = '128MB'",
];

/** The indexes `beginLoad` dropped, which `rebuildAfterLoad` puts back. */
export interface RebuildPlan {
  indexes: Index[];
}

/**
 * Readies a target transaction to load `tables` the way pg_restore loads: replica mode,
 * the rebuildable indexes dropped (only what can be rebuilt from the standby's own
 * definitions, and never a key a foreign key stands on), the tables emptied.
 *
 * @example
 * const rebuild = await beginLoad(dst, targetCatalog, tables);
 */
export async function beginLoad(dst: Sql, targetCatalog: Catalog, tables: Table[]): Promise<RebuildPlan> {
  await canonical(dst, ...LOAD_SETTINGS);
  const names = new Set(tables.map((t) => t.qualified));
  const rebuild = { indexes: targetCatalog.indexes.filter((ix) => names.has(ix.table)) };
  for (const ix of rebuild.indexes) await dst.unsafe(ix.drop);
  if (tables.length > 0) await dst.unsafe(`truncate ${tables.map((t) => t.qualified).join(", ")}`);
  return rebuild;
}

/**
 * Rebuilds, once the rows are in, what `beginLoad` dropped.
 *
 * @example
 * await rebuildAfterLoad(dst, rebuild);
 */
export async function rebuildAfterLoad(dst: Sql, rebuild: RebuildPlan): Promise<void> {
  for (const ix of rebuild.indexes) await dst.unsafe(ix.create);
}

/**
 * Sets the target's sequences to the source's positions, in one statement (incremental
 * runs do it with every batch).
 *
 * @example
 * await setSequences(dst, await readSequences(source.sql, ["public"]));
 */
export async function setSequences(dst: Sql, sequences: Sequence[], options: { gapSteps?: number } = {}): Promise<void> {
  if (sequences.length === 0) return;
  // With a gap, each sequence moves `gapSteps` steps further (never past its bound), so that
  // numbers the old active may still hand out (nextval writes no table, so the fence does
  // not stop it) are never handed out again here.
  const gap = options.gapSteps ?? 0;
  await dst`
    select pg_catalog.setval(s.name::regclass,
      case when ${gap}::int8 = 0 then s.last
           when s.step > 0 then least(s.last::numeric + s.step * ${gap}::numeric, s.bound)::int8
           else greatest(s.last::numeric + s.step * ${gap}::numeric, s.bound)::int8 end,
      s.called::bool or ${gap}::int8 > 0)
    from unnest(${sequences.map((q) => q.qualified)}::text[], ${sequences.map((q) => q.lastValue)}::int8[], ${sequences.map((q) => (q.isCalled ? "t" : "f"))}::text[],
      ${sequences.map((q) => q.increment)}::int8[], ${sequences.map((q) => q.bound)}::int8[]) as s(name, last, called, step, bound)`;
}

/**
 * Creates `table`'s stage table `stage` on the standby, empty: its copied columns as plain
 * ones (no identity, no default, generated values recomputed at publish), no key until it
 * is loaded (`keyStage`).
 *
 * @example
 * await createStage(dst, table, '"spillway"."stage_0"');
 */
export async function createStage(dst: Sql, table: Table, stage: string): Promise<void> {
  await dst.unsafe(`drop table if exists ${stage}`);
  await dst.unsafe(`create table ${stage} as select ${copiedColumns(table)} from ${table.qualified} with no data`);
  await dst.unsafe(`alter table ${stage} enable row level security`);
}

/**
 * Keys a loaded stage table by its table's primary key, so that catching up finds rows by it.
 *
 * @example
 * await keyStage(dst, table, '"spillway"."stage_0"');
 */
export async function keyStage(dst: Sql, table: Table, stage: string): Promise<void> {
  if (table.primaryKey.length > 0)
    await dst.unsafe(`alter table ${stage} add primary key (${table.primaryKey.map(quoteIdent).join(", ")})`);
}

/**
 * Fills `table` (emptied by `beginLoad`) from its stage table.
 *
 * @example
 * await fillFromStage(dst, table, '"spillway"."stage_0"');
 */
export async function fillFromStage(dst: Sql, table: Table, stage: string): Promise<void> {
  const cols = copiedColumns(table);
  await dst.unsafe(`insert into ${table.qualified} (${cols}) overriding system value select ${cols} from ${stage}`);
}

/**
 * The shape of `table`'s stage table, as changes are written to it: the same columns as
 * plain ones (no identity, no generated values). It still names `table`: the relation
 * written is given apart (`into`).
 *
 * @example
 * stageShape(table).columns.some((c) => c.generated) // false
 */
export function stageShape(table: Table): Table {
  return { ...table, columns: table.columns.filter((c) => !c.generated).map((c) => ({ ...c, identity: "" as const })) };
}
