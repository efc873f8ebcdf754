import assert from "node:assert/strict";
import { test } from "node:test";
import { bridgeAuth, enumSkew } from "../../functions/backup/auth.ts";
import type { Catalog, Column, Table } from "../../functions/backup/catalog.ts";
import { planBackup } from "../../functions/backup/plan.ts";
import { leftBehind, leftOut, type Reference, tablesLeftBehind } from "../../functions/schemas.ts";
import { applyPatch, DEFAULT_SETTINGS } from "../../functions/settings.ts";

const ref = (table: string, references: string, name: string, apps: [boolean, boolean] = [true, true]): Reference => ({
  name,
  table,
  tableSchema: table.split(".")[0]!,
  tableApp: apps[0],
  references,
  referencesSchema: references.split(".")[0]!,
  referencesApp: apps[1],
});

// basejump's shape: accounts in their own schema, referenced from public and referencing auth.users.
const BASEJUMP = [
  ref("basejump.accounts", "auth.users", "accounts_owner_fkey", [true, false]),
  ref("basejump.account_user", "basejump.accounts", "account_user_account_fkey"),
  ref("public.projects", "basejump.accounts", "projects_account_id_fkey"),
  ref("public.orders", "public.projects", "orders_project_fkey"),
  ref("billing.events", "billing.customers", "events_customer_fkey"),
  ref("storage.objects", "auth.users", "objects_owner_fkey", [false, false]),
];

test("every app schema carried leaves nothing behind", () => {
  assert.deepEqual(leftBehind(BASEJUMP, ["public", "basejump", "billing"]), []);
});

test("a schema left out is named once per table, with every foreign key that ties it to what is carried; unrelated schemas and Supabase's own are not", () => {
  const left = leftBehind(BASEJUMP, ["public"]);
  assert.deepEqual(left, [
    {
      table: "basejump.accounts",
      schema: "basejump",
      because: "it references auth.users (accounts_owner_fkey), public.projects references it (projects_account_id_fkey)",
    },
  ]);
  const error = tablesLeftBehind(left, ["public"]);
  assert.deepEqual([error.code, error.status], ["TABLES_LEFT_BEHIND", 409]);
  assert.match(error.message, /add "basejump" to the setting schemas/);
  assert.deepEqual((error.details as { schemas: string[] }).schemas, ["public", "basejump"]);
});

test("a table left behind refuses the run before anything is written, as a recorded failure", () => {
  const left = leftBehind(BASEJUMP, ["public"]);
  const plan = planBackup({
    request: { mode: "auto", continuable: true },
    source: "primary",
    diffs: [],
    identityProblems: [],
    leftBehind: left,
    carried: ["public"],
    position: null,
    tables: [],
    authCarried: false,
  });
  assert.ok(!("needs" in plan), "nothing more is read for a refused run");
  assert.deepEqual([plan.refusal?.error.code, plan.refusal?.recorded], ["TABLES_LEFT_BEHIND", true]);
});

test("schemas defaults to null (every app schema) and can be set to a list and back", () => {
  assert.equal(DEFAULT_SETTINGS.schemas, null);
  const listed = applyPatch(DEFAULT_SETTINGS, { schemas: ["public", "basejump"] });
  assert.deepEqual(listed.schemas, ["public", "basejump"]);
  assert.equal(applyPatch(listed, { schemas: null }).schemas, null);
});

const col = (name: string, extra: Partial<Column> = {}): Column => ({
  name,
  type: "text",
  notNull: false,
  generated: false,
  identity: "",
  hasDefault: false,
  ...extra,
});
const users = (columns: Column[]): Catalog => {
  const table: Table = {
    oid: 1,
    schema: "auth",
    name: "users",
    qualified: '"auth"."users"',
    partition: false,
    rowSecurity: true,
    columns: [col("id", { type: "uuid", notNull: true }), ...columns],
    primaryKey: ["id"],
    uniqueColumns: [],
    binarySafe: true,
  };
  return { tables: [table], foreignKeys: [], indexes: [], sequences: [], rules: [], enums: [] };
};

test("GoTrue ahead on one project: users carried on the shared columns, each extra column named", () => {
  const { shared, refused, skew } = bridgeAuth(
    users([col("email"), col("is_anonymous", { type: "boolean", notNull: true, hasDefault: true })]),
    users([col("email"), col("phone_change", { notNull: true, hasDefault: true }), col("nickname")]),
  );
  assert.deepEqual(refused, []);
  assert.deepEqual(
    shared.tables[0]!.columns.map((c) => c.name),
    ["id", "email"],
  );
  assert.deepEqual(skew, [
    "auth.users.is_anonymous exists only on the active: users are carried without it",
    "auth.users.phone_change exists only on the standby: it takes its default there",
    "auth.users.nickname exists only on the standby: it takes its default there",
  ]);
});

test("Auth is refused where the standby could not hold the users: a column it requires that the active lacks, a type that differs", () => {
  const required = bridgeAuth(users([col("email")]), users([col("email"), col("tenant", { notNull: true })]));
  assert.equal(required.refused.length, 1);
  assert.deepEqual(required.lacking, ["auth.users.tenant"]);
  assert.match(required.refused[0]!, /auth\.users\.tenant is NOT NULL without a default on the standby/);
  const typed = bridgeAuth(users([col("email")]), users([col("email", { type: "character varying(255)" })]));
  assert.deepEqual(typed.refused, ["auth.users: column email is text on the active, character varying(255) on the standby"]);
  assert.deepEqual(typed.lacking, []);
});

test("a list that leaves out an untied app schema names its tables, unless the last PATCH of the list left that schema out", () => {
  const tables = [
    { table: "billing.invoices", schema: "billing" },
    { table: "public.notes", schema: "public" },
    { table: "basejump.accounts", schema: "basejump" },
  ];
  const tied = leftBehind(BASEJUMP, ["public"]);
  const left = leftOut(tables, ["public"], [], tied);
  assert.deepEqual(
    left.map((l) => l.table),
    ["billing.invoices"],
  );
  assert.match(left[0]!.because, /schema billing is not in the setting schemas/);
  assert.deepEqual(leftOut(tables, ["public"], ["billing"], tied), []);
  const error = tablesLeftBehind(left, ["public"]);
  assert.equal(error.code, "TABLES_LEFT_BEHIND");
  assert.match(error.message, /to leave it out on purpose, PATCH \/config \{"schemas": \["public"\]\} again/);
  assert.doesNotMatch(error.message, /references to rows it lacks/);
});

test("Auth enum labels only the active has are refused, naming each; labels only the standby has are not", () => {
  assert.deepEqual(enumSkew({ "auth.factor_type": ["totp", "webauthn", "phone"] }, { "auth.factor_type": ["totp", "webauthn"] }), [
    "auth.factor_type: label 'phone' exists only on the active",
  ]);
  assert.deepEqual(enumSkew({ "auth.aal_level": ["aal1"] }, { "auth.aal_level": ["aal1", "aal2"] }), []);
  assert.deepEqual(enumSkew({ "auth.code_method": ["s256"] }, {}), ["auth.code_method: enum type exists only on the active"]);
});
