import type { Db as Sql } from "../project.ts";
import { quoteIdent, type Table } from "./catalog.ts";

/** Row count and an order-independent checksum of one table's rows. */
export interface TableChecksum {
  table: string;
  rows: number;
  sum: string;
}

/**
 * Session settings under which a row's text form is the same on both sides, so that
 * checksums compare. Set with `set local` inside the transaction that checksums.
 */
export const CANONICAL_SETTINGS = [
  "set local timezone = 'UTC'",
  "set local datestyle = 'ISO, YMD'",
  "set local intervalstyle = 'postgres'",
  "set local extra_float_digits = 1",
  "set local bytea_output = 'hex'",
];

/**
 * Marks a transaction as one of Spillway's loads: the fence guard lets it write on a fenced
 * project (only for members of the role that owns schema `spillway`).
 */
export const LOAD_MARK = "set local spillway.writer = 'load'";

/**
 * Sets `CANONICAL_SETTINGS`, then any `extra` `set local` statements (which may override
 * them), in one round trip.
 *
 * @example
 * await canonical(tx, "set local row_security = off");
 */
export async function canonical(tx: Sql, ...extra: string[]): Promise<void> {
  await tx.unsafe([...CANONICAL_SETTINGS, ...extra].join(";\n"));
}

/**
 * Checksums a table: row count, and the sum of a 60-bit hash of each row's text (every
 * column, generated ones included), which does not depend on row order. `from` names the
 * relation to read, so a foreign table can stand in for the source.
 *
 * @example
 * const c = await checksumTable(tx, table);
 */
export async function checksumTable(sql: Sql, table: Table, from: string = table.qualified): Promise<TableChecksum> {
  const cols = table.columns.map((c) => quoteIdent(c.name)).join(", ");
  const [row] = await sql.unsafe<{ rows: string; sum: string }[]>(
    `select count(*)::int8 as rows, coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::int8), 0)::text as sum
     from (select ${cols} from ${from}) t`,
  );
  return { table: `${table.schema}.${table.name}`, rows: Number(row!.rows), sum: row!.sum };
}

/**
 * The tables whose checksums differ, each named with both sides' figures.
 *
 * @example
 * compareChecksums(a, b) // ["public.orders: 10 rows (sum 5) on the active, 9 rows (sum 4) on the standby"]
 */
export function compareChecksums(active: TableChecksum[], standby: TableChecksum[]): string[] {
  const other = new Map(standby.map((c) => [c.table, c]));
  const out: string[] = [];
  for (const a of active) {
    const s = other.get(a.table);
    if (!s) out.push(`${a.table}: missing on the standby`);
    else if (s.rows !== a.rows || s.sum !== a.sum) {
      out.push(`${a.table}: ${a.rows} rows (sum ${a.sum}) on the active, ${s.rows} rows (sum ${s.sum}) on the standby`);
    }
  }
  return out;
}
