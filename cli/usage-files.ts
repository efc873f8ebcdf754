import { randomBytes } from "node:crypto";
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { PROJECT_NAMES, type ProjectName } from "../functions/names.ts";
import type { Status } from "../functions/status.ts";

/** Samples kept in a usage file: enough to draw the last stretch, small enough to tail. */
const RECENT_SAMPLES = 60;

/** The content of `usage-<project>.json`. */
export interface UsageFile {
  project: ProjectName;
  role: "active" | "standby";
  epoch: number;
  /** The active project's phase: the one that decides what the next tick does. */
  phase: Status["phase"];
  thresholds: Status["thresholds"];
  reachable: boolean;
  measuredAt: string | null;
  usedBytes: number | null;
  quotaBytes: number;
  usage: number | null;
  error: string | null;
  /** Oldest first. */
  samples: { at: string; usedBytes: number }[];
  writtenAt: string;
}

/**
 * One project's usage file, from a `/status` reading.
 *
 * @example
 * usageFile(status, "primary", new Date()).usage // 0.42
 */
export function usageFile(status: Status, name: ProjectName, now: Date): UsageFile {
  const p = status.projects[name];
  return {
    project: name,
    role: p.role,
    epoch: status.epoch,
    phase: status.phase,
    thresholds: status.thresholds,
    reachable: p.reachable,
    measuredAt: p.measuredAt,
    usedBytes: p.usedBytes,
    quotaBytes: p.quotaBytes,
    usage: p.usage,
    error: p.error,
    samples: status.samples[name].slice(-RECENT_SAMPLES),
    writtenAt: now.toISOString(),
  };
}

/**
 * Writes `usage-primary.json` and `usage-secondary.json` in `dir`, each to a temporary file
 * first and then renamed over the old one, so a reader sees the old file or the new one,
 * never half of one.
 *
 * @example
 * writeUsageFiles(".spillway", status);
 */
export function writeUsageFiles(dir: string, status: Status, now = new Date()): void {
  for (const name of PROJECT_NAMES) {
    const file = join(dir, `usage-${name}.json`);
    const temporary = `${file}.${randomBytes(6).toString("hex")}.tmp`;
    writeFileSync(temporary, `${JSON.stringify(usageFile(status, name, now), null, 2)}\n`);
    renameSync(temporary, file);
  }
}
