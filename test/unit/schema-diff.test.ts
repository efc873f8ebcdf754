import assert from "node:assert/strict";
import { test } from "node:test";
import type { Catalog, ForeignKey, Table } from "../../functions/backup/catalog.ts";
import { schemaDiff } from "../../functions/backup/schema-diff.ts";

const table = (name: string): Table => ({
  oid: 1,
  schema: "public",
  name,
  qualified: `"public"."${name}"`,
  partition: false,
  rowSecurity: false,
  columns: [{ name: "id", type: "bigint", notNull: true, generated: false, identity: "" }],
  primaryKey: ["id"],
  uniqueColumns: [],
  binarySafe: true,
});
const fk = (on: string, name: string, definition: string, references = "users"): ForeignKey => ({
  name,
  table: `"public"."${on}"`,
  references: `"public"."${references}"`,
  definition,
});
const catalog = (foreignKeys: ForeignKey[]): Catalog => ({
  tables: [table("users"), table("orders")],
  foreignKeys,
  indexes: [],
  sequences: [],
});

test("foreign keys between replicated tables must be the same on both sides", () => {
  const active = catalog([
    fk("orders", "orders_user_fkey", "FOREIGN KEY (id) REFERENCES users(id)"),
    fk("orders", "orders_buyer_fkey", "FOREIGN KEY (id) REFERENCES users(id)"),
  ]);
  const standby = catalog([
    fk("orders", "orders_user_fkey", "FOREIGN KEY (id) REFERENCES users(id) ON DELETE CASCADE"),
    fk("orders", "orders_extra_fkey", "FOREIGN KEY (id) REFERENCES users(id)"),
  ]);
  assert.deepEqual(schemaDiff(active, standby), [
    "public.orders: foreign key orders_user_fkey is FOREIGN KEY (id) REFERENCES users(id) on the active, FOREIGN KEY (id) REFERENCES users(id) ON DELETE CASCADE on the standby",
    "public.orders: foreign key orders_buyer_fkey is missing on the standby",
    "public.orders: foreign key orders_extra_fkey exists only on the standby",
  ]);
  assert.deepEqual(schemaDiff(active, catalog([...active.foreignKeys].reverse())), []);
});

test("a foreign key to a table only one side replicates is not compared: the table's own difference is", () => {
  const active: Catalog = {
    ...catalog([]),
    tables: [table("users"), table("orders"), table("teams")],
    foreignKeys: [fk("orders", "orders_team_fkey", "FOREIGN KEY (id) REFERENCES teams(id)", "teams")],
  };
  assert.deepEqual(schemaDiff(active, catalog([])), ["public.teams: table is missing on the standby"]);
});
