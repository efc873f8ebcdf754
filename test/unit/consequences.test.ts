import assert from "node:assert/strict";
import { test } from "node:test";
import { carriedSchemas, checkPatch, type PatchFacts, schemasLeftOut } from "../../functions/consequences.ts";
import { DEFAULT_SETTINGS, type Settings } from "../../functions/settings.ts";

const facts: PatchFacts = {
  active: "primary",
  usedBytes: { primary: 400, secondary: 100 },
  tablesBySchema: { public: 3, shop: 2, empty: 0, auth: 5, extensions: 1 },
};
// A list naming `public` only, as the settings stored before null became the default.
const base: Settings = { ...DEFAULT_SETTINGS, schemas: ["public"], quotaBytes: { primary: 1000, secondary: 1000 } } as Settings;
// `schemas: null` carries every schema holding app tables.
const everySchema = { ...base, schemas: null } as unknown as Settings;

test("null carries every schema holding app tables, not Supabase's or Postgres's own", () => {
  assert.deepEqual(carriedSchemas(null, facts.tablesBySchema), ["public", "shop"]);
  assert.deepEqual(carriedSchemas(["public"], facts.tablesBySchema), ["public"]);
});

test("from null to a list that drops schemas holding app tables needs confirming; back to null needs nothing", () => {
  const toList = checkPatch(everySchema, { ...base, schemas: ["public"] }, facts);
  assert.deepEqual(toList.invalid, {});
  assert.match(toList.consequences.join(), /shop would no longer be carried; 2 table\(s\)/);
  assert.deepEqual(checkPatch(base, everySchema, facts), { invalid: {}, consequences: [] });
  assert.deepEqual(checkPatch(base, { ...base, schemas: ["public", "empty"] }, facts).consequences, []);
  assert.deepEqual(checkPatch(base, { ...base, schemas: ["public", "gone"] }, facts).invalid, {
    schemas: "names schema(s) that do not exist on the active project (primary): gone",
  });
});

test("a quota below the used size, or a switch at the next tick, are consequences; an unchanged or unmeasured project is not", () => {
  assert.equal(checkPatch(base, { ...base, quotaBytes: { primary: 1000, secondary: 50 } }, facts).consequences.length, 1);
  assert.deepEqual(checkPatch(base, { ...base, switchThreshold: 0.4, backupThreshold: 0.3 }, facts).consequences.length, 1);
  assert.deepEqual(checkPatch(base, { ...base, switchThreshold: 0.4, backupThreshold: 0.3, autoSwitch: false }, facts).consequences, []);
  const unmeasured = { ...facts, usedBytes: { primary: null, secondary: null } };
  assert.deepEqual(checkPatch(base, { ...base, quotaBytes: { primary: 10, secondary: 10 } }, unmeasured).consequences, []);
});

test("the schemas a list leaves out are those of the active holding app tables it does not name", () => {
  assert.deepEqual(schemasLeftOut(["public"], { public: 3, shop: 1, billing: 2, empty: 0, auth: 4 }), ["billing", "shop"]);
  assert.deepEqual(schemasLeftOut(null, { public: 3, shop: 1 }), []);
});
