import assert from "node:assert/strict";
import { test } from "node:test";
import { forecast, phase } from "../../functions/usage.ts";

const T = { backup: 0.85, switch: 0.9 };
const hour = 3_600_000;

test("a steady growth is projected to each threshold", () => {
  const start = Date.parse("2026-01-01T00:00:00Z");
  // 10 MB per hour from 400 MB, quota 500 MB: 425 MB at +2.5 h, 450 MB at +5 h.
  const samples = [0, 1, 2].map((h) => ({ at: new Date(start + h * hour).toISOString(), usedBytes: 400e6 + h * 10e6 }));
  const f = forecast(samples, 500e6, T, new Date(start + 2 * hour));
  assert.ok(Math.abs(f.bytesPerHour! - 10e6) < 1);
  assert.equal(f.backupAt, new Date(start + 2.5 * hour).toISOString());
  assert.equal(f.switchAt, new Date(start + 5 * hour).toISOString());
});

test("a threshold already crossed is now; no growth gives no forecast", () => {
  const now = new Date("2026-01-01T05:00:00Z");
  const flat = [0, 1].map((h) => ({ at: new Date(now.getTime() - (2 - h) * hour).toISOString(), usedBytes: 430e6 }));
  const f = forecast(flat, 500e6, T, now);
  assert.equal(f.bytesPerHour, 0);
  assert.equal(f.backupAt, now.toISOString());
  assert.equal(f.switchAt, null);
  assert.deepEqual(forecast([], 500e6, T, now), { bytesPerHour: null, backupAt: null, switchAt: null, reason: "no samples yet" });
});

test("samples spanning less than 10 minutes give no growth, and say why; from 10 minutes on they do", () => {
  const now = new Date("2026-01-01T05:00:00Z");
  const every = (seconds: number, count: number) =>
    Array.from({ length: count }, (_, i) => ({
      at: new Date(now.getTime() - (count - 1 - i) * seconds * 1000).toISOString(),
      usedBytes: 100e6 + i * 50_000,
    }));
  // Seconds after start-up: a steep line through few samples would be "tomorrow".
  const early = forecast(every(5, 12), 500e6, T, now);
  assert.equal(early.bytesPerHour, null);
  assert.equal(early.backupAt, null);
  assert.equal(early.reason, "the samples span 0 min; a forecast needs 10");
  assert.equal(forecast(every(5, 120), 500e6, T, now).reason, "the samples span 9 min; a forecast needs 10");
  const enough = forecast(every(5, 121), 500e6, T, now);
  assert.equal(enough.reason, null);
  assert.ok(Math.abs(enough.bytesPerHour! - 50_000 * 720) < 1);
});

test("phases follow the thresholds, inclusive at each", () => {
  assert.equal(phase(0.5, T), "normal");
  assert.equal(phase(0.85, T), "backup");
  assert.equal(phase(0.9, T), "critical");
});
