import assert from "node:assert/strict";
import { test } from "node:test";
import { type BackupFacts, type BackupPlan, type Need, planBackup } from "../../functions/backup/plan.ts";

const TABLES = ["public.todos 16390 id:bigint:false,title:text:false|id"];
const position = { source: "primary" as const, slot: "spillway_primary_to_secondary_1a2b3c4d", appliedLsn: "0/16B3748", tables: TABLES };
const base: BackupFacts = {
  request: { mode: "auto", continuable: true },
  source: "primary",
  diffs: [],
  identityProblems: [],
  leftBehind: [],
  carried: ["public"],
  position,
  tables: TABLES,
  authCarried: false,
  staging: null,
};

// Plans with the facts given, failing when the plan asks for one that was not.
function plan(facts: Partial<BackupFacts>): BackupPlan {
  const p = planBackup({ ...base, ...facts });
  if ("needs" in p) assert.fail(`the plan asked for ${p.needs}`);
  return p;
}

function needs(facts: Partial<BackupFacts>): Need | null {
  const p = planBackup({ ...base, ...facts });
  return "needs" in p ? p.needs : null;
}

test("an incremental backup builds on a copy from this active through a readable slot, over the same tables, all published", () => {
  assert.equal(needs({ staging: undefined }), "staging", "a staged copy to continue is looked for first");
  assert.equal(needs({}), "slot");
  assert.equal(needs({ slot: "ok" }), "unpublished");
  const p = plan({ slot: "ok", unpublished: [] });
  assert.deepEqual([p.kind, p.broken, p.refusal, p.dropSlot], ["incremental", false, null, null]);
  assert.equal(p.reason, "changes since 0/16B3748");
});

test("a full backup when there is nothing to build on, staged when it would not fit one call", () => {
  assert.equal(needs({ position: null }), "fits", "a new full copy is staged by its estimate");
  assert.deepEqual(
    [plan({ position: null, fits: true }).kind, plan({ position: null, fits: true }).reason],
    ["full", "no earlier copy to build on: full backup"],
  );
  assert.equal(plan({ position: null, fits: false }).kind, "staged");
  assert.equal(plan({ position: null, request: { mode: "auto", continuable: true, staged: true } }).kind, "staged");
  assert.equal(plan({ position: null, request: { mode: "auto", continuable: true, staged: false } }).kind, "full");
  const catchUp = plan({ position: null, request: { mode: "auto", continuable: false }, staging: undefined });
  assert.equal(catchUp.kind, "full", "a switch's catch-up is never staged and looks for no staged copy");
  assert.match(
    plan({ position: { ...position, source: "secondary" }, fits: true }).reason,
    /the standby's copy came from secondary: full backup/,
  );
  assert.match(plan({ slot: "missing", fits: true }).reason, /slot is gone/);
});

test("a copy that could have been built on but no longer can is a broken one: full, with a warning", () => {
  const lost = plan({ slot: "lost", fits: true });
  assert.deepEqual([lost.kind, lost.broken, lost.dropSlot], ["full", true, position.slot], "an invalidated slot is dropped");
  assert.match(lost.reason, /invalidated by the server/);
  const recreated = plan({ slot: "ok", tables: ["public.todos 16422 id:bigint:false,title:text:false|id"], fits: true });
  assert.deepEqual([recreated.kind, recreated.broken], ["full", true]);
  assert.match(recreated.reason, /public\.todos was dropped and created again/);
  const unpublished = plan({ slot: "ok", unpublished: ["public.todos"], fits: true });
  assert.deepEqual([unpublished.kind, unpublished.broken], ["full", true]);
  assert.match(unpublished.reason, /publication no longer covers public\.todos/);
});

test("with Auth carried, changes build on Auth's copy only while its capture held", () => {
  const auth = { slot: "ok" as const, unpublished: [], authCarried: true };
  assert.equal(needs(auth), "authCopy");
  const noCopy = plan({ ...auth, authCopy: false, fits: true });
  assert.deepEqual([noCopy.kind, noCopy.broken], ["full", false]);
  assert.equal(noCopy.reason, "the standby holds no copy of primary's Auth tables to build on: full backup");
  assert.equal(needs({ ...auth, authCopy: true }), "authRecaptured", "the capture trigger is checked only when the copy could be built on");
  const recaptured = plan({ ...auth, authCopy: true, authRecaptured: ["auth.users"], fits: true });
  assert.deepEqual([recaptured.kind, recaptured.broken], ["full", true]);
  assert.match(recaptured.reason, /Auth's auth\.users had lost change capture/);
  assert.equal(plan({ ...auth, authCopy: true, authRecaptured: [] }).kind, "incremental");
});

test("a staged copy in progress is continued, even when a full backup is asked for", () => {
  const staging = { startedAt: "2026-11-29T10:00:00.000Z", tablesStaged: 2, tablesTotal: 5 };
  const p = plan({ staging });
  assert.deepEqual([p.kind, p.continues], ["staged", true]);
  assert.equal(p.reason, "continuing the full backup begun at 2026-11-29T10:00:00.000Z (2 of 5 tables staged)");
  const full = plan({ staging, request: { mode: "full", continuable: true } });
  assert.deepEqual([full.kind, full.reason], ["staged", p.reason]);
  assert.equal(
    plan({ request: { mode: "full", continuable: true }, slot: "ok", unpublished: [], fits: true }).reason,
    "full backup requested",
  );
});

test("refusals: an impossible incremental backup is refused before a run is recorded; differing tables fail a recorded run", () => {
  const refused = plan({ request: { mode: "incremental", continuable: true }, position: null });
  assert.equal(refused.refusal?.error.code, "INCREMENTAL_UNAVAILABLE");
  assert.equal(refused.refusal?.recorded, false);
  assert.match(refused.refusal!.error.message, /no earlier copy to build on/);

  const diffs = ["public.todos: column done exists only on the standby"];
  assert.equal(
    needs({ diffs, staging: undefined, position: null }),
    null,
    "with differences neither a staged copy nor an estimate is read",
  );
  const mismatch = plan({ diffs, position: null });
  assert.deepEqual([mismatch.kind, mismatch.refusal?.error.code, mismatch.refusal?.recorded], ["full", "SCHEMA_MISMATCH", true]);
  assert.deepEqual((mismatch.refusal!.error.details as { differences: string[] }).differences, diffs);

  const identity = plan({ identityProblems: ["public.ledger has REPLICA IDENTITY NOTHING"], slot: "ok", unpublished: [] });
  assert.deepEqual(
    [identity.kind, identity.refusal?.error.code, identity.refusal?.recorded],
    ["incremental", "REPLICA_IDENTITY_UNSUPPORTED", true],
  );
});
