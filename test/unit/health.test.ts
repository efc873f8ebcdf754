import assert from "node:assert/strict";
import { test } from "node:test";
import { assessHealth, type HealthFacts } from "../../functions/health.ts";

const now = new Date("2026-01-01T12:00:00Z");
const fine: HealthFacts = {
  now,
  active: "primary",
  standby: "secondary",
  phase: "normal",
  thresholds: { backup: 0.85, switch: 0.9 },
  activeReachable: true,
  activeError: null,
  activeUsage: 0.5,
  activeReadOnly: false,
  standbyReachable: true,
  standbyError: null,
  lastBackup: { status: "succeeded", error: null, startedAt: "2026-01-01T11:00:00Z" },
  hasBackup: true,
  standbyLagSeconds: 0,
  tickSeconds: 60,
  lastTickAt: "2026-01-01T11:59:30Z",
  afterSwitch: { project: "secondary", usedBytes: 250e6, usage: 0.5, headroomBytes: 200e6, days: 40, basis: "…" },
  slot: { retainedBytes: 1e6, maxRetainedBytes: 128e6 },
};
const codes = (f: Partial<HealthFacts>) => {
  const h = assessHealth({ ...fine, ...f });
  return { state: h.state, codes: h.reasons.map((r) => r.code), text: h.reasons.map((r) => r.message).join("\n") };
};

test("all well is ok, with no reasons", () => {
  assert.deepEqual(assessHealth(fine), { state: "ok", reasons: [] });
});

test("an unreachable standby degrades health, and makes it critical once usage is past the backup threshold", () => {
  const down = { standbyReachable: false, standbyError: "connection refused", afterSwitch: null };
  assert.deepEqual(codes(down).codes, ["standby_unreachable"]);
  assert.equal(codes(down).state, "degraded");
  assert.match(codes(down).text, /^secondary \(standby\) cannot be reached: connection refused; no backup or switch can happen/);
  assert.equal(codes({ ...down, phase: "backup" }).state, "critical");
});

test("equal Free quotas: a switch that buys little is said from the first tick, with what fixes it", () => {
  const r = codes({ afterSwitch: { project: "secondary", usedBytes: 440e6, usage: 0.88, headroomBytes: 1e7, days: null, basis: "…" } });
  assert.deepEqual(r.codes, ["little_headroom"]);
  assert.equal(r.state, "degraded");
  assert.match(r.text, /^a switch would buy little: secondary would be at 88\.0 % right after it, 9\.5 MB below its switch threshold\./);
  assert.match(r.text, /a larger plan for secondary .*reclaiming bloat on primary .*moving data out of primary/);
  // Room that lasts days, not weeks, is little too.
  assert.deepEqual(codes({ afterSwitch: { ...fine.afterSwitch!, days: 3 } }).codes, ["little_headroom"]);
});

test("a switch that would be refused says why: degraded, critical when the active is past its switch threshold", () => {
  const over = {
    afterSwitch: { project: "secondary" as const, usedBytes: 480e6, usage: 0.96, headroomBytes: -1e7, days: null, basis: "…" },
  };
  assert.deepEqual(codes(over), {
    state: "degraded",
    codes: ["switch_refused"],
    text: codes(over).text,
  });
  assert.match(codes(over).text, /^a switch to secondary would be refused: the standby would be at 96\.0 % after a switch/);
  const critical = codes({ ...over, phase: "critical", activeUsage: 0.92 });
  assert.equal(critical.state, "critical");
  assert.deepEqual(critical.codes, ["active_over_switch", "switch_refused"]);
  assert.match(codes({ hasBackup: false }).text, /no completed backup of the active; a backup \(Force backup\) makes one$/);
});

test("a standby more than 2 ticks behind counts in the backup phase only", () => {
  assert.deepEqual(codes({ phase: "backup", activeUsage: 0.86, standbyLagSeconds: 121 }).codes, ["standby_behind"]);
  assert.deepEqual(codes({ phase: "backup", activeUsage: 0.86, standbyLagSeconds: 120 }).codes, []);
  assert.deepEqual(codes({ standbyLagSeconds: 600 }).codes, []);
});

test("a failed backup, a slot over half its cap and a silent schedule are each told", () => {
  assert.match(
    codes({ lastBackup: { status: "failed", error: "disk full", startedAt: "t" } }).text,
    /^the last backup to secondary \(t\) failed: disk full$/,
  );
  assert.deepEqual(codes({ slot: { retainedBytes: 65e6, maxRetainedBytes: 128e6 } }).codes, ["slot_retention"]);
  assert.deepEqual(codes({ slot: { retainedBytes: 63e6, maxRetainedBytes: 128e6 } }).codes, []);
  assert.match(codes({ lastTickAt: "2026-01-01T11:56:30Z" }).text, /^no tick for 3 min/);
  assert.deepEqual(codes({ lastTickAt: "2026-01-01T11:57:30Z" }).codes, []);
  assert.equal(codes({ lastTickAt: null, phase: "backup", activeUsage: 0.86 }).state, "critical");
});

test("a backup that succeeded without Auth's users degrades health, naming why and what to upgrade", () => {
  const r = codes({
    lastBackup: {
      status: "succeeded",
      error: null,
      startedAt: "2026-01-01T11:00:00Z",
      details: { authNotCarried: ["auth.users.tenant is NOT NULL without a default on the standby and missing on the active"] },
    },
  });
  assert.deepEqual(r.codes, ["auth_not_carried"]);
  assert.equal(r.state, "degraded");
  assert.match(r.text, /carried the app's tables but not Auth's users: auth\.users\.tenant .*Upgrade GoTrue on secondary to match primary/);
  assert.deepEqual(codes({ lastBackup: { ...fine.lastBackup!, details: {} } }).codes, []);
});
