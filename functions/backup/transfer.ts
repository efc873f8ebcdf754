import { SpillwayError } from "../errors.ts";
import type { Db, Project } from "../project.ts";
import { qualify, type Table } from "./catalog.ts";
import { checksumTable, type TableChecksum } from "./checksum.ts";
import { copyTable } from "./copy.ts";
import { dropForeignSchemas, ensureFdwLink, importForeignTables, pullTable, remoteSnapshot } from "./fdw.ts";
import { inSnapshot } from "./source.ts";

/** How rows move from the active to the standby (the `strategy` setting, once resolved). */
export type Strategy = "copy" | "fdw";

/** Rows on their way from one snapshot of the active into one standby transaction. */
export interface Channel {
  /**
   * The snapshot the rows are read in (`pg_current_snapshot()` of the active), so that
   * catching up skips the changes it already saw.
   */
  snapshot: string;
  /** True when rows come through the fdw link (Auth's tables then come the same way). */
  foreign: boolean;
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
   * rows are one point in time); for fdw nothing (null), the link reads it.
   */
  fromSource<T>(source: Project, body: (src: Db | null) => Promise<T>): Promise<T>;
  /** Opens a channel into the standby's transaction `dst` for `tables`, reading through `src` (copy) or the link (fdw). */
  open(dst: Db, src: Db | null, schemas: string[], tables: Table[]): Promise<Channel>;
}

const copy: Transfer = {
  strategy: "copy",
  async prepare() {},
  fromSource: (source, body) => inSnapshot(source, body),
  async open(dst, src) {
    if (!src) throw new SpillwayError("BACKUP_FAILED", 500, "the copy strategy reads the active in a transaction of its own (fromSource)");
    const [row] = await src<{ snapshot: string }[]>`select pg_catalog.pg_current_snapshot()::text as snapshot`;
    return {
      snapshot: row!.snapshot,
      foreign: false,
      move: (table, into, onBytes) => copyTable(src, dst, table, onBytes, into),
      checksum: (table) => checksumTable(src, table),
      async close() {},
    };
  },
};

const fdw: Transfer = {
  strategy: "fdw",
  prepare: (source, target) => ensureFdwLink(target.sql, source.url),
  fromSource: (_source, body) => body(null),
  async open(dst, _src, schemas, tables) {
    const foreign = await importForeignTables(dst, schemas, tables);
    // The first remote query fixes the remote snapshot; it names it for catching up.
    const snapshot = await remoteSnapshot(dst);
    const local = (table: Table) => foreign.get(table.schema)!;
    return {
      snapshot,
      foreign: true,
      async move(table, into, onBytes) {
        const moved = await pullTable(dst, table, local(table), into);
        onBytes(moved.bytes);
        return moved;
      },
      checksum: (table) => checksumTable(dst, table, qualify(local(table), table.name)),
      close: () => dropForeignSchemas(dst, foreign),
    };
  },
};

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
