import { setImmediate } from "node:timers";
import type { TransactionSql } from "postgres";
import type { Project } from "../project.ts";
import { BatchWriter, type Change, type Relation, type WrittenTable } from "./batch.ts";
import { canonical, LOAD_MARK } from "./checksum.ts";
import { setSequences } from "./load.ts";
import { decode, lsn, lsnText, type Message } from "./pgoutput.ts";
import type { ChangeStream } from "./position.ts";
import { advanceSlot, flushWal, PEEK_CHANGES, peekChanges } from "./source.ts";

/** Messages decoded between two turns of the event loop. */
const YIELD_EVERY = 500;

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
    const { changes, sequences } = await peekChanges(source, stream.slot, input.sequences);
    if (changes.length === 0) {
      // Sequences move without changes to decode (a standalone one, inserts rolled back).
      if (sequences.length > 0) await target.sql.begin((tx) => setSequences(tx, sequences));
      break;
    }
    const relations = new Map<number, Relation>();
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
      await input.settle?.(tx);
      if (applied >= 0n) {
        result.appliedLsn = lsnText(applied);
        await stream.save(tx, result.appliedLsn);
      }
    });
    // Only once the target has committed may the active forget these changes.
    await advanceSlot(source, stream.slot, lsnText(endLsn));
    result.rows += batchRows;
    result.bytes += batchBytes;
    input.onProgress?.(result.rows, result.bytes);
    // Fewer than asked for: the slot had no more (each peek decodes from the slot's start).
    if (changes.length < PEEK_CHANGES) break;
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
