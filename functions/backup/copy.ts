import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Db as Sql } from "../project.ts";
import { copiedColumns, type Table } from "./catalog.ts";

/** Bytes gathered before they are sent on to the target in one message. */
const COPY_BATCH_BYTES = 512 * 1024;

/**
 * Streams one table's rows from the source transaction into the relation `into` of the
 * target transaction (the table itself, or its stage table) with COPY, binary where the
 * types allow, never holding more than one batch in memory. `freeze` only where `into` was
 * emptied or created in this transaction.
 *
 * @example
 * const moved = await copyTable(src, dst, table, (n) => (progress.bytes += n), table.qualified);
 */
export async function copyTable(
  src: Sql,
  dst: Sql,
  table: Table,
  onBytes: (n: number) => void,
  into: string,
  freeze = true,
): Promise<{ rows: number; bytes: number }> {
  const cols = copiedColumns(table);
  const format = table.binarySafe ? "binary" : "text";
  const readable = await src.unsafe(`copy ${table.qualified} (${cols}) to stdout with (format ${format})`).readable();
  const writable = await dst.unsafe(`copy ${into} (${cols}) from stdin with (format ${format}${freeze ? ", freeze true" : ""})`).writable();
  // Postgres sends one CopyData message per row, and postgres.js hands each on as one
  // chunk; a binary copy adds one message for its trailer.
  let messages = 0;
  let bytes = 0;
  // Rows arrive one message each; they leave in batches, so the target gets a few large
  // CopyData messages instead of one per row (most of the process's CPU otherwise).
  let batch: Uint8Array[] = [];
  let batched = 0;
  const release = (push: (chunk: Uint8Array) => void) => {
    if (batched === 0) return;
    push(Buffer.concat(batch, batched));
    onBytes(batched);
    batch = [];
    batched = 0;
  };
  const count = new Transform({
    transform(chunk: Uint8Array, _encoding, callback) {
      messages += 1;
      bytes += chunk.length;
      batch.push(chunk);
      batched += chunk.length;
      if (batched >= COPY_BATCH_BYTES) release((c) => this.push(c));
      callback();
    },
    flush(callback) {
      release((c) => this.push(c));
      callback();
    },
  });
  // postgres.js pauses its socket when the stream's buffer is full and resumes it from the
  // stream's read(); when the copy's last rows arrive while paused, read() is never called
  // again after the end and the connection would wait forever. Resume it once at the end.
  readable.once("end", () => (readable as unknown as { _read(size: number): void })._read(0));
  await pipeline(readable, count, writable);
  return { rows: format === "binary" ? Math.max(0, messages - 1) : messages, bytes };
}
