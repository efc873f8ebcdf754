import type { TransactionSql } from "postgres";
import type { Project } from "../project.ts";
import { BatchWriter, type Change, type Relation, type WrittenTable } from "./batch.ts";
import { canonical, LOAD_MARK } from "./checksum.ts";
import { setSequences } from "./load.ts";
import { decode, fullXid, lsn, lsnText, type Txn } from "./pgoutput.ts";
import type { ChangeStream } from "./position.ts";
import { advanceSlot, flushWal, PEEK_CHANGES, peekChanges } from "./source.ts";

/** What applying changes moved. */
export interface ApplyResult {
  transactions: number;
  rows: number;
  bytes: number;
  /** Commit time order is the active's; this is the last applied commit position. */
  appliedLsn: string | null;
  /** True when changes were left for the next call (the budget ran out). */
  more: boolean;
}

/**
 * Applies the active's changes since the stream's position, in the active's commit order,
 * in target transactions that also store the new position, so a crash at any moment neither
 * applies a transaction twice nor skips one, and the target always stands at a commit
 * boundary of the active. What the copy already saw is skipped. `tables` maps each source
 * table ("schema.name") to the table its changes are written to (see `WrittenTable`). With
 * `sequences` (schemas), each of those target transactions also sets the target's sequences
 * to where the active's stood once its changes were read, so the target's never fall
 * behind the rows it holds. `settle` runs in each of them too, after its changes: what else
 * the rows it wrote need before the next transaction (sequences of tables written through
 * the change tables, which `sequences` does not cover).
 *
 * @example
 * const result = await applyChanges({ source, target, stream: replicaStream(position, holder), tables, deadline: Date.now() + 60_000 });
 */
export async function applyChanges(input: {
  source: Project;
  target: Project;
  stream: ChangeStream;
  tables: Map<string, WrittenTable>;
  deadline: number;
  sequences?: string[];
  settle?: (tx: TransactionSql) => Promise<void>;
  onProgress?: (rows: number, bytes: number) => void;
}): Promise<ApplyResult> {
  const { source, target, stream } = input;
  const result: ApplyResult = { transactions: 0, rows: 0, bytes: 0, appliedLsn: stream.appliedLsn, more: false };
  let applied = stream.appliedLsn ? lsn(stream.appliedLsn) : -1n;

  await flushWal(source);
  for (;;) {
    const batch = { changes: 0, rows: 0, bytes: 0, transactions: 0, endLsn: 0n };
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
      const relations = new Map<number, Relation>();
      // The transaction being decoded, when it is to be applied (not applied before).
      let txn: (Txn & { wrote: boolean }) | null = null;
      // Each change is written into this transaction as it is decoded, in the active's
      // order: a transaction of any size passes through without being held whole.
      const peeked = await peekChanges(source, stream.slot, input.sequences, async (chunk, nextXid) => {
        for (const { data } of chunk) {
          batch.bytes += data.length;
          const m = decode(data);
          if (m.type === "relation") relations.set(m.relid, m);
          else if (m.type === "begin")
            txn = m.finalLsn > applied ? { xid: fullXid(m.xid, nextXid), commitLsn: m.finalLsn, wrote: false } : null;
          else if (m.type === "commit") {
            batch.endLsn = m.endLsn;
            if (txn?.wrote) batch.transactions += 1;
            if (m.commitLsn > applied) applied = m.commitLsn;
            txn = null;
          } else if (txn && m.type !== "other") {
            const change = unseen(m, txn, relations, stream);
            if (!change) continue;
            batch.rows += await writer.add(change, relations);
            txn.wrote = true;
          }
        }
      });
      batch.changes = peeked.changes;
      await writer.finish();
      // Sequences move without changes to decode too (a standalone one, inserts rolled back).
      await setSequences(tx, peeked.sequences);
      if (batch.changes === 0) return;
      await input.settle?.(tx);
      if (applied >= 0n) {
        result.appliedLsn = lsnText(applied);
        await stream.save(tx, result.appliedLsn);
      }
    });
    if (batch.changes === 0) break;
    // Only once the target has committed may the active forget these changes.
    await advanceSlot(source, stream.slot, lsnText(batch.endLsn));
    result.transactions += batch.transactions;
    result.rows += batch.rows;
    result.bytes += batch.bytes;
    input.onProgress?.(result.rows, result.bytes);
    // Fewer than asked for: the slot had no more (each peek decodes from the slot's start).
    if (batch.changes < PEEK_CHANGES) break;
    if (Date.now() > input.deadline) {
      result.more = true;
      break;
    }
  }
  return result;
}

// The part of a change the copy does not hold yet: nothing, all of it, or (a truncate of
// several tables) the tables whose copy was taken before the transaction.
function unseen(change: Change, txn: Txn, relations: Map<number, Relation>, stream: ChangeStream): Change | null {
  const name = (id: number) => {
    const r = relations.get(id);
    return r ? `${r.schema}.${r.table}` : "";
  };
  if (change.type === "truncate") {
    const relids = change.relids.filter((id) => !stream.seen(txn, name(id)));
    return relids.length === 0 ? null : { ...change, relids };
  }
  return stream.seen(txn, name(change.relid)) ? null : change;
}
