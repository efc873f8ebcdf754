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

test("a threshold already crossed says when the samples crossed it; no growth gives no forecast", () => {
  const now = new Date("2026-01-01T05:00:00Z");
  const at = (h: number) => new Date(now.getTime() - (3 - h) * hour).toISOString();
  const samples = [420e6, 430e6, 430e6, 430e6].map((usedBytes, h) => ({ at: at(h), usedBytes }));
  const f = forecast(samples, 500e6, T, now);
  assert.deepEqual(f.crossed, { backup: true, switch: false });
  assert.equal(f.backupAt, at(1));
  const flat = forecast(samples.slice(1), 500e6, T, now);
  assert.equal(flat.bytesPerHour, 0);
  assert.equal(flat.switchAt, null);
  assert.equal(forecast([], 500e6, T, now).reason, "no samples yet");
});

test("a forecast from the first minute, with the samples' span and spread; under a minute it says why", () => {
  const now = new Date("2026-01-01T05:00:00Z");
  const every = (seconds: number, count: number) =>
    Array.from({ length: count }, (_, i) => ({
      at: new Date(now.getTime() - (count - 1 - i) * seconds * 1000).toISOString(),
      usedBytes: 100e6 + i * 50_000 + (i % 2) * 1000,
    }));
  const early = forecast(every(5, 12), 500e6, T, now);
  assert.equal(early.bytesPerHour, null);
  assert.equal(early.backupAt, null);
  assert.equal(early.reason, "the samples span 55 s; a forecast needs 1 min");
  const enough = forecast(every(5, 13), 500e6, T, now);
  assert.equal(enough.reason, null);
  assert.ok(Math.abs(enough.bytesPerHour! - 50_000 * 720) < 2000, `${enough.bytesPerHour}`);
  assert.deepEqual({ count: enough.samples.count, spanMs: enough.samples.spanMs }, { count: 13, spanMs: 60_000 });
  assert.ok(enough.samples.spreadBytes! > 400 && enough.samples.spreadBytes! < 600, `spread ${enough.samples.spreadBytes}`);
});

test("phases follow the thresholds, inclusive at each", () => {
  assert.equal(phase(0.5, T), "normal");
  assert.equal(phase(0.85, T), "backup");
  assert.equal(phase(0.9, T), "critical");
});
