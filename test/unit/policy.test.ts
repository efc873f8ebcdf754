import assert from "node:assert/strict";
import { test } from "node:test";
import { fullCopyFits } from "../../functions/backup/plan.ts";
import { decide, nextPhase, type PolicyInput } from "../../functions/policy.ts";

const T = { backup: 0.85, switch: 0.9 };
const fit = { reachable: true, hasBackup: true, usageAfterSwitch: 0.5 };
const base: PolicyInput = { previous: "normal", activeUsage: 0.5, thresholds: T, autoBackup: true, autoSwitch: true, standby: fit };

test("phases rise at once and fall only past the hysteresis band", () => {
  assert.equal(nextPhase("normal", 0.85, T, 0.01), "backup");
  assert.equal(nextPhase("backup", 0.845, T, 0.01), "backup");
  assert.equal(nextPhase("backup", 0.839, T, 0.01), "normal");
  assert.equal(nextPhase("critical", 0.895, T, 0.01), "critical");
  assert.equal(nextPhase("critical", 0.885, T, 0.01), "backup");
  assert.equal(nextPhase("critical", 0.5, T, 0.01), "normal");
  assert.equal(nextPhase("normal", 0.95, T, 0.01), "critical");
});

test("a backup on reaching the backup threshold, then one at every tick while it stays there: the standby follows", () => {
  const first = decide({ ...base, activeUsage: 0.86, standby: { ...fit, hasBackup: false } });
  assert.deepEqual([first.action, first.phase], ["backup", "backup"]);
  const again = decide({ ...base, previous: "backup", activeUsage: 0.87 });
  assert.deepEqual([again.action, again.phase], ["backup", "backup"]);
  assert.match(again.reason, /the standby follows the active/);
  assert.equal(decide({ ...base, previous: "backup", activeUsage: 0.87, standby: { ...fit, reachable: false } }).action, "none");
  assert.equal(decide({ ...base, previous: "backup", activeUsage: 0.87, autoBackup: false }).action, "none");
  assert.equal(
    decide({ ...base, previous: "critical", activeUsage: 0.92, autoSwitch: false }).action,
    "backup",
    "auto switch off: the standby still follows",
  );
});

test("usage hovering at a threshold never flaps", () => {
  let previous: PolicyInput["previous"] = "normal";
  const actions: string[] = [];
  for (const u of [0.849, 0.851, 0.848, 0.852, 0.846, 0.853, 0.899, 0.901, 0.897, 0.902, 0.895, 0.903]) {
    const d = decide({ ...base, previous, activeUsage: u });
    if (d.action !== "none") actions.push(`${d.action}@${u}`);
    previous = d.phase;
  }
  // From the first backup on, every tick below the switch threshold is a backup (the standby follows).
  assert.deepEqual(
    actions.filter((a) => a.startsWith("backup")),
    ["backup@0.851", "backup@0.848", "backup@0.852", "backup@0.846", "backup@0.853", "backup@0.899"],
  );
  assert.equal(
    actions.find((a) => a.startsWith("switch")),
    "switch@0.901",
  );
});

test("at the switch threshold: switch when the standby can take over, alert when it cannot", () => {
  assert.equal(decide({ ...base, previous: "backup", activeUsage: 0.91 }).action, "switch");
  for (const [standby, why, then] of [
    [{ ...fit, reachable: false }, /unreachable/, "none"],
    // The standby cannot take over, but it can still follow the active.
    [{ ...fit, usageAfterSwitch: 0.95 }, /would be at 95.0 %/, "backup"],
  ] as const) {
    const d = decide({ ...base, previous: "backup", activeUsage: 0.91, standby });
    assert.equal(d.action, "alert");
    assert.match(d.reason, why);
    const later = decide({ ...base, previous: "critical", activeUsage: 0.92, standby });
    assert.equal(later.action, then, "the alert is not repeated every tick");
  }
  assert.equal(decide({ ...base, previous: "backup", activeUsage: 0.91, autoSwitch: false }).action, "alert");
  const empty = decide({ ...base, previous: "normal", activeUsage: 0.95, standby: { ...fit, hasBackup: false } });
  assert.equal(empty.action, "backup", "an empty standby is backed up first");
  assert.match(empty.reason, /needs a backup before it can take over/);
  const noAuto = decide({ ...base, previous: "normal", activeUsage: 0.95, autoBackup: false, standby: { ...fit, hasBackup: false } });
  assert.equal(noAuto.action, "alert");
  assert.match(noAuto.reason, /no completed backup/);
});

test("auto backup off: an alert instead; the active unmeasured: an alert", () => {
  assert.equal(decide({ ...base, activeUsage: 0.86, autoBackup: false }).action, "alert");
  assert.equal(decide({ ...base, activeUsage: null }).action, "alert");
  assert.equal(decide({ ...base, activeUsage: 0.2 }).action, "none");
});

test("a staged full backup continues at every tick with nothing more pressing", () => {
  assert.equal(decide({ ...base, activeUsage: 0.2, standby: { ...fit, hasBackup: false, continues: true } }).action, "backup");
  assert.equal(decide({ ...base, activeUsage: 0.2, standby: { ...fit, hasBackup: false, continues: false } }).action, "none");
  assert.equal(decide({ ...base, activeUsage: 0.2, standby: { ...fit, reachable: false, continues: true } }).action, "none");
  assert.equal(decide({ ...base, previous: "critical", activeUsage: 0.95, standby: { ...fit, continues: true } }).action, "switch");
});

test("a full copy is staged when it would take over three quarters of the budget", () => {
  assert.equal(fullCopyFits(300e6, 40e6, 120), true);
  assert.equal(fullCopyFits(5e9, 40e6, 120), false);
  assert.equal(fullCopyFits(1.5e9, null, 120), true, "20 MB/s is assumed before a large copy was measured");
  assert.equal(fullCopyFits(3e9, null, 120), false);
});
