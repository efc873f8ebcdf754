import { SpillwayError } from "../errors.ts";
import type { Db as Sql } from "../project.ts";

/** One replicated column. */
export interface Column {
  name: string;
  type: string;
  notNull: boolean;
  /** Generated columns are recomputed by the standby, never copied. */
  generated: boolean;
  identity: "" | "a" | "d";
  /** Whether an insert that leaves it out gets a default (as read from the catalog; unset: unknown). */
  hasDefault?: boolean;
}

/** One replicated table (a plain table or a leaf partition; partitioned parents hold no rows). */
export interface Table {
  oid: number;
  schema: string;
  name: string;
  /** `"schema"."name"`, quoted. */
  qualified: string;
  partition: boolean;
  rowSecurity: boolean;
  columns: Column[];
  primaryKey: string[];
  /**
   * Columns a unique or exclusion constraint other than the primary key looks at, in its
   * key, expressions or predicate (every column when one reads the whole row): updates
   * that change them must reach the standby in the active's order.
   */
  uniqueColumns: string[];
  /** Binary COPY embeds type OIDs of arrays and composites of user types, which differ between databases. */
  binarySafe: boolean;
}

/**
 * The columns a copy moves, quoted and comma-separated: every column but the generated
 * ones, which the standby computes itself.
 *
 * @example
 * copiedColumns(table) // "\"id\", \"name\""
 */
export function copiedColumns(table: Table): string {
  return table.columns
    .filter((c) => !c.generated)
    .map((c) => quoteIdent(c.name))
    .join(", ");
}

/** A foreign key between replicated tables: which table references which, and how. */
export interface ForeignKey {
  name: string;
  table: string;
  references: string;
  definition: string;
}

/** An index (or the constraint that owns it) that a full load drops and rebuilds. */
export interface Index {
  table: string;
  name: string;
  /** `alter table … add constraint …` or `create index …`. */
  create: string;
  drop: string;
}

/**
 * A carried sequence: one in a replicated schema (serial and identity sequences included),
 * or one a replicated table's column uses (a default's `nextval`, an identity), wherever it lives.
 */
export interface Sequence {
  qualified: string;
  /** With `isCalled`, as `setval` takes them: false means `lastValue` is the next value. */
  lastValue: string;
  isCalled: boolean;
  /** The step and the bound in its direction (`maxvalue`, or `minvalue` when descending). */
  increment: string;
  bound: string;
}

/**
 * A definition the rows must satisfy on both sides alike, or applying the active's rows on
 * the standby fails or computes other values: a check, unique or exclusion constraint, a
 * unique index, a generated column's expression (by table), a domain (`table` null).
 */
export interface Rule {
  /** `schema.name` of the table; null for a domain. */
  table: string | null;
  kind: "check constraint" | "unique constraint" | "exclusion constraint" | "unique index" | "generated column" | "domain";
  name: string;
  definition: string;
}

/** An enum type a replicated column uses (directly, as an array or through a domain), with its labels. */
export interface EnumType {
  name: string;
  labels: string[];
}

/** What a backup needs to know about one side. */
export interface Catalog {
  tables: Table[];
  foreignKeys: ForeignKey[];
  indexes: Index[];
  sequences: Sequence[];
  rules: Rule[];
  enums: EnumType[];
}

/**
 * Quotes an identifier from the catalog. Only names read from `pg_catalog` go through
 * here, never text from a request.
 *
 * @example
 * quoteIdent('my "table"') // "\"my \"\"table\"\"\""
 */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** `"schema"."name"`. */
export function qualify(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/**
 * Reads the replicated tables of the given schemas, with their columns, keys, foreign
 * keys, rebuildable indexes and sequences. Spillway's own objects are never included.
 * Names in type, index and constraint text come fully qualified, whatever `search_path`
 * the connection carries (a pooled connection may carry another session's, such as the
 * `pg_catalog` postgres_fdw sets), so both projects render alike. Given a transaction,
 * the reading leaves that transaction's `search_path` as it found it. With `sequences`
 * false, none are read (Auth's have their own handling).
 *
 * @example
 * const catalog = await readCatalog(sql, ["public"]);
 */
export async function readCatalog(sql: Sql, schemas: string[], options: { sequences?: boolean } = {}): Promise<Catalog> {
  const sequences = options.sequences ?? true;
  if ("begin" in sql) {
    return await sql.begin("read only", async (tx) => {
      await tx`select pg_catalog.set_config('search_path', '', true)`;
      return await readQualified(tx, schemas, sequences);
    });
  }
  const [previous] = await sql<
    { path: string }[]
  >`select pg_catalog.current_setting('search_path') as path, pg_catalog.set_config('search_path', '', true)`;
  const catalog = await readQualified(sql, schemas, sequences);
  await sql`select pg_catalog.set_config('search_path', ${previous!.path}, true)`;
  return catalog;
}

// Rows of the catalog, read in one statement (each statement is a round trip or two, and a
// run reads both projects' catalogs before it can start).
interface CatalogRows {
  tables: { oid: number; schema: string; name: string; partition: boolean; row_security: boolean }[];
  columns: {
    rel: number;
    name: string;
    type: string;
    not_null: boolean;
    generated: string;
    identity: string;
    has_default: boolean;
    text_only: boolean;
  }[];
  keys: { rel: number; columns: string[] }[];
  uniques: { rel: number; whole: boolean; columns: string[] }[];
  foreign_keys: { name: string; table_schema: string; table_name: string; ref_schema: string; ref_name: string; definition: string }[];
  indexes: {
    table_schema: string;
    table_name: string;
    name: string;
    constraint_name: string | null;
    index_def: string;
    constraint_def: string | null;
  }[];
  rules: Rule[];
  enums: EnumType[];
}

async function readQualified(sql: Sql, schemas: string[], sequences: boolean): Promise<Catalog> {
  const [rows] = await sql<CatalogRows[]>`
    with recursive tabs as (
      select c.oid, n.nspname as schema, c.relname as name, c.relispartition as partition, c.relrowsecurity as row_security
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'r'
        and not (n.nspname = 'public' and c.relname = 'spillway_active')
        -- A leaf partition belongs to its root table's schema, wherever it lives itself: rows
        -- written to a replicated table may land in it.
        and (n.nspname = any(${schemas}) or (c.relispartition and exists (
          select 1 from pg_catalog.pg_class r join pg_catalog.pg_namespace rn on rn.oid = r.relnamespace
          where r.oid = pg_catalog.pg_partition_root(c.oid) and rn.nspname = any(${schemas}))))
    ),
    -- The types the tables' columns use, and what those are made of (an array's element, a
    -- domain's base): an enum or a domain reached this way decides which values apply.
    used(oid) as (
      select a.atttypid from pg_catalog.pg_attribute a
      where a.attrelid in (select oid from tabs) and a.attnum > 0 and not a.attisdropped
      union
      select case when t.typtype = 'd' then t.typbasetype else t.typelem end
      from used u join pg_catalog.pg_type t on t.oid = u.oid
      where t.typtype = 'd' or (t.typcategory = 'A' and t.typelem <> 0)
    )
    select
      (select coalesce(pg_catalog.json_agg(x order by x.schema, x.name), '[]')
       from (select t.oid::int8 as oid, t.schema, t.name, t.partition, t.row_security from tabs t) x) as tables,
      (select coalesce(pg_catalog.json_agg(x order by x.rel, x.attnum), '[]')
       from (
         select a.attrelid::int8 as rel, a.attnum, a.attname as name, pg_catalog.format_type(a.atttypid, a.atttypmod) as type,
           a.attnotnull as not_null, a.attgenerated::text as generated, a.attidentity::text as identity,
           (a.atthasdef or a.attidentity <> '') as has_default,
           (a.atttypid >= 16384 and (t.typcategory = 'A' or t.typtype in ('c', 'r', 'm'))) as text_only
         from pg_catalog.pg_attribute a
         join pg_catalog.pg_type t on t.oid = a.atttypid
         where a.attrelid in (select oid from tabs) and a.attnum > 0 and not a.attisdropped) x) as columns,
      (select coalesce(pg_catalog.json_agg(x), '[]')
       from (
         select c.conrelid::int8 as rel, array_agg(a.attname order by k.ord) as columns
         from pg_catalog.pg_constraint c
         cross join lateral unnest(c.conkey) with ordinality as k(attnum, ord)
         join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
         where c.contype = 'p' and c.conrelid in (select oid from tabs)
         group by c.conrelid) x) as keys,
      -- The columns a unique index looks at: its key columns, and those its expressions and
      -- predicate read (their Vars, as the stored expression trees name them); a whole-row
      -- Var (column 0) reads every column.
      (select coalesce(pg_catalog.json_agg(x), '[]')
       from (
         select i.indrelid::int8 as rel, 0 = any(v.attnums) as whole,
           array(select a.attname from pg_catalog.pg_attribute a
                 where a.attrelid = i.indrelid and a.attnum > 0 and (a.attnum = any(i.indkey::int2[]) or a.attnum = any(v.attnums))) as columns
         from pg_catalog.pg_index i
         cross join lateral (
           select array(
             select m[1]::int2
             from pg_catalog.regexp_matches(coalesce(i.indexprs::text, '') || ' ' || coalesce(i.indpred::text, ''), ':varattno (-?[0-9]+)', 'g') as m
           ) as attnums) v
         where i.indrelid in (select oid from tabs) and (i.indisunique or i.indisexclusion) and not i.indisprimary) x) as uniques,
      (select coalesce(pg_catalog.json_agg(x order by x.table_schema, x.table_name, x.name), '[]')
       from (
         select c.conname as name, tn.nspname as table_schema, t.relname as table_name, rn.nspname as ref_schema, r.relname as ref_name,
           pg_catalog.pg_get_constraintdef(c.oid) as definition
         from pg_catalog.pg_constraint c
         join pg_catalog.pg_class t on t.oid = c.conrelid join pg_catalog.pg_namespace tn on tn.oid = t.relnamespace
         join pg_catalog.pg_class r on r.oid = c.confrelid join pg_catalog.pg_namespace rn on rn.oid = r.relnamespace
         where c.contype = 'f' and c.conparentid = 0 and t.relkind = 'r' and not t.relispartition
           and c.conrelid in (select oid from tabs) and c.confrelid in (select oid from tabs)) x) as foreign_keys,
      -- Indexes a load may drop and rebuild: on plain (non-partition) tables, not tied to a
      -- partitioned index, not the key any foreign key stands on (foreign keys stay), and not a
      -- REPLICA IDENTITY USING INDEX one (rebuilt, it would no longer be the identity: the
      -- table would be left with none once this project is the active and publishes it).
      (select coalesce(pg_catalog.json_agg(x order by x.table_schema, x.table_name, x.name), '[]')
       from (
         select n.nspname as table_schema, t.relname as table_name, ic.relname as name, con.conname as constraint_name,
           pg_catalog.pg_get_indexdef(i.indexrelid) as index_def, pg_catalog.pg_get_constraintdef(con.oid) as constraint_def
         from pg_catalog.pg_index i
         join pg_catalog.pg_class ic on ic.oid = i.indexrelid
         join pg_catalog.pg_class t on t.oid = i.indrelid
         join pg_catalog.pg_namespace n on n.oid = t.relnamespace
         left join pg_catalog.pg_constraint con on con.conindid = i.indexrelid and con.conrelid = i.indrelid and con.contype in ('p', 'u', 'x')
         where i.indrelid in (select oid from tabs) and not t.relispartition and not ic.relispartition
           and not exists (
             select 1 from pg_catalog.pg_constraint f
             where f.contype = 'f' and f.conindid = i.indexrelid
           )
           and not exists (select 1 from pg_catalog.pg_depend d where d.refobjid = i.indexrelid and d.classid = 'pg_catalog.pg_class'::regclass and d.deptype = 'i')
           and not i.indisreplident
       ) x) as indexes,
      (select coalesce(pg_catalog.json_agg(x order by x."table", x.kind, x.name), '[]')
       from (
         select n.nspname || '.' || t.relname as "table",
           case c.contype when 'c' then 'check constraint' when 'u' then 'unique constraint' else 'exclusion constraint' end as kind,
           c.conname as name, pg_catalog.pg_get_constraintdef(c.oid) as definition
         from pg_catalog.pg_constraint c
         join pg_catalog.pg_class t on t.oid = c.conrelid join pg_catalog.pg_namespace n on n.oid = t.relnamespace
         where c.contype in ('c', 'u', 'x') and c.conrelid in (select oid from tabs)
         union all
         select n.nspname || '.' || t.relname, 'unique index', ic.relname, pg_catalog.pg_get_indexdef(i.indexrelid)
         from pg_catalog.pg_index i
         join pg_catalog.pg_class ic on ic.oid = i.indexrelid
         join pg_catalog.pg_class t on t.oid = i.indrelid join pg_catalog.pg_namespace n on n.oid = t.relnamespace
         where i.indrelid in (select oid from tabs) and i.indisunique and not i.indisprimary
           and not exists (select 1 from pg_catalog.pg_constraint k where k.conindid = i.indexrelid and k.conrelid = i.indrelid)
         union all
         select n.nspname || '.' || t.relname, 'generated column', a.attname, pg_catalog.pg_get_expr(d.adbin, d.adrelid)
         from pg_catalog.pg_attribute a
         join pg_catalog.pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         join pg_catalog.pg_class t on t.oid = a.attrelid join pg_catalog.pg_namespace n on n.oid = t.relnamespace
         where a.attrelid in (select oid from tabs) and a.attgenerated <> '' and not a.attisdropped
         union all
         select null, 'domain', pg_catalog.format_type(t.oid, null),
           pg_catalog.format_type(t.typbasetype, t.typtypmod) || case when t.typnotnull then ' NOT NULL' else '' end
             || coalesce((select pg_catalog.string_agg(' ' || pg_catalog.pg_get_constraintdef(c.oid), '' order by c.conname)
                          from pg_catalog.pg_constraint c where c.contypid = t.oid), '')
         from pg_catalog.pg_type t where t.typtype = 'd' and t.oid in (select oid from used)
       ) x) as rules,
      (select coalesce(pg_catalog.json_agg(x order by x.name), '[]')
       from (
         select pg_catalog.format_type(t.oid, null) as name, array_agg(e.enumlabel::text order by e.enumsortorder) as labels
         from pg_catalog.pg_type t join pg_catalog.pg_enum e on e.enumtypid = t.oid
         where t.oid in (select oid from used)
         group by t.oid) x) as enums`;
  const { tables: tableRows, columns: columnRows, keys: pkRows, uniques: uniqueRows, foreign_keys: fkRows, indexes: indexRows } = rows!;

  const tables: Table[] = tableRows.map((t) => {
    const oid = Number(t.oid);
    const cols = columnRows.filter((c) => Number(c.rel) === oid);
    const unique = uniqueRows.filter((u) => Number(u.rel) === oid);
    const uniqueColumns = unique.some((u) => u.whole) ? cols.map((c) => c.name) : [...new Set(unique.flatMap((u) => u.columns))];
    return {
      oid,
      schema: t.schema,
      name: t.name,
      qualified: qualify(t.schema, t.name),
      partition: t.partition,
      rowSecurity: t.row_security,
      columns: cols.map((c) => ({
        name: c.name,
        type: c.type,
        notNull: c.not_null,
        generated: c.generated !== "",
        identity: c.identity as Column["identity"],
        hasDefault: c.has_default,
      })),
      primaryKey: pkRows.find((p) => Number(p.rel) === oid)?.columns ?? [],
      uniqueColumns,
      binarySafe: !cols.some((c) => c.text_only),
    };
  });

  const indexes: Index[] = indexRows.map((r) => {
    const table = qualify(r.table_schema, r.table_name);
    return r.constraint_name && r.constraint_def
      ? {
          table,
          name: r.name,
          create: `alter table ${table} add constraint ${quoteIdent(r.constraint_name)} ${r.constraint_def}`,
          drop: `alter table ${table} drop constraint ${quoteIdent(r.constraint_name)}`,
        }
      : { table, name: r.name, create: r.index_def, drop: `drop index ${qualify(r.table_schema, r.name)}` };
  });

  return {
    tables,
    foreignKeys: fkRows.map((f) => ({
      name: f.name,
      table: qualify(f.table_schema, f.table_name),
      references: qualify(f.ref_schema, f.ref_name),
      definition: f.definition,
    })),
    indexes,
    sequences: sequences ? await readSequences(sql, schemas) : [],
    rules: rows!.rules,
    enums: rows!.enums,
  };
}

/**
 * The carried sequences (`Sequence`: those of the given schemas, and those their tables'
 * columns use wherever they live) where they stand now: sequences are not transactional,
 * so this is their latest position whatever the transaction's snapshot. Throws 409
 * `SEQUENCE_UNREADABLE` naming a carried sequence the role may not read: skipping it would
 * hand out its numbers again after a switch.
 *
 * @example
 * const sequences = await readSequences(sql, ["public"]);
 */
export async function readSequences(sql: Sql, schemas: string[]): Promise<Sequence[]> {
  // Read from each sequence itself (pg_sequences hides a position not yet called).
  const rows = await sql<
    {
      schema: string;
      name: string;
      readable: boolean;
      last_value: string | null;
      is_called: boolean | null;
      increment: string;
      bound: string;
    }[]
  >`
    with tabs as (
      select c.oid from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('r', 'p') and n.nspname = any(${schemas})
    ), seqs as materialized (
      select c.oid, n.nspname as schema, c.relname as name, q.seqincrement::text as increment,
        (case when q.seqincrement > 0 then q.seqmax else q.seqmin end)::text as bound,
        pg_catalog.has_table_privilege(c.oid, 'SELECT') as readable
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      join pg_catalog.pg_sequence q on q.seqrelid = c.oid
      where c.relkind = 'S' and (n.nspname = any(${schemas})
        -- Owned by a carried column (serial, identity).
        or exists (
          select 1 from pg_catalog.pg_depend d
          where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid and d.deptype in ('a', 'i')
            and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.refobjid in (select oid from tabs))
        -- Named by a carried column's default (nextval('app_private.order_no')).
        or exists (
          select 1 from pg_catalog.pg_depend d join pg_catalog.pg_attrdef ad on ad.oid = d.objid
          where d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            and d.refobjid = c.oid and ad.adrelid in (select oid from tabs))))
    select s.schema, s.name, s.readable, s.increment, s.bound,
      -- Read only where readable: reading one the role may not read fails the statement.
      case when s.readable then (select x.last_value::text from spillway.sequence_state(s.oid) x) end as last_value,
      case when s.readable then (select x.is_called from spillway.sequence_state(s.oid) x) end as is_called
    from seqs s
    order by 1, 2`;
  const unreadable = rows.filter((s) => !s.readable).map((s) => `${s.schema}.${s.name}`);
  if (unreadable.length > 0) {
    throw new SpillwayError(
      "SEQUENCE_UNREADABLE",
      409,
      `Spillway's role may not read the sequence${unreadable.length === 1 ? "" : "s"} ${unreadable.join(", ")}, which the carried tables use: grant select, update on ${unreadable.length === 1 ? "it" : "them"} to the role in Spillway's database URL (on both projects), or it would hand out numbers again after a switch`,
      { sequences: unreadable },
    );
  }
  return rows.map((s) => ({
    qualified: qualify(s.schema, s.name),
    lastValue: s.last_value!,
    isCalled: s.is_called!,
    increment: s.increment,
    bound: s.bound,
  }));
}

/**
 * Orders tables so that each comes after the tables it references (self-references and
 * cycles are broken where they occur; a load drops foreign keys anyway, the order keeps
 * progress readable and inserts valid where keys are kept).
 *
 * @example
 * const ordered = foreignKeyOrder(catalog.tables, catalog.foreignKeys);
 */
export function foreignKeyOrder(tables: Table[], foreignKeys: ForeignKey[]): Table[] {
  const byName = new Map(tables.map((t) => [t.qualified, t]));
  const done = new Set<string>();
  const visiting = new Set<string>();
  const out: Table[] = [];
  const visit = (name: string) => {
    if (done.has(name) || visiting.has(name)) return;
    visiting.add(name);
    for (const fk of foreignKeys) if (fk.table === name && fk.references !== name) visit(fk.references);
    visiting.delete(name);
    done.add(name);
    const t = byName.get(name);
    if (t) out.push(t);
  };
  for (const t of tables) visit(t.qualified);
  return out;
}
