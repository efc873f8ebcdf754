import assert from "node:assert/strict";
import { test } from "node:test";
import type { Catalog, ForeignKey, Rule, Table } from "../../functions/backup/catalog.ts";
import { changedChecks } from "../../functions/backup/changed-checks.ts";
import { ruleDiff, ruleWarnings, schemaDiff } from "../../functions/backup/schema-diff.ts";

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
  rules: [],
  enums: [],
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

test("a label on the active only, a unique index on the standby only, a generated expression or domain differing is named with the project to migrate", () => {
  const sides = { active: "primary", standby: "secondary" } as const;
  const status = { name: "public.status", labels: ["todo", "done"] };
  const unique: Rule = { table: "public.orders", kind: "unique index", name: "orders_id_key", definition: "CREATE UNIQUE INDEX ..." };
  const check: Rule = { table: "public.orders", kind: "check constraint", name: "orders_id_check", definition: "CHECK ((id > 0))" };
  const total: Rule = { table: "public.orders", kind: "generated column", name: "total", definition: "(id * 2)" };
  const domain: Rule = { table: null, kind: "domain", name: "public.email", definition: "text CHECK ((VALUE ~~ '%@%'::text))" };
  const active: Catalog = { ...catalog([]), enums: [{ ...status, labels: ["todo", "done", "archived"] }], rules: [check, total, domain] };
  const standby: Catalog = {
    ...catalog([]),
    tables: [{ ...table("users"), columns: [{ ...table("users").columns[0]!, name: "id", notNull: false }] }, table("orders")],
    enums: [status],
    rules: [unique, check, { ...total, definition: "(id * 3)" }, { ...domain, definition: "text" }],
  };
  assert.deepEqual(ruleDiff(active, standby, sides), [
    "type public.status: label \"archived\" exists only on primary (the active); migrate secondary: alter type public.status add value 'archived'",
    "public.orders: generated column total is (id * 2) on primary (the active), (id * 3) on secondary (the standby); migrate secondary to match primary",
    "domain public.email is text CHECK ((VALUE ~~ '%@%'::text)) on primary (the active), text on secondary (the standby); migrate secondary to match primary",
    "public.orders: unique index orders_id_key exists only on secondary (the standby); migrate primary the same way, or drop it from secondary: CREATE UNIQUE INDEX ...",
  ]);
  // A label only the standby has is allowed (the standby is migrated first); the same rules in any order are alike.
  assert.deepEqual(
    ruleDiff({ ...standby, enums: [status] }, { ...standby, rules: [...standby.rules].reverse(), enums: active.enums }, sides),
    [],
  );
});

test("a rule only the active has, NOT VALID on one side or under another name is allowed with a warning; one only the standby has is refused", () => {
  const sides = { active: "primary", standby: "secondary" } as const;
  const rule = (kind: Rule["kind"], name: string, definition: string): Rule => ({ table: "public.orders", kind, name, definition });
  const notNull = { ...table("users"), columns: [{ ...table("users").columns[0]!, notNull: true }] };
  const nullable = { ...table("users"), columns: [{ ...table("users").columns[0]!, notNull: false }] };
  const active: Catalog = {
    ...catalog([]),
    tables: [notNull, table("orders")],
    rules: [
      rule("check constraint", "orders_id_check", "CHECK ((id > 0)) NOT VALID"),
      rule("check constraint", "orders_small", "CHECK ((id < 100))"),
      rule("check constraint", "orders_only_active", "CHECK ((id <> 7))"),
      rule("unique index", "orders_id_idx", "CREATE UNIQUE INDEX orders_id_idx ON public.orders USING btree (id)"),
      rule("unique constraint", "orders_id_key", "UNIQUE (id)"),
    ],
  };
  const standby: Catalog = {
    ...catalog([]),
    tables: [nullable, table("orders")],
    rules: [
      rule("check constraint", "orders_id_check", "CHECK ((id > 0))"),
      rule("check constraint", "orders_small", "CHECK ((id < 1000))"),
      rule("unique index", "orders_id_unique", "CREATE UNIQUE INDEX orders_id_unique ON public.orders USING btree (id)"),
      rule("unique constraint", "orders_id_key", "UNIQUE (id)"),
    ],
  };
  assert.deepEqual(ruleDiff(active, standby, sides), []);
  assert.deepEqual(ruleWarnings(active, standby, sides), [
    "public.users: column id is NOT NULL only on primary (the active); migrate secondary: alter table public.users alter column id set not null",
    "public.orders: check constraint orders_small is CHECK ((id < 100)) on primary (the active), CHECK ((id < 1000)) on secondary (the standby); rows the standby's refuses fail the backup; migrate primary the same way",
    "public.orders: check constraint orders_only_active exists only on primary (the active); migrate secondary: CHECK ((id <> 7))",
  ]);
  // The other way round the standby refuses rows the active takes.
  assert.deepEqual(ruleDiff(standby, active, { active: "secondary", standby: "primary" }), [
    "public.users: column id is NOT NULL only on primary (the standby); migrate secondary the same way, or drop the NOT NULL on primary",
    "public.orders: check constraint orders_only_active exists only on primary (the standby); migrate secondary the same way, or drop it from primary: CHECK ((id <> 7))",
  ]);
  // Only the check changed under its name is tried against the active's rows; NOT VALID alone is no change.
  assert.deepEqual(
    changedChecks(active, standby).map((c) => [c.name, c.activeDefinition, c.standbyDefinition]),
    [["orders_small", "CHECK ((id < 100))", "CHECK ((id < 1000))"]],
  );
});
