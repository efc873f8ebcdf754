import type { Db, Project } from "../project.ts";
import { qualify, type Table } from "./catalog.ts";
import { checksumTable, type TableChecksum } from "./checksum.ts";
import { copyTable } from "./copy.ts";
import {
  dropForeignSchemas,
  ensureFdwLink,
  FDW_LANES,
  type ForeignTables,
  holdTables,
  importForeignTables,
  laneSnapshots,
  pullTable,
  SPLIT_PAGES,
  sameCommitted,
} from "./fdw.ts";
import { inSnapshot, SNAPSHOT_SQL } from "./source.ts";

/** How rows move from the active to the standby (the `strategy` setting, once resolved). */
export type Strategy = "copy" | "fdw";

/** Rows on their way from one snapshot of the active into one standby transaction. */
export interface Channel {
  /**
   * The snapshot the rows are read in (`SNAPSHOT_SQL` on the active), so that catching up
   * skips the changes it already saw.
   */
  snapshot: string;
  /** True when rows come through the fdw link (Auth's tables then come the same way). */
  foreign: boolean;
  /** The connections to the active that rows come through at once (fdw: 2 for a large table, else 1). */
  lanes: number;
  /** Moves `table`'s rows into the relation `into` (the table itself, or its stage table), telling bytes as they go. */
  move(table: Table, into: string, onBytes: (n: number) => void): Promise<{ rows: number; bytes: number }>;
  /** The active's checksum of `table`, read in the channel's snapshot. */
  checksum(table: Table): Promise<TableChecksum>;
  /** Drops what the channel made in the standby's transaction. */
  close(): Promise<void>;
}

/**
 * A strategy: `copy` streams rows through Spillway with COPY from a repeatable-read
 * transaction on the active; `fdw` has the standby pull them through postgres_fdw, whose
 * remote transaction is the snapshot.
 */
export interface Transfer {
  strategy: Strategy;
  /** Readies the standby once per run, before any load transaction (fdw: its link to the active). */
  prepare(source: Project, target: Project): Promise<void>;
  /**
   * Runs `body` with what the strategy reads the active through: for copy, a transaction
   * in one repeatable-read snapshot of it (wrap the standby's transaction inside, so the
   * rows are one point in time); for fdw the project's pool, read only for the tables'
   * sizes (the links read the rows).
   */
  fromSource<T>(source: Project, body: (src: Db) => Promise<T>): Promise<T>;
  /**
   * Opens a channel into the standby's transaction `dst` for `tables`, reading through `src`
   * (copy) or the links (fdw, over at most `lanes` of them). Throws `LinksApart` when the
   * links cannot be used together in this transaction: open again in a new one, over one
   * link in the end.
   */
  open(dst: Db, src: Db, schemas: string[], tables: Table[], options?: { lanes?: number }): Promise<Channel>;
}

const copy: Transfer = {
  strategy: "copy",
  async prepare() {},
  fromSource: (source, body) => inSnapshot(source, body),
  async open(dst, src) {
    const [row] = await src.unsafe<{ snapshot: string }[]>(`select ${SNAPSHOT_SQL} as snapshot`);
    return {
      snapshot: row!.snapshot,
      foreign: false,
      lanes: 1,
      move: (table, into, onBytes) => copyTable(src, dst, table, onBytes, into),
      checksum: (table) => checksumTable(src, table),
      async close() {},
    };
  },
};

const fdw: Transfer = {
  strategy: "fdw",
  prepare: (source, target) => ensureFdwLink(target.sql, source.url),
  fromSource: (source, body) => body(source.sql),
  async open(dst, src, schemas, tables, options = {}) {
    // Sizes matter only to split tables between links.
    const splits = (options.lanes ?? FDW_LANES.length) > 1 && (await asyncLinks(dst));
    const pages = splits ? await tablePages(src, tables) : new Map<string, number>();
    const large = tables.filter((t) => (pages.get(t.qualified) ?? 0) >= SPLIT_PAGES);
    const lanes = large.length > 0 ? FDW_LANES.length : 1;
    // The first remote query of each link fixes its snapshot: they name the rows' moment
    // for catching up, and the links are used together only when they see the same rows.
    let snapshot: string;
    let foreign: ForeignTables;
    try {
      const snapshots = await laneSnapshots(dst, lanes);
      if (!snapshots.every((s) => sameCommitted(snapshots[0]!, s))) throw new LinksApart("a transaction completed between their snapshots");
      snapshot = snapshots[0]!;
      foreign = await importForeignTables(dst, schemas, tables, lanes);
      if (lanes > 1) await holdTables(dst, large, foreign, HOLD_TIMEOUT_MS);
    } catch (e) {
      // Over one link the error is the load's own; over two, the second link may be what failed.
      if (lanes === 1 || e instanceof LinksApart) throw e;
      throw new LinksApart(e instanceof Error ? e.message : String(e));
    }
    const local = (table: Table) => foreign.get(table.schema)!;
    return {
      snapshot,
      foreign: true,
      lanes,
      async move(table, into, onBytes) {
        const moved = await pullTable(dst, table, local(table), into, pages.get(table.qualified) ?? 0);
        onBytes(moved.bytes);
        return moved;
      },
      checksum: (table) => checksumTable(dst, table, qualify(local(table)[0]!, table.name)),
      close: () => dropForeignSchemas(dst, [...foreign.values()].flat()),
    };
  },
};

// How long the links may wait for their locks on the active's large tables (`holdTables`).
const HOLD_TIMEOUT_MS = 5000;

/**
 * The fdw links could not be used together in this standby transaction (their snapshots
 * differ, or the second could not connect or lock): open the channel again in a new one.
 *
 * @example
 * if (e instanceof LinksApart) continue;
 */
export class LinksApart extends Error {}

// Each table's size in pages on the active, by qualified name (0 for one it does not have).
async function tablePages(src: Db, tables: Table[]): Promise<Map<string, number>> {
  const rows = await src<{ name: string; pages: string }[]>`
    select t.name, coalesce(pg_catalog.pg_relation_size(pg_catalog.to_regclass(t.name))
      / pg_catalog.current_setting('block_size')::int8, 0)::text as pages
    from unnest(${tables.map((t) => t.qualified)}::text[]) as t(name)`;
  return new Map(rows.map((r) => [r.name, Number(r.pages)]));
}

// Whether the standby's links scan asynchronously (the option is set on PostgreSQL 14 and later).
async function asyncLinks(dst: Db): Promise<boolean> {
  const [row] = await dst<{ on: boolean }[]>`
    select count(*) = ${FDW_LANES.length} as on
    from pg_catalog.pg_foreign_server s, pg_catalog.pg_options_to_table(s.srvoptions) o
    where s.srvname = any(${[...FDW_LANES]}::text[]) and o.option_name = 'async_capable' and o.option_value = 'true'`;
  return row?.on === true;
}

/**
 * The transfer of a strategy.
 *
 * @example
 * const transfer = transferFor("fdw");
 * await transfer.prepare(source, target);
 */
export function transferFor(strategy: Strategy): Transfer {
  return strategy === "fdw" ? fdw : copy;
}
