import type { ProjectName } from "../names.ts";
import type { Db, Project } from "../project.ts";
import { readSequences, type Sequence, type Table } from "./catalog.ts";
import { canonical } from "./checksum.ts";
import { makeIdentityFull, restoreIdentities } from "./identity.ts";

/** The publication on the active that the slot decodes. */
export const PUBLICATION = "spillway";

/**
 * SQL for the snapshot a copy records, read in the transaction the copy reads in:
 * `pg_current_snapshot()` text, then the WAL insert position read after the snapshot was
 * taken ("xmin:xmax:xip:lsn"). Every transaction the snapshot sees committed before that
 * position; `visibleIn` compares only those with the snapshot.
 */
export const SNAPSHOT_SQL = "pg_catalog.pg_current_snapshot()::text || ':' || pg_catalog.pg_current_wal_insert_lsn()::text";

/**
 * Runs `body` in one repeatable-read, read-only transaction on the active, with row
 * security off (a copy reads every row): everything it reads is one point in time.
 *
 * @example
 * await inSnapshot(source, async (src) => target.sql.begin(async (dst) => copyTable(src, dst, table, onBytes, table.qualified)));
 */
export async function inSnapshot<T>(source: Project, body: (src: Db) => Promise<T>): Promise<T> {
  // postgres.js types a transaction's result as its promises unwrapped; `body` answers one value.
  return (await source.sql.begin("isolation level repeatable read read only", async (src) => {
    await canonical(src, "set local row_security = off");
    return await body(src);
  })) as T;
}

/**
 * The name prefix of the slots on `source` that feed backups into `target`. Each full copy
 * makes a slot of its own (prefix + random part): a failed copy then never disturbs the
 * slot the standby's current copy builds on.
 *
 * @example
 * slotPrefix("primary", "secondary") // "spillway_primary_to_secondary_"
 */
export function slotPrefix(source: ProjectName, target: ProjectName): string {
  return `spillway_${source}_to_${target}_`;
}

/**
 * A new slot name for a full copy.
 *
 * @example
 * newSlotName("primary", "secondary") // "spillway_primary_to_secondary_3f9a1c2e"
 */
export function newSlotName(source: ProjectName, target: ProjectName): string {
  return slotPrefix(source, target) + crypto.randomUUID().replace(/-/g, "").slice(0, 8);
}

/**
 * Prepares change capture on the active before a full copy: the publication lists every
 * replicated table and Spillway's table of Auth's changes (tables without a primary key get
 * REPLICA IDENTITY FULL, without which Postgres would refuse their updates once published;
 * recorded, and put back once a table no longer needs it), and the slot is made anew, so it
 * starts before the copy's snapshot. A table left REPLICA IDENTITY USING INDEX whose index
 * was dropped has no identity any more: it gets DEFAULT when it has a primary key, FULL
 * (recorded) when not. With `timeoutMs`, each statement waits at most that long for locks
 * and runs at most that long (a switch makes it behind the fence).
 *
 * @example
 * await prepareCapture(source, catalog.tables, newSlotName("primary", "secondary"));
 */
export async function prepareCapture(source: Project, tables: Table[], slot: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  const sql = source.sql;
  const { timeoutMs } = opts;
  const write = (statement: string) =>
    sql.begin("read write", async (tx) => {
      await boundWaits(tx, timeoutMs);
      await tx.unsafe(statement);
    });
  const identities = await sql<{ oid: number; chosen: boolean; lost: boolean }[]>`
    select c.oid::int8 as oid, c.relreplident <> 'd' as chosen,
      c.relreplident = 'i' and not exists (select 1 from pg_catalog.pg_index i where i.indrelid = c.oid and i.indisreplident) as lost
    from pg_catalog.pg_class c where c.oid = any(${tables.map((t) => t.oid)}::oid[])`;
  const byOid = new Map(identities.map((r) => [Number(r.oid), r]));
  for (const t of tables) {
    const identity = byOid.get(t.oid);
    if (t.primaryKey.length > 0) {
      // Postgres keeps 'i' once the index is dropped, and refuses the table's updates once published.
      if (identity?.lost) await write(`alter table ${t.qualified} replica identity default`);
      continue;
    }
    // Only the default identity (none, without a key) or a lost one is changed; one the app chose is kept.
    if (!identity?.chosen || identity.lost) await makeIdentityFull(source, t, timeoutMs);
  }
  // Auth's captured changes travel in the same stream (see backup/auth.ts).
  const list = [...tables.map((t) => t.qualified), "spillway.auth_changes"].join(", ");
  const [exists] = await sql<
    { ok: boolean }[]
  >`select exists (select 1 from pg_catalog.pg_publication where pubname = ${PUBLICATION}) as ok`;
  if (!exists?.ok) await write(`create publication ${PUBLICATION}${list ? ` for table ${list}` : ""}`);
  else if (list) await write(`alter publication ${PUBLICATION} set table ${list}`);
  await restoreIdentities(
    source,
    tables.filter((t) => t.primaryKey.length === 0),
    timeoutMs,
  );
  // The slot waits for the transactions running on the project: bounded as the rest.
  await sql.begin(async (tx) => {
    await boundWaits(tx, timeoutMs);
    await tx`select pg_catalog.pg_create_logical_replication_slot(${slot}, 'pgoutput')`;
  });
}

/**
 * Bounds, for the rest of the transaction `tx`, how long a statement waits for a lock and
 * how long it runs (nothing when `timeoutMs` is unset).
 *
 * @example
 * await sql.begin(async (tx) => { await boundWaits(tx, 10_000); await tx`alter table ...`; });
 */
export async function boundWaits(tx: Db, timeoutMs: number | undefined): Promise<void> {
  if (timeoutMs === undefined) return;
  await tx`select pg_catalog.set_config('lock_timeout', ${String(timeoutMs)}, true), pg_catalog.set_config('statement_timeout', ${String(timeoutMs)}, true)`;
}

/**
 * Drops a slot if it exists (its retained WAL is freed).
 *
 * @example
 * await dropSlot(source, "spillway_primary_to_secondary_3f9a1c2e");
 */
export async function dropSlot(source: Project, slot: string): Promise<boolean> {
  const rows =
    await source.sql`select pg_catalog.pg_drop_replication_slot(slot_name) from pg_catalog.pg_replication_slots where slot_name = ${slot}`;
  return rows.length > 0;
}

/**
 * Drops this pair's slots other than `keep` (left by failed or replaced copies), freeing
 * the WAL they hold.
 *
 * @example
 * await dropOtherSlots(source, "primary", "secondary", position.slot);
 */
export async function dropOtherSlots(source: Project, from: ProjectName, to: ProjectName, keep: string | null): Promise<string[]> {
  const rows = await source.sql<{ slot_name: string }[]>`
    select slot_name from pg_catalog.pg_replication_slots
    where starts_with(slot_name, ${slotPrefix(from, to)}) and slot_name is distinct from ${keep} and not active`;
  for (const r of rows) await dropSlot(source, r.slot_name);
  return rows.map((r) => r.slot_name);
}

/**
 * Bytes of WAL a slot keeps on the active, or null when it does not exist or the server
 * invalidated it (`wal_status = 'lost'`): either way it can no longer be read.
 *
 * @example
 * const retained = await slotRetainedBytes(source, slot);
 */
export async function slotRetainedBytes(source: Project, slot: string): Promise<number | null> {
  const [row] = await source.sql<{ bytes: string | null }[]>`
    select pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::int8::text as bytes
    from pg_catalog.pg_replication_slots
    where slot_name = ${slot} and wal_status is distinct from 'lost' and restart_lsn is not null`;
  return row ? Number(row.bytes ?? 0) : null;
}

/**
 * Where a slot stands: the WAL it has consumed (its confirmed position, in bytes from the
 * start of WAL) and the WAL on the active it has not; null when it does not exist.
 *
 * @example
 * const { consumedBytes, pendingBytes } = (await slotProgress(source, slot))!;
 */
export async function slotProgress(source: Project, slot: string): Promise<{ consumedBytes: number; pendingBytes: number } | null> {
  const [row] = await source.sql<{ consumed: string; pending: string }[]>`
    select pg_catalog.pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::int8::text as consumed,
      greatest(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8::text as pending
    from pg_catalog.pg_replication_slots where slot_name = ${slot} and confirmed_flush_lsn is not null`;
  return row ? { consumedBytes: Number(row.consumed), pendingBytes: Number(row.pending) } : null;
}

/**
 * Flushes the active's WAL up to its latest commit. Decoding reads only WAL that is
 * flushed, and a commit made with `synchronous_commit = off` is acknowledged before it is;
 * one synchronous commit of ours flushes everything before it, so every write acknowledged
 * so far (before a fence, say) is decoded. The commit rewrites the lease row with what it
 * holds: a write that changes nothing, on a row that is Spillway's own.
 *
 * @example
 * await flushWal(source);
 */
export async function flushWal(source: Project): Promise<void> {
  await source.sql.begin(async (tx) => {
    await tx`set local synchronous_commit = on`;
    await tx`update spillway.lease set holder = holder where id`;
  });
}

/** Most changes one peek of the slot decodes (it always ends at a transaction's end). */
export const PEEK_CHANGES = 20_000;

/** Changes read from the active at a time: a transaction of any size passes through in pieces. */
const PEEK_CHUNK = 1_000;

/**
 * Decodes up to `PEEK_CHANGES` changes of the slot from its start, without consuming them
 * (only `advanceSlot`, once the standby committed them, does), and hands them to `each`
 * in pieces of `PEEK_CHUNK` as they arrive (a cursor: the active keeps the decoded
 * changes, spilled to disk when large, and none is held here longer than its piece), with
 * the active's next full transaction id (for `fullXid`). Answers how many changes came
 * and, with `schemas`, the sequences read after them: every value their rows took from a
 * sequence is at or below.
 *
 * @example
 * const { changes, sequences } = await peekChanges(source, slot, ["public"], async (chunk, nextXid) => apply(chunk, nextXid));
 */
export async function peekChanges(
  source: Project,
  slot: string,
  schemas: string[] | undefined,
  each: (chunk: { data: Uint8Array }[], nextXid: bigint) => Promise<void>,
): Promise<{ changes: number; sequences: Sequence[] }> {
  return await source.sql.begin(async (tx) => {
    await canonical(tx, "set local extra_float_digits = 3");
    const [next] = await tx<{ xid: string }[]>`select pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text as xid`;
    const nextXid = BigInt(next!.xid);
    let changes = 0;
    const cursor = tx<{ data: Uint8Array }[]>`
      select data from pg_catalog.pg_logical_slot_peek_binary_changes(${slot}, null, ${PEEK_CHANGES},
        'proto_version', '1', 'publication_names', ${PUBLICATION})`.cursor(PEEK_CHUNK);
    for await (const chunk of cursor) {
      changes += chunk.length;
      await each(chunk, nextXid);
    }
    const sequences: Sequence[] = schemas ? await readSequences(tx, schemas) : [];
    return { changes, sequences };
  });
}

/**
 * Lets the active forget the slot's changes up to `lsn`: call only once the standby has
 * committed them.
 *
 * @example
 * await advanceSlot(source, slot, "0/1A2B3C4");
 */
export async function advanceSlot(source: Project, slot: string, lsn: string): Promise<void> {
  await source.sql`select pg_catalog.pg_replication_slot_advance(${slot}, ${lsn}::pg_lsn)`;
}

/**
 * Marks where the active's WAL stands (a logical message that no change stream carries),
 * answering the mark's position: once a run has applied every change its peeks found and
 * flushed past the mark, nothing before it is left to carry (`skipToMark`).
 *
 * @example
 * const mark = await markWal(source); // "0/3000148"
 */
export async function markWal(source: Project): Promise<string> {
  // Read-write of its own: a project past its quota may be read-only by default.
  const [row] = await source.sql.begin(
    "read write",
    (tx) => tx<{ lsn: string }[]>`select pg_catalog.pg_logical_emit_message(false, 'spillway', '')::text as lsn`,
  );
  return row!.lsn;
}

/**
 * Advances the slot to `mark` when it stands before it: the WAL between holds nothing the
 * standby lacks (the app's writes in schemas that are not replicated, vacuum, other
 * databases), and a slot that keeps it grows on a quiet app until the retention guard drops
 * it. Call only once every change committed before the mark is applied on the standby.
 * Answers the bytes of WAL skipped (not applied: a catch-up's speed leaves them out).
 *
 * @example
 * const skippedBytes = await skipToMark(source, slot, mark);
 */
export async function skipToMark(source: Project, slot: string, mark: string): Promise<number> {
  const [row] = await source.sql<{ skipped: string }[]>`
    select pg_catalog.pg_wal_lsn_diff(${mark}::pg_lsn, confirmed_flush_lsn)::int8::text as skipped,
      pg_catalog.pg_replication_slot_advance(slot_name, ${mark}::pg_lsn)
    from pg_catalog.pg_replication_slots
    where slot_name = ${slot} and confirmed_flush_lsn < ${mark}::pg_lsn`;
  return Number(row?.skipped ?? 0);
}

/**
 * The bytes `tables` take on the active (what a full copy of them moves, roughly).
 *
 * @example
 * const bytes = await tablesSize(source, tables);
 */
export async function tablesSize(source: Project, tables: Table[]): Promise<number> {
  const [size] = await source.sql<{ bytes: string }[]>`
    select coalesce(sum(pg_catalog.pg_table_size(t)), 0)::int8::text as bytes from unnest(${tables.map((t) => t.oid)}::oid[]) as t`;
  return Number(size!.bytes);
}
