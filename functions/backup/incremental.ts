import { setImmediate } from "node:timers";
import { SpillwayError } from "../errors.ts";
import { holdLease } from "../lease.ts";
import type { ProjectName } from "../names.ts";
import type { Db, Project } from "../project.ts";
import { BatchWriter, type Change } from "./batch.ts";
import { readSequences, type Sequence, type Table } from "./catalog.ts";
import { canonical, LOAD_MARK } from "./checksum.ts";
import { captureEntry } from "./drift.ts";
import { setSequences } from "./full.ts";
import { makeIdentityFull, restoreIdentities } from "./identity.ts";
import { decode, lsn, lsnText, type Message, visibleIn } from "./pgoutput.ts";

/** The publication on the active that the slot decodes. */
export const PUBLICATION = "spillway";

/** Where the standby's copy stands (`spillway.replica`). */
export interface ReplicaPosition {
  source: ProjectName;
  slot: string;
  baseSnapshot: string | null;
  appliedLsn: string | null;
  tables: string[];
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

/** The tables as recorded with a copy (see `captureEntry`), sorted: what incremental backups check them against. */
export function tableSet(tables: Table[]): string[] {
  return tables.map(captureEntry).sort();
}

/**
 * Prepares change capture on the active before a full copy: the publication lists every
 * replicated table and Spillway's table of Auth's changes (tables without a primary key get
 * REPLICA IDENTITY FULL, without which Postgres would refuse their updates once published;
 * recorded, and put back once a table no longer needs it), and the slot is made anew, so it
 * starts before the copy's snapshot.
 *
 * @example
 * await prepareCapture(source, catalog.tables, slotName("primary", "secondary"));
 */
export async function prepareCapture(source: Project, tables: Table[], slot: string): Promise<void> {
  const sql = source.sql;
  const write = (statement: string) => sql.begin("read write", (tx) => tx.unsafe(statement));
  for (const t of tables) {
    if (t.primaryKey.length > 0) continue;
    // Only the default identity (none, without a key) is changed; one the app chose is kept.
    const [row] = await sql<{ chosen: boolean }[]>`select relreplident <> 'd' as chosen from pg_catalog.pg_class where oid = ${t.oid}`;
    if (!row?.chosen) await makeIdentityFull(source, t);
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
  );
  await sql`select pg_catalog.pg_create_logical_replication_slot(${slot}, 'pgoutput')`;
}

/**
 * Drops a slot if it exists (its retained WAL is freed).
 *
 * @example
 * await dropSlot(source, "spillway_primary_to_secondary");
 */
export async function dropSlot(source: Project, slot: string): Promise<boolean> {
  const rows =
    await source.sql`select pg_catalog.pg_drop_replication_slot(slot_name) from pg_catalog.pg_replication_slots where slot_name = ${slot}`;
  return rows.length > 0;
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
 * The standby's position, or null after no full copy.
 *
 * @example
 * const position = await readPosition(target.sql);
 */
export async function readPosition(sql: Db): Promise<ReplicaPosition | null> {
  const [row] = await sql<
    { source: ProjectName; slot: string; base_snapshot: string | null; applied_lsn: string | null; tables: string[] }[]
  >`
    select source, slot, base_snapshot, applied_lsn::text, tables from spillway.replica where id`;
  return row
    ? { source: row.source, slot: row.slot, baseSnapshot: row.base_snapshot, appliedLsn: row.applied_lsn, tables: row.tables }
    : null;
}

/**
 * What a position write must find to succeed: the run's lease still held, and the position
 * as the run read it (null: none), so that only the run that read a position moves it.
 */
export interface PositionGuard {
  holder: string;
  expected: Pick<ReplicaPosition, "slot" | "appliedLsn"> | null;
}

/**
 * Checks a guard inside the transaction that is about to write the position, and keeps
 * both rows locked until it commits: the lease row shared (no other holder can take it
 * meanwhile), the position row for update (a second writer waits, then finds it moved).
 * Throws 409 `LEASE_LOST` or 409 `POSITION_MOVED`, which roll the transaction back.
 *
 * @example
 * await claimPosition(tx, { holder: lease.holder, expected: position });
 */
export async function claimPosition(tx: Db, guard: PositionGuard): Promise<void> {
  await holdLease(tx, guard.holder);
  const [row] = await tx<
    { slot: string; applied_lsn: string | null }[]
  >`select slot, applied_lsn::text from spillway.replica where id for update`;
  const same =
    row && guard.expected ? row.slot === guard.expected.slot && row.applied_lsn === guard.expected.appliedLsn : !row && !guard.expected;
  if (!same) throw positionMoved();
}

/**
 * Throws 409 `POSITION_MOVED`: another run moved a position since this one read it.
 *
 * @example
 * throw positionMoved();
 */
export function positionMoved(): SpillwayError {
  return new SpillwayError(
    "POSITION_MOVED",
    409,
    "the standby's position moved since this run read it (another run applied changes or published a copy); nothing of this run was kept",
  );
}

/**
 * Records a new base for incremental backups, inside the transaction that publishes the
 * copy; with a guard, only if `claimPosition` allows it.
 *
 * @example
 * await writePosition(tx, { source: "primary", slot, baseSnapshot, appliedLsn: null, tables }, { holder, expected });
 */
export async function writePosition(tx: Db, p: ReplicaPosition, guard?: PositionGuard): Promise<void> {
  if (guard) await claimPosition(tx, guard);
  await tx`
    insert into spillway.replica (id, source, slot, base_snapshot, applied_lsn, tables, updated_at)
    values (true, ${p.source}, ${p.slot}, ${p.baseSnapshot}, ${p.appliedLsn}::pg_lsn, ${p.tables}, now())
    on conflict (id) do update set source = excluded.source, slot = excluded.slot, base_snapshot = excluded.base_snapshot,
      applied_lsn = excluded.applied_lsn, tables = excluded.tables, updated_at = now()`;
}

/** What an incremental run moved. */
export interface ApplyResult {
  transactions: number;
  rows: number;
  bytes: number;
  /** Commit time order is the active's; this is the last applied commit position. */
  appliedLsn: string | null;
  /** True when changes were left for the next call (the budget ran out). */
  more: boolean;
}

const BATCH_CHANGES = 20_000;
/** Messages decoded between two turns of the event loop. */
const YIELD_EVERY = 500;

/** Where a copy stands in the active's change stream, and how it moves on. */
export interface ChangeStream {
  slot: string;
  /** The commit position of the last transaction applied; null when none was yet. */
  appliedLsn: string | null;
  /** True when the copy already holds what transaction `xid` did to `table` ("schema.name"). */
  seen(xid: number, table: string): boolean;
  /** Stores the new position inside the transaction that applied the changes up to it. */
  save(tx: Db, appliedLsn: string): Promise<void>;
}

/**
 * The change stream of the standby's published copy (`spillway.replica`). Each save moves
 * the position only from where this stream last left it, under the lease of `holder`.
 *
 * @example
 * const stream = replicaStream(position, lease.holder);
 */
export function replicaStream(position: ReplicaPosition, holder: string): ChangeStream {
  const visible = position.baseSnapshot === null ? null : visibleIn(position.baseSnapshot);
  let expected = position.appliedLsn;
  return {
    slot: position.slot,
    appliedLsn: position.appliedLsn,
    seen: (xid) => visible?.(xid) ?? false,
    async save(tx, appliedLsn) {
      await claimPosition(tx, { holder, expected: { slot: position.slot, appliedLsn: expected } });
      await tx`update spillway.replica set applied_lsn = ${appliedLsn}::pg_lsn, updated_at = now() where id`;
      // A failed save throws and ends the stream's use, so the next save follows this one.
      expected = appliedLsn;
    },
  };
}

/**
 * Applies the active's changes since the stream's position, in the active's commit order,
 * in target transactions that also store the new position, so a crash at any moment neither
 * applies a transaction twice nor skips one, and the target always stands at a commit
 * boundary of the active. What the copy already saw is skipped. `tables` maps each source
 * table ("schema.name") to the table its changes are written to. With `sequences` (schemas),
 * each of those target transactions also sets the target's sequences to where the active's
 * stood once its changes were read, so the target's never fall behind the rows it holds.
 *
 * @example
 * const result = await applyChanges({ source, target, stream: replicaStream(position), tables, deadline: Date.now() + 60_000 });
 */
export async function applyChanges(input: {
  source: Project;
  target: Project;
  stream: ChangeStream;
  tables: Map<string, Table>;
  deadline: number;
  sequences?: string[];
  onProgress?: (rows: number, bytes: number) => void;
}): Promise<ApplyResult> {
  const { source, target, stream } = input;
  const result: ApplyResult = { transactions: 0, rows: 0, bytes: 0, appliedLsn: stream.appliedLsn, more: false };
  let applied = stream.appliedLsn ? lsn(stream.appliedLsn) : -1n;

  // Decoding reads only WAL that is flushed, and a commit made with synchronous_commit off
  // is acknowledged before it is. One synchronous commit of our own flushes all of them, so
  // that every write acknowledged so far (before a fence, say) is decoded in this run.
  await source.sql.begin(async (tx) => {
    await tx`set local synchronous_commit = on`;
    await tx`update spillway.lease set holder = holder where id`;
  });

  for (;;) {
    const { changes, sequences } = await source.sql.begin(async (tx) => {
      await canonical(tx, "set local extra_float_digits = 3");
      const changes = await tx<{ data: Uint8Array }[]>`
        select data from pg_catalog.pg_logical_slot_peek_binary_changes(${stream.slot}, null, ${BATCH_CHANGES},
          'proto_version', '1', 'publication_names', ${PUBLICATION})`;
      // Read after the changes: every value their rows took from a sequence is at or below these.
      const sequences: Sequence[] = input.sequences ? await readSequences(tx, input.sequences) : [];
      return { changes, sequences };
    });
    if (changes.length === 0) {
      // Sequences move without changes to decode (a standalone one, inserts rolled back).
      if (sequences.length > 0) await target.sql.begin((tx) => setSequences(tx, sequences));
      break;
    }
    const relations = new Map<number, Extract<Message, { type: "relation" }>>();
    const names = new Map<number, string>();
    let endLsn = 0n;
    let batchRows = 0;
    let batchBytes = 0;
    await target.sql.begin(async (tx) => {
      // A batch touches few rows of large tables: find each by its key, never by scanning.
      await canonical(
        tx,
        "set local session_replication_role = replica",
        LOAD_MARK,
        "set local enable_hashjoin = off",
        "set local enable_mergejoin = off",
        "set local enable_seqscan = off",
      );
      const writer = new BatchWriter(tx, input.tables);
      let current: { xid: number; ops: Message[] } | null = null;
      for (const [i, { data }] of changes.entries()) {
        // The writer's statements go out on the event loop: letting it turn now and then
        // has the standby apply one statement while the next is decoded.
        if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise((resolve) => setImmediate(resolve));
        batchBytes += data.length;
        const m = decode(data);
        if (m.type === "relation") {
          relations.set(m.relid, m);
          names.set(m.relid, `${m.schema}.${m.table}`);
        } else if (m.type === "begin") current = { xid: m.xid, ops: [] };
        else if (m.type === "commit") {
          endLsn = m.endLsn;
          if (m.commitLsn > applied && current) {
            let wrote = false;
            for (const op of current.ops) {
              const change = unseen(op as Change, current.xid, names, stream);
              if (!change) continue;
              batchRows += writer.add(change, relations);
              wrote = true;
            }
            if (wrote) result.transactions += 1;
          }
          applied = m.commitLsn > applied ? m.commitLsn : applied;
          current = null;
        } else if (current && m.type !== "other") current.ops.push(m);
      }
      await writer.finish();
      await setSequences(tx, sequences);
      if (applied >= 0n) {
        result.appliedLsn = lsnText(applied);
        await stream.save(tx, result.appliedLsn);
      }
    });
    // Only once the target has committed may the active forget these changes.
    await source.sql`select pg_catalog.pg_replication_slot_advance(${stream.slot}, ${lsnText(endLsn)}::pg_lsn)`;
    result.rows += batchRows;
    result.bytes += batchBytes;
    input.onProgress?.(result.rows, result.bytes);
    // Fewer than asked for: the slot had no more (each peek decodes from the slot's start).
    if (changes.length < BATCH_CHANGES) break;
    if (Date.now() > input.deadline) {
      result.more = true;
      break;
    }
  }
  return result;
}

// The part of a change the copy does not hold yet: nothing, all of it, or (a truncate of
// several tables) the tables whose copy was taken before the transaction. `names` gives
// each relation's "schema.name".
function unseen(change: Change, xid: number, names: Map<number, string>, stream: ChangeStream): Change | null {
  if (change.type === "truncate") {
    const relids = change.relids.filter((id) => !stream.seen(xid, names.get(id) ?? ""));
    return relids.length === 0 ? null : { ...change, relids };
  }
  return stream.seen(xid, names.get(change.relid) ?? "") ? null : change;
}
