import assert from "node:assert/strict";
import { test } from "node:test";
import { formatForecast } from "../../cli/format.ts";
import { forecast } from "../../functions/usage.ts";

const T = { backup: 0.85, switch: 0.9 };

test("spillway status shows the forecast with its samples' count, span and spread, and a crossed threshold as crossed", () => {
  const now = new Date("2026-01-01T05:00:00Z");
  // 12 minutes of samples a minute apart, 1 MB a minute, over the backup threshold from the 11th.
  const samples = Array.from({ length: 13 }, (_, i) => ({
    at: new Date(now.getTime() - (12 - i) * 60_000).toISOString(),
    usedBytes: 415e6 + i * 1048576,
  }));
  const text = formatForecast(forecast(samples, 500e6, T, now));
  assert.match(
    text,
    /^\+60\.0 MB\/h from 13 samples over 12 min \(spread 0 B\); backup threshold crossed at 2026-01-01T04:58:00\.000Z; switch threshold at 2026-01-01T05:21:\d\d/,
  );
  assert.equal(formatForecast(forecast(samples.slice(0, 1), 500e6, T, now)), "none: the samples span 0 s; a forecast needs 1 min");
});
