import assert from "node:assert/strict";
import { test } from "node:test";
import { catchUpBeforeFenceUntil, catchUpBehindFenceUntil, fitsBehindFence } from "../../functions/switch-budget.ts";

const edge = { limitMs: 150_000, startedAt: 1_000_000 };

test("on the Edge Function's 150 s, the catch-up before the fence ends at 52.5 s and the one behind it by 105 s", () => {
  assert.equal(catchUpBeforeFenceUntil(edge) - edge.startedAt, 52_500);
  assert.equal(catchUpBehindFenceUntil(edge) - edge.startedAt, 105_000);
});

test("the rest of the catch-up is estimated at the speed this switch's catch-up went, and must fit before 105 s", () => {
  const at60 = edge.startedAt + 60_000;
  // 4 MB/s measured: 100 MB left is 25 s, 45 s are left.
  assert.deepEqual(fitsBehindFence(edge, at60, { pendingBytes: 100e6, caughtUpBytes: 200e6, caughtUpMs: 50_000 }), {
    fits: true,
    estimateMs: 25_000,
    leftMs: 45_000,
    bytesPerMs: 4_000,
  });
  assert.equal(fitsBehindFence(edge, at60, { pendingBytes: 200e6, caughtUpBytes: 200e6, caughtUpMs: 50_000 }).fits, false);
  // Nothing measured: 2 MB/s assumed; nothing pending always fits, however late.
  assert.equal(fitsBehindFence(edge, at60, { pendingBytes: 50e6, caughtUpBytes: 0, caughtUpMs: 50_000 }).estimateMs, 25_000);
  assert.equal(fitsBehindFence(edge, edge.startedAt + 105_000, { pendingBytes: 0, caughtUpBytes: 0, caughtUpMs: 0 }).fits, true);
});
