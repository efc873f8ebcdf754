import { SpillwayError } from "./errors.ts";

/**
 * The wall clock a switch runs under: the runtime's limit for one call (the Edge Function's
 * 150 s) and when the call began. Each share below is of the limit, so the switch keeps
 * its proportions whatever the limit.
 */
export interface SwitchClock {
  limitMs: number;
  startedAt: number;
}

/** The share of the limit by which the catch-up while apps still write ends. */
const CATCH_UP_BEFORE_FENCE = 0.35;
/** The share by which the catch-up behind the fence must end: the rest is for publishing and a margin. */
const CATCH_UP_BEHIND_FENCE = 0.7;
/** Speed assumed when no catch-up of this switch moved anything: a slow Edge apply. */
const DEFAULT_BYTES_PER_MS = 2_000;

/**
 * When the catch-up while apps still write must stop (ms since the epoch): a bit over a
 * third of the limit, so that what is left is caught up behind the fence in the same time.
 *
 * @example
 * catchUpBeforeFenceUntil({ limitMs: 150_000, startedAt: 0 }) // 52_500
 */
export function catchUpBeforeFenceUntil(clock: SwitchClock): number {
  return clock.startedAt + clock.limitMs * CATCH_UP_BEFORE_FENCE;
}

/**
 * When the catch-up behind the fence must have ended (ms since the epoch): 70 % of the
 * limit, leaving 10 % for the sequences, the reverse slot and publishing, and 20 % margin
 * (which also holds the fence's wait for transactions in flight, at most 10 s, by which
 * the switch moves this end).
 *
 * @example
 * catchUpBehindFenceUntil({ limitMs: 150_000, startedAt: 0 }) // 105_000
 */
export function catchUpBehindFenceUntil(clock: SwitchClock): number {
  return clock.startedAt + clock.limitMs * CATCH_UP_BEHIND_FENCE;
}

/** What is left to catch up when the switch would fence, and how fast this switch's catch-up went. */
export interface Backlog {
  /** WAL on the active the slot has not consumed. */
  pendingBytes: number;
  /** WAL the catch-up runs so far consumed, and in how long. */
  caughtUpBytes: number;
  caughtUpMs: number;
}

/**
 * Whether the rest of the catch-up fits before `catchUpBehindFenceUntil` at the speed this
 * switch's catch-up went (2 MB/s when it moved nothing), with the estimate.
 *
 * @example
 * fitsBehindFence({ limitMs: 150_000, startedAt: 0 }, 50_000, { pendingBytes: 10e6, caughtUpBytes: 40e6, caughtUpMs: 10_000 })
 * // { fits: true, estimateMs: 2500, leftMs: 55000, bytesPerMs: 4000 }
 */
export function fitsBehindFence(
  clock: SwitchClock,
  now: number,
  backlog: Backlog,
): { fits: boolean; estimateMs: number; leftMs: number; bytesPerMs: number } {
  const bytesPerMs =
    backlog.caughtUpBytes > 0 && backlog.caughtUpMs > 0 ? backlog.caughtUpBytes / backlog.caughtUpMs : DEFAULT_BYTES_PER_MS;
  const estimateMs = Math.ceil(backlog.pendingBytes / bytesPerMs);
  const leftMs = catchUpBehindFenceUntil(clock) - now;
  return { fits: estimateMs <= leftMs, estimateMs, leftMs, bytesPerMs };
}

/**
 * The 409 `SWITCH_TOO_LONG` of a switch that would not fit the runtime's wall clock: said
 * before anything is fenced.
 *
 * @example
 * throw switchTooLong({ limitMs: 150_000, startedAt }, fitsBehindFence(clock, Date.now(), backlog), backlog);
 */
export function switchTooLong(
  clock: SwitchClock,
  estimate: { estimateMs: number; leftMs: number; bytesPerMs: number },
  backlog: Backlog,
): SpillwayError {
  const mb = (bytes: number) => (bytes / 1_048_576).toFixed(1);
  const s = (ms: number) => (Math.max(0, ms) / 1000).toFixed(1);
  return new SpillwayError(
    "SWITCH_TOO_LONG",
    409,
    `the switch would not fit this runtime's ${s(clock.limitMs)} s wall clock: ${mb(backlog.pendingBytes)} MB of WAL are left to catch up, about ${s(estimate.estimateMs)} s at ${mb(estimate.bytesPerMs * 1000)} MB/s, with ${s(estimate.leftMs)} s left for it; nothing was fenced. Run backups (POST /force-backup) until the standby is close behind, then switch again, or switch through a Spillway server without a wall clock (spillway start)`,
    { pendingBytes: backlog.pendingBytes, estimateMs: estimate.estimateMs, leftMs: Math.max(0, estimate.leftMs), limitMs: clock.limitMs },
  );
}
