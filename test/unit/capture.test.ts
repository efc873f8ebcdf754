import assert from "node:assert/strict";
import { test } from "node:test";
import type { Table } from "../../functions/backup/catalog.ts";
import { captureDrift, captureEntry } from "../../functions/backup/drift.ts";
import { applyKey, identityProblems } from "../../functions/backup/identity.ts";
import { orphans } from "../../functions/backup/slots.ts";

const table = (name: string, oid: number, columns: string[] = ["id", "title"], primaryKey = ["id"]): Table => ({
  oid,
  schema: "public",
  name,
  qualified: `"public"."${name}"`,
  partition: false,
  rowSecurity: false,
  binarySafe: true,
  primaryKey,
  uniqueColumns: [],
  columns: columns.map((c) => ({
    name: c,
    type: c === "id" ? "bigint" : "text",
    notNull: c === "id",
    generated: false,
    identity: "" as const,
  })),
});

test("a table's entry names it, its OID and its shape", () => {
  assert.equal(captureEntry(table("todos", 16390)), "public.todos 16390 id:bigint:false,title:text:false|id");
});

test("drift names each table recreated, reshaped, added or removed, and nothing when none is", () => {
  const before = [captureEntry(table("todos", 1)), captureEntry(table("users", 2))];
  assert.equal(captureDrift(before, [...before]), null);
  assert.equal(captureDrift(before, [captureEntry(table("todos", 9)), before[1]!]), "public.todos was dropped and created again");
  assert.equal(
    captureDrift(before, [captureEntry(table("todos", 1, ["id", "title", "public_id"])), before[1]!]),
    "public.todos changed its columns or key",
  );
  assert.equal(captureDrift(before, [before[0]!]), "public.users is no longer replicated");
  assert.equal(captureDrift([before[0]!], before), "public.users is new");
  assert.equal(
    captureDrift(["public.todos"], [before[0]!]),
    "public.todos was recorded without its shape",
    "a position recorded by names only",
  );
});

test("orphans are Spillway's slots that no record needs, never an app's own", () => {
  const slots = [
    "spillway_primary_to_secondary_aaaa1111",
    "spillway_primary_to_secondary_bbbb2222",
    "spillway_secondary_to_primary_cccc3333",
    "spillway_app_slot",
    "app_sync",
  ];
  assert.deepEqual(orphans(slots, new Set(["spillway_primary_to_secondary_bbbb2222"])), [
    "spillway_primary_to_secondary_aaaa1111",
    "spillway_secondary_to_primary_cccc3333",
  ]);
});

test("replica identities: USING INDEX keys the apply by the index's columns; NOTHING is a problem naming the table", () => {
  const members = table("members", 3, ["id", "email"]);
  assert.deepEqual(applyKey(members, { kind: "i", columns: ["email"] }).primaryKey, ["email"]);
  assert.deepEqual(applyKey(members, { kind: "d", columns: [] }).primaryKey, ["id"]);
  assert.deepEqual(applyKey(members, { kind: "f", columns: [] }).primaryKey, ["id"]);
  const problems = identityProblems(
    [members, table("ledger", 4)],
    new Map([
      ["public.members", { kind: "i" as const, columns: ["email"] }],
      ["public.ledger", { kind: "n" as const, columns: [] }],
    ]),
  );
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, /^public\.ledger has REPLICA IDENTITY NOTHING/);
});
