import { Buffer } from "node:buffer";

/** Stands for a column value that was not sent: an unchanged TOAST value. */
export const UNCHANGED: unique symbol = Symbol("unchanged");

/** One column value of a decoded row: its text form, null, or `UNCHANGED`. */
export type Value = string | null | typeof UNCHANGED;

/** A decoded pgoutput (protocol 1) message. */
export type Message =
  | { type: "begin"; finalLsn: bigint; xid: number /** Microseconds since 2000-01-01 UTC. */; commitTime: bigint }
  | { type: "commit"; commitLsn: bigint; endLsn: bigint }
  | { type: "relation"; relid: number; schema: string; table: string; columns: { name: string; key: boolean; typeOid: number }[] }
  | { type: "insert"; relid: number; row: Value[] }
  | { type: "update"; relid: number; old: Value[] | null; row: Value[] }
  | { type: "delete"; relid: number; old: Value[] }
  | { type: "truncate"; relids: number[]; cascade: boolean; restartIdentity: boolean }
  | { type: "other" };

// Reads one message front to back (a class rather than closures made per message: the
// decoder runs once per change, tens of thousands of times in one batch). Text is read with
// Buffer's own UTF-8 decoding, which for the short values of a row costs a fraction of a
// TextDecoder call per value.
class Reader {
  private at = 0;
  private readonly buf: Buffer;

  constructor(data: Uint8Array) {
    // The driver hands bytea over as a Buffer already; a view is made only for other arrays.
    this.buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }

  u8(): number {
    return this.buf[this.at++]!;
  }

  char(): string {
    return String.fromCharCode(this.u8());
  }

  // Each reads at the current position and moves past what it read.
  i16(): number {
    const at = this.at;
    this.at += 2;
    return this.buf.readInt16BE(at);
  }

  i32(): number {
    const at = this.at;
    this.at += 4;
    return this.buf.readInt32BE(at);
  }

  u32(): number {
    const at = this.at;
    this.at += 4;
    return this.buf.readUInt32BE(at);
  }

  u64(): bigint {
    const at = this.at;
    this.at += 8;
    return this.buf.readBigUInt64BE(at);
  }

  str(): string {
    const end = this.buf.indexOf(0, this.at);
    const s = this.utf8(this.at, end);
    this.at = end + 1;
    return s;
  }

  private utf8(start: number, end: number): string {
    return this.buf.toString("utf8", start, end);
  }

  tuple(): Value[] {
    const n = this.i16();
    const values = new Array<Value>(n);
    for (let i = 0; i < n; i++) {
      const kind = this.u8();
      if (kind === 0x6e /* n */) values[i] = null;
      else if (kind === 0x75 /* u */) values[i] = UNCHANGED;
      else {
        const len = this.i32();
        values[i] = this.utf8(this.at, this.at + len);
        this.at += len;
      }
    }
    return values;
  }
}

/**
 * Decodes one message of PostgreSQL's pgoutput logical decoding plugin, protocol version 1,
 * as `pg_logical_slot_peek_binary_changes` returns them.
 *
 * @example
 * const m = decode(row.data); // { type: "insert", relid: 16390, row: [...] }
 */
export function decode(data: Uint8Array): Message {
  const r = new Reader(data);
  switch (r.char()) {
    case "B": {
      const finalLsn = r.u64();
      const commitTime = r.u64();
      return { type: "begin", finalLsn, commitTime, xid: r.u32() };
    }
    case "C": {
      r.u8(); // flags
      const commitLsn = r.u64();
      return { type: "commit", commitLsn, endLsn: r.u64() };
    }
    case "R": {
      const relid = r.u32();
      const schema = r.str();
      const table = r.str();
      r.u8(); // replica identity
      const n = r.i16();
      const columns = [];
      for (let i = 0; i < n; i++) {
        const flags = r.u8();
        const name = r.str();
        const typeOid = r.u32();
        r.i32(); // typmod
        columns.push({ name, key: (flags & 1) === 1, typeOid });
      }
      return { type: "relation", relid, schema, table, columns };
    }
    case "I": {
      const relid = r.u32();
      r.u8(); // 'N'
      return { type: "insert", relid, row: r.tuple() };
    }
    case "U": {
      const relid = r.u32();
      let old: Value[] | null = null;
      // 'K' (old key) or 'O' (old row) comes first when sent, then 'N' and the new row.
      if (r.char() !== "N") {
        old = r.tuple();
        r.u8();
      }
      return { type: "update", relid, old, row: r.tuple() };
    }
    case "D": {
      const relid = r.u32();
      r.u8(); // 'K' or 'O'
      return { type: "delete", relid, old: r.tuple() };
    }
    case "T": {
      const n = r.u32();
      const options = r.u8();
      const relids: number[] = [];
      for (let i = 0; i < n; i++) relids.push(r.u32());
      return { type: "truncate", relids, cascade: (options & 1) === 1, restartIdentity: (options & 2) === 2 };
    }
    default:
      return { type: "other" };
  }
}

/**
 * Parses a `pg_lsn` text ("16/B374D848") to a number that orders.
 *
 * @example
 * lsn("0/16B3748") // 23803720n
 */
export function lsn(value: string): bigint {
  const [hi, lo] = value.split("/");
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/**
 * A position as `pg_lsn` text.
 *
 * @example
 * lsnText(23803720n) // "0/16B3748"
 */
export function lsnText(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** A decoded transaction as a copy's snapshot is asked about it. */
export interface Txn {
  /** Its full (64-bit, epoch-aware) transaction id: see `fullXid`. */
  xid: bigint;
  /** The position of its commit record. */
  commitLsn: bigint;
}

/**
 * The full transaction id of a 32-bit one from the stream, as the one nearest to
 * `nextXid` (the active's next full id, read when the slot was peeked). Exact for every
 * transaction a slot decodes: the server stops assigning ids long before one is 2^31 away
 * from the oldest the slot still needs.
 *
 * @example
 * fullXid(5, 4294967396n) // 4294967301n: epoch 1, past the wrap
 */
export function fullXid(xid: number, nextXid: bigint): bigint {
  return nextXid + BigInt((xid - Number(nextXid & 0xffffffffn)) | 0);
}

/**
 * Reads a copy's snapshot once and answers whether it saw a transaction. The snapshot is
 * `pg_current_snapshot()` text with the active's WAL insert position read after it
 * ("xmin:xmax:xip:lsn", see `SNAPSHOT_SQL`): every transaction the snapshot saw committed
 * before that position, so one that committed at or after it is never taken for seen
 * (whatever its id, however long after the copy); one before it is compared with the
 * snapshot on full 64-bit ids. A snapshot recorded without the position (by an earlier
 * version) compares every transaction, on full ids too.
 *
 * @example
 * visibleIn("120:130::0/16B3748")({ xid: 100n, commitLsn: 0x16b0000n }) // true
 */
export function visibleIn(snapshot: string): (txn: Txn) => boolean {
  const [xminText, xmaxText, xipText, boundText] = snapshot.split(":");
  const xmin = BigInt(xminText!);
  const xmax = BigInt(xmaxText!);
  const inProgress = new Set((xipText ?? "").split(",").filter(Boolean).map(BigInt));
  const bound = boundText ? lsn(boundText) : null;
  return ({ xid, commitLsn }) => (bound === null || commitLsn < bound) && (xid < xmin || (xid < xmax && !inProgress.has(xid)));
}
