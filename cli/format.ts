import type { SpillwayEvent } from "../functions/events.ts";
import type { Run } from "../functions/runs.ts";
import type { Status } from "../functions/status.ts";
import type { VerifyResult } from "../functions/verify.ts";

/**
 * Bytes as a short human figure.
 *
 * @example
 * formatBytes(1536) // "1.5 KB"
 */
export function formatBytes(bytes: number | null): string {
  if (bytes === null) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/**
 * `spillway status` for people.
 *
 * @example
 * console.log(formatStatus(status));
 */
export function formatStatus(s: Status): string {
  const lines = [
    `active: ${s.active} (epoch ${s.epoch})   phase: ${s.phase}   thresholds: backup ${pct(s.thresholds.backup)}, switch ${pct(s.thresholds.switch)}`,
  ];
  for (const [name, p] of Object.entries(s.projects)) {
    const state = p.reachable
      ? `${formatBytes(p.usedBytes)} / ${formatBytes(p.quotaBytes)}  ${pct(p.usage)}${p.readOnly ? "  read-only" : ""}${p.fenced ? "  fenced" : ""}`
      : `unreachable: ${p.error}`;
    lines.push(`  ${name.padEnd(10)} ${p.role.toUpperCase().padEnd(8)} ${state}`);
  }
  const b = s.lastBackup;
  lines.push(
    b
      ? `last backup: ${b.kind} ${b.status} at ${b.startedAt}, ${b.rows} rows, ${formatBytes(b.bytes)}${b.durationMs === null ? "" : `, ${b.durationMs} ms`}${b.error ? ` (${b.error})` : ""}`
      : "last backup: none yet",
  );
  if (s.standbyLagSeconds !== null) lines.push(`standby lag: ${s.standbyLagSeconds} s`);
  return lines.join("\n");
}

/**
 * `spillway logs` for people, oldest last.
 *
 * @example
 * console.log(formatEvents(events));
 */
export function formatEvents(events: SpillwayEvent[]): string {
  return events.map((e) => `${e.at}  ${e.level.toUpperCase().padEnd(5)} ${e.kind.padEnd(22)} ${e.project ?? "-"}  ${e.message}`).join("\n");
}

function pct(x: number | null): string {
  return x === null ? "?" : `${(x * 100).toFixed(1)} %`;
}

/**
 * One run for people.
 *
 * @example
 * console.log(formatRun(run));
 */
export function formatRun(r: Run): string {
  return `${r.kind} backup ${r.status}: ${r.tables} tables, ${r.rows} rows, ${formatBytes(r.bytes)}${r.durationMs === null ? "" : ` in ${(r.durationMs / 1000).toFixed(1)} s`}${r.error ? ` (${r.error})` : ""}`;
}

/**
 * `spillway verify` for people.
 *
 * @example
 * console.log(formatVerify(result));
 */
export function formatVerify(v: VerifyResult): string {
  const lines = v.tables.map(
    (t) => `  ${t.equal ? "ok  " : "DIFF"} ${t.table.padEnd(40)} ${t.activeRows} rows on ${v.active}, ${t.standbyRows} on ${v.standby}`,
  );
  lines.push(
    v.ok ? `the standby matches the active (${v.tables.length} tables)` : `the standby differs in ${v.mismatches.length} table(s)`,
  );
  return lines.join("\n");
}
