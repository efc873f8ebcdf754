import assert from "node:assert/strict";
import { test } from "node:test";
import { SpillwayError } from "../../functions/errors.ts";
import { applyPatch, DEFAULT_SETTINGS, resolveStrategy } from "../../functions/settings.ts";

function fieldsOf(patch: unknown): Record<string, string> {
  try {
    applyPatch(DEFAULT_SETTINGS, patch);
  } catch (e) {
    assert.ok(e instanceof SpillwayError);
    assert.equal(e.code, "INVALID_CONFIG");
    assert.equal(e.status, 400);
    return e.details as Record<string, string>;
  }
  assert.fail("expected INVALID_CONFIG");
}

test("a valid partial change merges into the current settings", () => {
  const next = applyPatch(DEFAULT_SETTINGS, { backupThreshold: 0.8, quotaBytes: { secondary: 1_000_000_000 }, strategy: "fdw" });
  assert.equal(next.backupThreshold, 0.8);
  assert.equal(next.switchThreshold, 0.9);
  assert.deepEqual(next.quotaBytes, { primary: 524288000, secondary: 1_000_000_000 });
  assert.equal(next.strategy, "fdw");
});

test("each bad field is named", () => {
  const fields = fieldsOf({
    backupThreshold: 1.5,
    switchThreshold: 0,
    autoBackup: "yes",
    quotaBytes: { primary: -1 },
    schemas: ["spillway"],
    strategy: "rsync",
    budgetSeconds: 1.5,
  });
  assert.deepEqual(Object.keys(fields).sort(), [
    "autoBackup",
    "backupThreshold",
    "budgetSeconds",
    "quotaBytes.primary",
    "schemas.0",
    "strategy",
    "switchThreshold",
  ]);
  assert.match(fields.backupThreshold!, /at most 1/);
});

test("unknown fields are refused by name, also inside quotaBytes", () => {
  assert.deepEqual(fieldsOf({ colour: "blue", quotaBytes: { tertiary: 1 } }), {
    colour: "is not a setting",
    "quotaBytes.tertiary": "is not a setting",
  });
});

test("the switch threshold must stay above the backup threshold; both fields are named", () => {
  for (const patch of [{ switchThreshold: 0.8 }, { backupThreshold: 0.95 }]) {
    const fields = fieldsOf(patch);
    assert.deepEqual(Object.keys(fields).sort(), ["backupThreshold", "switchThreshold"]);
    assert.match(fields.backupThreshold!, /backupThreshold \(0\.\d+\) must be below switchThreshold \(0\.\d+\)/);
  }
});

test("a body that is not an object is refused", () => {
  assert.deepEqual(Object.keys(fieldsOf([1, 2])), ["body"]);
  assert.deepEqual(Object.keys(fieldsOf("x")), ["body"]);
  assert.deepEqual(Object.keys(fieldsOf(null)), ["body"]);
});

test('strategy "auto" (the default) is fdw under the Edge runtime and copy elsewhere; explicit values are kept', () => {
  assert.equal(DEFAULT_SETTINGS.strategy, "auto");
  assert.equal(resolveStrategy("auto", "edge"), "fdw");
  assert.equal(resolveStrategy("auto", "node"), "copy");
  for (const runtime of ["edge", "node"] as const) {
    assert.equal(resolveStrategy("copy", runtime), "copy");
    assert.equal(resolveStrategy("fdw", runtime), "fdw");
  }
  assert.equal(applyPatch(DEFAULT_SETTINGS, { strategy: "copy" }).strategy, "copy");
  assert.equal(applyPatch({ ...DEFAULT_SETTINGS, strategy: "fdw" }, { strategy: "auto" }).strategy, "auto");
});

test("authSessions is off by default, a boolean, and named when it is not", () => {
  assert.equal(DEFAULT_SETTINGS.authSessions, false);
  assert.equal(applyPatch(DEFAULT_SETTINGS, { authSessions: true }).authSessions, true);
  assert.deepEqual(fieldsOf({ authSessions: "on" }), { authSessions: "must be true or false" });
});
