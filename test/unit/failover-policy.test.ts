import assert from "node:assert/strict";
import { test } from "node:test";
import { decide, decideFailover, type FailoverInput, type PolicyInput } from "../../functions/policy.ts";
import { applyPatch, DEFAULT_SETTINGS } from "../../functions/settings.ts";

const on = { afterSeconds: 180, maxLagSeconds: 60 };
const due: FailoverInput = {
  failover: on,
  activeReachable: false,
  down: { ticks: 4, seconds: 190 },
  standby: { reachable: true, hasBackup: true },
  inStepAt: "2026-12-03T10:00:00.000Z",
  silentAfter: "2026-12-03T10:00:30.000Z",
};

test("failover once the active stays unreachable for afterSeconds and the standby was in step within maxLagSeconds", () => {
  const yes = decideFailover(due);
  assert.deepEqual([yes.failover, yes.lagSeconds], [true, 30]);
  assert.match(yes.reason, /unreachable for 190 s \(4 ticks\), over afterSeconds \(180 s\)/);
  // The standby's copy is newer than the last contact: no lag.
  assert.equal(decideFailover({ ...due, silentAfter: "2026-12-03T09:59:00.000Z" }).lagSeconds, 0);
});

test("no failover while it is off, the active answers, not long enough, or the standby cannot take over in step", () => {
  const cases: [Partial<FailoverInput>, RegExp][] = [
    [{ failover: null }, /failover is off/],
    [{ activeReachable: true }, /the active project answers/],
    [{ down: null }, /unreachable for 0 s; failover waits 180 s/],
    [{ down: { ticks: 3, seconds: 179 } }, /unreachable for 179 s; failover waits 180 s/],
    [{ down: { ticks: 1, seconds: 500 } }, /failover waits/],
    [{ standby: { reachable: false, hasBackup: true } }, /the standby is unreachable too/],
    [{ standby: { reachable: true, hasBackup: false } }, /no complete copy/],
    [{ inStepAt: null }, /no complete copy/],
    [{ silentAfter: null }, /went silent is not known/],
    [{ silentAfter: "2026-12-03T10:01:01.000Z" }, /61 s behind when the active project went silent, over maxLagSeconds \(60 s\)/],
  ];
  for (const [change, reason] of cases) {
    const d = decideFailover({ ...due, ...change });
    assert.equal(d.failover, false, JSON.stringify(change));
    assert.match(d.reason, reason);
  }
});

test("with failover on the standby follows the active at every tick in every phase", () => {
  const base: PolicyInput = {
    previous: "normal",
    activeUsage: 0.2,
    thresholds: { backup: 0.85, switch: 0.9 },
    autoBackup: true,
    autoSwitch: true,
    standby: { reachable: true, hasBackup: true, usageAfterSwitch: 0.2 },
  };
  assert.equal(decide(base).action, "none");
  const follows = decide({ ...base, followAlways: true });
  assert.deepEqual([follows.action, follows.phase], ["backup", "normal"]);
  assert.match(follows.reason, /failover is on: the standby follows the active/);
  // Its first copy too, and never without auto backup, a standby or a measured active.
  assert.equal(decide({ ...base, followAlways: true, standby: { ...base.standby, hasBackup: false } }).action, "backup");
  assert.equal(decide({ ...base, followAlways: true, autoBackup: false }).action, "none");
  assert.equal(decide({ ...base, followAlways: true, standby: { ...base.standby, reachable: false } }).action, "none");
  assert.equal(decide({ ...base, followAlways: true, activeUsage: null }).action, "alert");
});

test("the failover setting: off by default, validated field by field, defaults filled in", () => {
  assert.equal(DEFAULT_SETTINGS.failover, null);
  assert.deepEqual(applyPatch(DEFAULT_SETTINGS, { failover: {} }).failover, on);
  assert.deepEqual(applyPatch(DEFAULT_SETTINGS, { failover: { afterSeconds: 3 } }).failover, { afterSeconds: 3, maxLagSeconds: 60 });
  assert.equal(applyPatch({ ...DEFAULT_SETTINGS, failover: on }, { failover: null }).failover, null);
  const details = (patch: unknown) => {
    try {
      applyPatch(DEFAULT_SETTINGS, patch);
    } catch (e) {
      return (e as { details?: unknown }).details;
    }
    assert.fail(`accepted ${JSON.stringify(patch)}`);
  };
  assert.deepEqual(details({ failover: { afterSeconds: 0, maxLagSeconds: -1 } }), {
    "failover.afterSeconds": "must be at least 1",
    "failover.maxLagSeconds": "must be at least 0",
  });
  assert.deepEqual(details({ failover: { afterSeconds: 1.5 } }), { "failover.afterSeconds": "must be a whole number of seconds" });
  assert.deepEqual(details({ failover: { after: 3 } }), { "failover.after": "is not a setting" });
  assert.deepEqual(details({ failover: true }), { failover: 'must be null or {"afterSeconds": 180, "maxLagSeconds": 60}' });
});
