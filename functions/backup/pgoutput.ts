/** One column value of a decoded row: text form, null, or unchanged (a TOAST value not sent). */
export type Value = { kind: "text"; text: string } | { kind: "null" } | { kind: "unchanged" };

/** A decoded pgoutput (protocol 1) message. */
export type Message =
  | { type: "begin"; finalLsn: bigint; xid: number }
  | { type: "commit"; commitLsn: bigint; endLsn: bigint }
  | { type: "relation"; relid: number; schema: string; table: string; columns: { name: string; key: boolean; typeOid: number }[] }
  | { type: "insert"; relid: number; row: Value[] }
  | { type: "update"; relid: number; old: Value[] | null; row: Value[] }
  | { type: "delete"; relid: number; old: Value[] }
  | { type: "truncate"; relids: number[]; cascade: boolean; restartIdentity: boolean }
  | { type: "other" };

const text = new TextDecoder();

/**
 * Decodes one message of PostgreSQL's pgoutput logical decoding plugin, protocol version 1,
 * as `pg_logical_slot_peek_binary_changes` returns them.
 *
 * @example
 * const m = decode(row.data); // { type: "insert", relid: 16390, row: [...] }
 */
export function decode(data: Uint8Array): Message {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  const u8 = () => view.getUint8(at++);
  const i16 = () => { const v = view.getInt16(at); at += 2; return v; };
  const i32 = () => { const v = view.getInt32(at); at += 4; return v; };
  const u32 = () => { const v = view.getUint32(at); at += 4; return v; };
  const u64 = () => { const v = view.getBigUint64(at); at += 8; return v; };
  const str = () => {
    const end = data.indexOf(0, at);
    const s = text.decode(data.subarray(at, end));
    at = end + 1;
    return s;
  };
  const tuple = (): Value[] => {
    const n = i16();
    const values: Value[] = [];
    for (let i = 0; i < n; i++) {
      const kind = String.fromCharCode(u8());
      if (kind === "n") values.push({ kind: "null" });
      else if (kind === "u") values.push({ kind: "unchanged" });
      else {
        const len = i32();
        values.push({ kind: "text", text: text.decode(data.subarray(at, at + len)) });
        at += len;
      }
    }
    return values;
  };

  const type = String.fromCharCode(u8());
  switch (type) {
    case "B": {
      const finalLsn = u64();
      u64(); // commit time
      return { type: "begin", finalLsn, xid: u32() };
    }
    case "C": {
      u8(); // flags
      const commitLsn = u64();
      return { type: "commit", commitLsn, endLsn: u64() };
    }
    case "R": {
      const relid = u32();
      const schema = str();
      const table = str();
      u8(); // replica identity
      const n = i16();
      const columns = [];
      for (let i = 0; i < n; i++) {
        const flags = u8();
        const name = str();
        const typeOid = u32();
        i32(); // typmod
        columns.push({ name, key: (flags & 1) === 1, typeOid });
      }
      return { type: "relation", relid, schema, table, columns };
    }
    case "I": {
      const relid = u32();
      u8(); // 'N'
      return { type: "insert", relid, row: tuple() };
    }
    case "U": {
      const relid = u32();
      let marker = String.fromCharCode(u8());
      let old: Value[] | null = null;
      if (marker === "K" || marker === "O") {
        old = tuple();
        marker = String.fromCharCode(u8());
      }
      return { type: "update", relid, old, row: tuple() };
    }
    case "D": {
      const relid = u32();
      u8(); // 'K' or 'O'
      return { type: "delete", relid, old: tuple() };
    }
    case "T": {
      const n = u32();
      const options = u8();
      const relids: number[] = [];
      for (let i = 0; i < n; i++) relids.push(u32());
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

/**
 * Whether a transaction id is visible in a snapshot given as `pg_current_snapshot()` text
 * ("xmin:xmax:xip,…"), comparing 32-bit transaction ids the way Postgres does.
 *
 * @example
 * visibleIn(100, "120:130:") // true
 */
export function visibleIn(xid: number, snapshot: string): boolean {
  const [xminText, xmaxText, xipText] = snapshot.split(":");
  const low = (v: string) => Number(BigInt(v) & 0xffffffffn);
  const before = (a: number, b: number) => ((a - b) | 0) < 0;
  const xmin = low(xminText!);
  const xmax = low(xmaxText!);
  if (before(xid, xmin)) return true;
  if (!before(xid, xmax)) return false;
  return !(xipText ?? "").split(",").filter(Boolean).map(low).includes(xid);
}
