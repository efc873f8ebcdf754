import assert from "node:assert/strict";
import { test } from "node:test";
import type { Message } from "../../functions/backup/pgoutput.ts";
import { lsn, UNCHANGED } from "../../functions/backup/pgoutput.ts";
import { divergentChanges, shownValues } from "../../functions/divergent.ts";

const relation: Message = {
  type: "relation",
  relid: 1,
  schema: "public",
  table: "items",
  columns: [
    { name: "id", key: true, typeOid: 25 },
    { name: "body", key: false, typeOid: 25 },
  ],
};
// 2000-01-02T00:00:00Z, in microseconds since 2000-01-01.
const DAY = 86_400_000_000n;
const tx = (xid: number, commit: string, ops: Message[]): Message[] => [
  { type: "begin", finalLsn: lsn(commit), xid, commitTime: DAY },
  ...ops,
  { type: "commit", commitLsn: lsn(commit), endLsn: lsn(commit) + 8n },
];

test("divergent changes: only transactions after the carried position and unseen by the copy's snapshot, with key, row and commit time", () => {
  const messages: Message[] = [
    relation,
    ...tx(100, "0/100", [{ type: "insert", relid: 1, row: ["carried", "a"] }]),
    ...tx(90, "0/200", [{ type: "insert", relid: 1, row: ["seen-by-snapshot", "b"] }]),
    ...tx(120, "0/300", [
      { type: "insert", relid: 1, row: ["new", "c"] },
      { type: "update", relid: 1, old: ["old-key", null], row: ["new-key", UNCHANGED] },
      { type: "delete", relid: 1, old: ["gone", null] },
      { type: "truncate", relids: [1], cascade: false, restartIdentity: false },
    ]),
  ];
  const { changes, endLsn } = divergentChanges(messages, { lsn: "0/100", snapshot: "95:110:" }, 130n);
  assert.equal(endLsn, lsn("0/300") + 8n);
  assert.deepEqual(
    changes.map((c) => [c.table, c.operation, c.key, c.row, c.seq]),
    [
      ["public.items", "insert", { id: "new" }, { id: "new", body: "c" }, 0],
      ["public.items", "update", { id: "old-key" }, { id: "new-key" }, 1],
      ["public.items", "delete", { id: "gone" }, { id: "gone", body: null }, 2],
      ["public.items", "truncate", null, null, 3],
    ],
  );
  assert.ok(changes.every((c) => c.committedAt === "2000-01-02T00:00:00.000Z" && c.commitLsn === "0/300"));
  // With nothing carried yet and no snapshot, every transaction is divergent.
  assert.equal(divergentChanges(messages, { lsn: null, snapshot: null }, 130n).changes.length, 6);
});

test("Auth's passwords and tokens in divergent rows are shown redacted; other values and nulls as they are", () => {
  const user = { id: "u1", email: "ana@example.com", encrypted_password: "$2a$10$abcdefghijklmnopqrstuv", recovery_token: null };
  assert.deepEqual(shownValues("auth.users", user), {
    id: "u1",
    email: "ana@example.com",
    encrypted_password: "[redacted]",
    recovery_token: null,
  });
  assert.deepEqual(shownValues("auth.refresh_tokens", { id: "7", token: "r3fr3sh" }), { id: "7", token: "[redacted]" });
  assert.deepEqual(shownValues("public.items", { id: "a", token: "kept: an app column" }), { id: "a", token: "kept: an app column" });
  assert.equal(shownValues("auth.users", null), null);
});
