import type { TransactionSql } from "postgres";
import { PG, SpillwayError } from "../errors.ts";
import { quoteIdent, type Table } from "./catalog.ts";
import { type Message, UNCHANGED, type Value } from "./pgoutput.ts";

/**
 * A table as its changes are written: its columns and key, and `into`, the relation written
 * when it is not the table itself (a staged copy's stage table); `qualified` always names
 * the table.
 */
export type WrittenTable = Table & { into?: string };

// The relation a table's changes are written to.
function relation(t: WrittenTable): string {
  return t.into ?? t.qualified;
}

// What a relation message comes to on the standby's side.
interface Shape {
  table: WrittenTable;
  cols: string[];
  keyIdx: number[];
  /** The text that identifies a row by its key, for telling rows apart within a group. */
  keyOf: (row: Value[]) => string;
  insertKey: string;
  updateKey: string;
  /** Positions in `cols` of the columns a unique constraint other than the key looks at. */
  uniqueIdx: number[];
}

// A value as a statement parameter: UNCHANGED never reaches one (it is left out before).
function text(v: Value): string | null {
  return v === UNCHANGED ? null : v;
}

/** A relation message: a table's name and columns as the stream describes them. */
export type Relation = Extract<Message, { type: "relation" }>;
/** A decoded row change. */
export type Change = Extract<Message, { type: "insert" | "update" | "delete" | "truncate" }>;

// Groups each table's consecutive changes of one kind into one statement. Tables are
// independent while the standby applies in replica mode (no triggers, no foreign key
// checks) and only the batch's end is ever visible, so only each table's own order is kept:
// a row seen twice in a group (by its key, old or new) ends the group first, except a row
// updated again with the same columns, the same key and the same values in its unique
// columns, whose later values replace the earlier ones. Within a group, then, no two rows
// can meet on the key whatever order the standby writes them in. Unique constraints other
// than the key are checked row by row as a statement writes, in an order its plan picks:
// an update group that may change their values writes the rows that keep them, then tries
// the others in one statement, and writes them in the active's order only if the standby
// refuses that (see `write`).
interface Group {
  key: string;
  table: WrittenTable;
  kind: "insert" | "update" | "delete";
  columns: string[];
  rows: Value[][];
  where: Value[][];
  seen: Set<string>;
  /** Update groups: the entry of each key updated in place, which a later update may replace. */
  inPlace: Map<string, number>;
  /** Update groups: positions in `columns` of the columns a unique constraint other than the key looks at. */
  unique: number[];
}

/** Rows in one statement at most: a long run of changes is sent while the rest is decoded. */
const GROUP_ROWS = 2_000;

/**
 * Rows sent and not yet written at most: past it, adding waits for the standby, so a
 * transaction of any size is held here only in part.
 */
const IN_FLIGHT_ROWS = 8_000;

/**
 * Writes one batch's changes into the target transaction `tx`; `tables` maps each source
 * table ("schema.name") to the table written (its `into` when it is a stage table).
 * Statements are sent as soon as they are complete, without waiting for the previous one
 * (up to `IN_FLIGHT_ROWS`): the connection runs them in order while the next changes are
 * decoded. Call `finish` before the batch commits: it waits for every statement and throws
 * the first failure.
 *
 * @example
 * const writer = new BatchWriter(tx, tables);
 * for (const change of changes) await writer.add(change, relations);
 * await writer.finish();
 */
export class BatchWriter {
  private groups = new Map<string, Group>();
  private inFlight: { done: Promise<void>; rows: number }[] = [];
  private inFlightRows = 0;
  private failure: { error: unknown } | null = null;

  constructor(
    private readonly tx: TransactionSql,
    private readonly tables: Map<string, WrittenTable>,
  ) {}

  // A failed statement aborts the transaction, so the ones after it fail too: the first
  // failure is the one to report, and nothing more is sent once it is known.
  private async send(statement: string, params: (string | null)[] | (string | null)[][] = [], rows = 1): Promise<void> {
    if (this.failure) throw this.failure.error;
    const done = this.tx.unsafe(statement, params as never).then(
      () => undefined,
      (error: unknown) => {
        this.failure ??= { error };
      },
    );
    this.inFlight.push({ done, rows });
    this.inFlightRows += rows;
    while (this.inFlightRows > IN_FLIGHT_ROWS) await this.settleOldest();
  }

  private async settleOldest(): Promise<void> {
    const first = this.inFlight.shift()!;
    await first.done;
    this.inFlightRows -= first.rows;
  }

  /** Adds one change; answers the rows it counts for (a truncate none). */
  async add(change: Change, relations: Map<number, Relation>): Promise<number> {
    if (this.failure) throw this.failure.error;
    if (change.type === "truncate") {
      await this.flush();
      const names = change.relids.map((id) => relation(this.table(relations.get(id))));
      await this.send(`truncate ${names.join(", ")}${change.restartIdentity ? " restart identity" : ""}`);
      return 0;
    }
    const shape = this.shape(relations.get(change.relid));
    const { table, cols, keyIdx, keyOf } = shape;
    if (table.primaryKey.length === 0 || keyIdx.includes(-1)) {
      // Inserts need no key and go in groups; an update or delete finds one row by all its values.
      if (change.type === "insert") {
        await this.push(table, "insert", shape.insertKey, cols, change.row, [], []);
        return 1;
      }
      await this.flushTable(table);
      await this.applyWithoutKey(table, cols, change);
      return 1;
    }
    if (change.type === "insert") {
      await this.push(table, "insert", shape.insertKey, cols, change.row, [], [keyOf(change.row)]);
    } else if (change.type === "update") {
      // Postgres sends the old key only when the key changed.
      const where = change.old ? keyIdx.map((i) => change.old![i]!) : keyIdx.map((i) => change.row[i]!);
      const keys = [keyOf(change.row), change.old ? keyOf(change.old) : ""];
      if (change.row.includes(UNCHANGED)) {
        const present = cols.filter((_, i) => change.row[i] !== UNCHANGED);
        const row = change.row.filter((v) => v !== UNCHANGED);
        const unique = present.flatMap((c, i) => (table.uniqueColumns.includes(c) ? [i] : []));
        await this.push(table, "update", `update|${present.join(",")}`, present, row, where, keys, !change.old, unique);
      } else {
        await this.push(table, "update", shape.updateKey, cols, change.row, where, keys, !change.old, shape.uniqueIdx);
      }
    } else {
      await this.push(
        table,
        "delete",
        "delete|",
        [],
        [],
        keyIdx.map((i) => change.old[i]!),
        [keyOf(change.old)],
      );
    }
    return 1;
  }

  // A relation's target table, column names, key positions and group keys, worked out once
  // per relation message (a new one comes when the table's shape changes).
  private shapes = new WeakMap<Relation, Shape>();

  private shape(rel: Relation | undefined): Shape {
    const known = rel && this.shapes.get(rel);
    if (known) return known;
    const table = this.table(rel);
    const cols = rel!.columns.map((c) => c.name);
    const keyIdx = table.primaryKey.map((k) => cols.indexOf(k));
    const [only] = keyIdx;
    const keyOf = keyIdx.length === 1 ? (row: Value[]) => String(row[only!]) : (row: Value[]) => JSON.stringify(keyIdx.map((i) => row[i]));
    const uniqueIdx = cols.flatMap((c, i) => (table.uniqueColumns.includes(c) ? [i] : []));
    const shape = { table, cols, keyIdx, keyOf, insertKey: `insert|${cols.join(",")}`, updateKey: `update|${cols.join(",")}`, uniqueIdx };
    this.shapes.set(rel!, shape);
    return shape;
  }

  private table(rel: Relation | undefined): WrittenTable {
    const t = rel && this.tables.get(`${rel.schema}.${rel.table}`);
    if (!t)
      throw new SpillwayError(
        "SCHEMA_MISMATCH",
        409,
        `a change came for ${rel ? `${rel.schema}.${rel.table}` : "an unknown table"}, which the standby does not replicate; a full backup is needed`,
      );
    return t;
  }

  private async push(
    table: WrittenTable,
    kind: Group["kind"],
    key: string,
    columns: string[],
    row: Value[],
    where: Value[],
    keys: string[],
    inPlace = false,
    unique: number[] = [],
  ): Promise<void> {
    let g = this.groups.get(relation(table));
    const at = g && g.key === key && inPlace ? g.inPlace.get(keys[0]!) : undefined;
    // Replacing moves the row's later update ahead of the other rows' updates in between:
    // with a unique value changed, it could take one that another row gives up only later
    // (rows swapping positions), which the active never did.
    if (at !== undefined && unique.every((i) => g!.rows[at]![i] === row[i])) {
      g!.rows[at] = row;
      return;
    }
    if (g && (g.key !== key || keys.some((k) => k && g!.seen.has(k)))) {
      await this.write(g);
      g = undefined;
    }
    if (!g) {
      g = { key, table, kind, columns, rows: [], where: [], seen: new Set(), inPlace: new Map(), unique };
      this.groups.set(relation(table), g);
    }
    if (inPlace) g.inPlace.set(keys[0]!, g.rows.length);
    g.rows.push(row);
    g.where.push(where);
    for (const k of keys) if (k) g.seen.add(k);
    if (g.rows.length >= GROUP_ROWS) await this.write(g);
  }

  private async flush(): Promise<void> {
    for (const g of [...this.groups.values()]) await this.write(g);
  }

  /** Writes what is left, puts back what `write` relaxed, and waits for every statement; the batch then commits. */
  async finish(): Promise<void> {
    await this.flush();
    for (const [table, columns] of this.relaxed) {
      for (const c of columns) await this.send(`alter table ${table} alter column ${quoteIdent(c)} set generated always`);
    }
    this.relaxed.clear();
    while (this.inFlight.length > 0) await this.settleOldest();
    if (this.failure) throw this.failure.error;
  }

  // An UPDATE may not set a GENERATED ALWAYS identity column (there is no OVERRIDING for
  // it), yet a changed key must be written: such columns are made BY DEFAULT for the rest
  // of the batch's transaction, and made ALWAYS again before it commits.
  private relaxed = new Map<string, string[]>();

  private async relaxIdentity(table: WrittenTable, columns: string[]): Promise<void> {
    const into = relation(table);
    if (this.relaxed.has(into)) return;
    const always = table.columns.filter((c) => c.identity === "a").map((c) => c.name);
    if (!always.some((c) => columns.includes(c))) return;
    for (const c of always) await this.send(`alter table ${into} alter column ${quoteIdent(c)} set generated by default`);
    this.relaxed.set(into, always);
  }

  private async flushTable(table: WrittenTable): Promise<void> {
    const g = this.groups.get(relation(table));
    if (g) await this.write(g);
  }

  private async write(g: Group): Promise<void> {
    const into = relation(g.table);
    this.groups.delete(into);
    if (g.rows.length === 0) return;
    const type = (name: string) => g.table.columns.find((c) => c.name === name)!.type;
    const column = (values: Value[][], i: number) => values.map((r) => text(r[i]!));
    const pk = g.table.primaryKey;
    const match = pk.map((k, i) => `t.${quoteIdent(k)} = u.k${i}::${type(k)}`).join(" and ");
    if (g.kind === "insert") {
      const params = g.columns.map((_, i) => column(g.rows, i));
      const select = g.columns.map((c, i) => `u.c${i}::${type(c)}`).join(", ");
      const unnest = g.columns.map((_, i) => `$${i + 1}::text[]`).join(", ");
      const aliases = g.columns.map((_, i) => `c${i}`).join(", ");
      await this.send(
        `insert into ${into} (${g.columns.map(quoteIdent).join(", ")}) overriding system value select ${select} from unnest(${unnest}) as u(${aliases})`,
        params,
        g.rows.length,
      );
    } else if (g.kind === "update") {
      await this.relaxIdentity(g.table, g.columns);
      const params = [...g.columns.map((_, i) => column(g.rows, i)), ...pk.map((_, i) => column(g.where, i))];
      const n = g.columns.length;
      const set = g.columns.map((c, i) => `${quoteIdent(c)} = u.c${i}::${type(c)}`).join(", ");
      const unnest = [...g.columns.map((_, i) => `$${i + 1}::text[]`), ...pk.map((_, i) => `$${n + i + 1}::text[]`)].join(", ");
      const aliases = [...g.columns.map((_, i) => `c${i}`), ...pk.map((_, i) => `k${i}`)].join(", ");
      const statement = `update ${into} as t set ${set} from unnest(${unnest}) with ordinality as u(${aliases}, n) where ${match}`;
      if (g.unique.length === 0) {
        await this.send(statement, params, g.rows.length);
        return;
      }
      // A row that keeps its unique values (the very same stored values) cannot meet
      // another on them, in any order: those go in one statement first.
      const kept = g.unique.map((i) => `t.${quoteIdent(g.columns[i]!)}`).join(", ");
      const fresh = g.unique.map((i) => `u.c${i}::${type(g.columns[i]!)}`).join(", ");
      const written = await this.query<{ n: string }>(
        `${statement} and pg_catalog.record_image_eq(row(${kept}), row(${fresh})) returning u.n`,
        params,
      );
      const done = new Set(written.map((r) => Number(r.n) - 1));
      const rest = [...g.rows.keys()].filter((i) => !done.has(i));
      if (rest.length === 0) return;
      // One statement gives the others their new values whatever order its plan picks; it
      // is refused only when a row takes a unique value before the row holding it gives it
      // up (the active's order let it), and then nothing of it is kept: they go one by one
      // in the active's order, each taking values only once the row before it gave them up.
      const restRows = rest.map((i) => g.rows[i]!);
      const restWhere = rest.map((i) => g.where[i]!);
      if (
        await this.unlessUnique(statement, [...g.columns.map((_, i) => column(restRows, i)), ...pk.map((_, i) => column(restWhere, i))])
      ) {
        return;
      }
      const one = `update ${into} as t set ${g.columns.map((c, i) => `${quoteIdent(c)} = $${i + 1}::text::${type(c)}`).join(", ")} where ${pk
        .map((k, i) => `t.${quoteIdent(k)} = $${n + i + 1}::text::${type(k)}`)
        .join(" and ")}`;
      for (const i of rest) await this.send(one, [...g.rows[i]!.map(text), ...g.where[i]!.map(text)]);
    } else {
      const params = pk.map((_, i) => column(g.where, i));
      const unnest = pk.map((_, i) => `$${i + 1}::text[]`).join(", ");
      await this.send(
        `delete from ${into} as t using unnest(${unnest}) as u(${pk.map((_, i) => `k${i}`).join(", ")}) where ${match}`,
        params,
        g.rows.length,
      );
    }
  }

  // Runs a statement after the others, in a savepoint, and waits for it; answers false,
  // with nothing of it kept, when Postgres refuses it for a unique or exclusion constraint.
  // (The driver's savepoint, as it fails the whole transaction on any error not in one.)
  private async unlessUnique(statement: string, params: (string | null)[][]): Promise<boolean> {
    if (this.failure) throw this.failure.error;
    try {
      await this.tx.savepoint((sp) => sp.unsafe(statement, params as never));
      return true;
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (this.failure || (code !== PG.uniqueViolation && code !== PG.exclusionViolation)) {
        this.failure ??= { error };
        throw this.failure.error;
      }
      return false;
    }
  }

  // A statement whose answer the next ones depend on: sent after the others, waited for.
  private async query<T>(statement: string, params: (string | null)[][]): Promise<T[]> {
    if (this.failure) throw this.failure.error;
    try {
      return (await this.tx.unsafe(statement, params as never)) as unknown as T[];
    } catch (error) {
      this.failure ??= { error };
      throw this.failure.error;
    }
  }

  // A table without a primary key is decoded with its whole old row (REPLICA IDENTITY
  // FULL): one row holding exactly those values is changed (of identical rows, one), as
  // Postgres's own apply does. Exactly: each column's text form (its type's output
  // function, through `format`, which a cast to text is not for every type: bool,
  // character(n), inet) equals the one the active sent, which tells 1.0 from 1.00 and 'A'
  // from 'a', and needs no `=` (json, xml, point have none). Values go in as text, cast on
  // the server: a parameter typed timestamptz or jsonb would be re-encoded by the driver
  // (to milliseconds, to a JSON string) and match nothing.
  private async applyWithoutKey(table: WrittenTable, cols: string[], change: Exclude<Change, { type: "truncate" }>): Promise<void> {
    const into = relation(table);
    const type = (name: string) => table.columns.find((c) => c.name === name)!.type;
    if (change.type === "insert") {
      await this.send(
        `insert into ${into} (${cols.map(quoteIdent).join(", ")}) overriding system value values (${cols.map((c, i) => `$${i + 1}::text::${type(c)}`).join(", ")})`,
        change.row.map(text),
      );
      return;
    }
    const old = change.type === "update" ? (change.old ?? change.row) : change.old;
    // A value not sent (UNCHANGED) is not matched on.
    const known = cols.flatMap((c, i) => (old[i] === UNCHANGED ? [] : [{ c, v: old[i]! }]));
    const match = known
      .map((x, j) => `pg_catalog.format('%L', t.${quoteIdent(x.c)}) = pg_catalog.format('%L', $${j + 1}::text)`)
      .join(" and ");
    const locate = `(select t.ctid from ${into} as t where ${match} limit 1)`;
    if (change.type === "delete") {
      await this.send(
        `delete from ${into} where ctid = ${locate}`,
        known.map((x) => text(x.v)),
      );
      return;
    }
    const present = cols.map((c, i) => ({ c, v: change.row[i] as Value })).filter((x) => x.v !== UNCHANGED);
    await this.relaxIdentity(
      table,
      present.map((x) => x.c),
    );
    const set = present.map((x, j) => `${quoteIdent(x.c)} = $${known.length + j + 1}::text::${type(x.c)}`).join(", ");
    await this.send(`update ${into} set ${set} where ctid = ${locate}`, [...known.map((x) => text(x.v)), ...present.map((x) => text(x.v))]);
  }
}
