import type { SpillwayEvent } from "../functions/events.ts";
import type { Run } from "../functions/runs.ts";
import type { Status } from "../functions/status.ts";
import type { VerifyResult } from "../functions/verify.ts";
import type { DoctorReport } from "./doctor.ts";

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
  const lines = [`health: ${s.health.state.toUpperCase()}`, ...s.health.reasons.map((r) => `  - ${r.message}`)];
  lines.push(
    `active: ${s.active} (epoch ${s.epoch})   phase: ${s.phase}   thresholds: backup ${pct(s.thresholds.backup)}, switch ${pct(s.thresholds.switch)}`,
  );
  for (const [name, p] of Object.entries(s.projects)) {
    const state = p.reachable
      ? `${formatBytes(p.usedBytes)} / ${formatBytes(p.quotaBytes)}  ${pct(p.usage)}${p.readOnly ? "  read-only" : ""}${p.fenced ? "  fenced" : ""}`
      : `unreachable: ${p.error}`;
    lines.push(`  ${name.padEnd(10)} ${p.role.toUpperCase().padEnd(8)} ${state}`);
  }
  const a = s.afterSwitch;
  lines.push(
    a
      ? `after a switch: ${a.project} at ${pct(a.usage)}, ${a.headroomBytes >= 0 ? `${formatBytes(a.headroomBytes)} below` : `${formatBytes(-a.headroomBytes)} over`} its switch threshold${a.days === null ? "" : `, ${formatDays(a.days)} at the current growth`}`
      : "after a switch: unknown (a project cannot be read)",
  );
  lines.push(`forecast: ${formatForecast(s.forecast)}`);
  const b = s.lastBackup;
  lines.push(
    !b
      ? "last backup: none yet"
      : b.details?.origin === "switch"
        ? `last backup: in step at the switch (${b.finishedAt}): ${b.target} held the same data as ${b.source}; no backup has run since`
        : `last backup: ${b.kind} ${b.status} at ${b.startedAt}, ${b.rows} rows, ${formatBytes(b.bytes)}${b.durationMs === null ? "" : `, ${b.durationMs} ms`}${b.error ? ` (${b.error})` : ""}`,
  );
  if (s.standbyLagSeconds !== null) lines.push(`standby lag: ${s.standbyLagSeconds} s`);
  return lines.join("\n");
}

/**
 * A forecast for people: growth with the samples it is drawn from, and when each threshold
 * is (or was) crossed.
 *
 * @example
 * formatForecast(status.forecast) // "+1.2 MB/h from 14 samples over 12 min (spread 3.0 KB); backup threshold in 2.5 days, …"
 */
export function formatForecast(f: Status["forecast"]): string {
  const from = `${f.samples.count} samples over ${formatSpan(f.samples.spanMs)}`;
  if (f.bytesPerHour === null && !f.crossed.backup) return `none: ${f.reason}`;
  const growth =
    f.bytesPerHour === null
      ? `no growth yet (${f.reason})`
      : `${f.bytesPerHour < 0 ? "-" : "+"}${formatBytes(Math.abs(f.bytesPerHour))}/h from ${from}${f.samples.spreadBytes === null ? "" : ` (spread ${formatBytes(Math.round(f.samples.spreadBytes))})`}`;
  const at = (name: string, iso: string | null, crossed: boolean) =>
    crossed ? `${name} threshold crossed at ${iso}` : iso ? `${name} threshold at ${iso}` : `${name} threshold not forecast`;
  return `${growth}; ${at("backup", f.backupAt, f.crossed.backup)}; ${at("switch", f.switchAt, f.crossed.switch)}`;
}

function formatSpan(ms: number): string {
  return ms < 120_000
    ? `${Math.round(ms / 1000)} s`
    : ms < 7_200_000
      ? `${Math.round(ms / 60_000)} min`
      : `${(ms / 3_600_000).toFixed(1)} h`;
}

function formatDays(days: number): string {
  return days < 1 ? `about ${Math.max(1, Math.round(days * 24))} h` : `about ${days.toFixed(1)} days`;
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

/** What `GET /config` answers. */
export interface ConfigView {
  settings: Record<string, unknown>;
  projects: Record<string, { host: string; database: string }>;
  alerts: { webhookHost: string; signed: boolean } | null;
}

/**
 * `spillway config` for people: one `key = value` line per setting, as `config set` takes it.
 *
 * @example
 * console.log(formatConfig(view));
 */
export function formatConfig(c: ConfigView): string {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(c.settings)) {
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      for (const [inner, v] of Object.entries(value)) lines.push(`${key}.${inner} = ${JSON.stringify(v)}${bytesNote(key, v)}`);
    } else lines.push(`${key} = ${JSON.stringify(value)}`);
  }
  for (const [name, p] of Object.entries(c.projects)) lines.push(`# ${name}: ${p.host}/${p.database}`);
  lines.push(c.alerts ? `# alerts: to ${c.alerts.webhookHost}${c.alerts.signed ? ", signed" : ""}` : "# alerts: none");
  return lines.join("\n");
}

function bytesNote(key: string, v: unknown): string {
  return key === "quotaBytes" && typeof v === "number" ? `  (${formatBytes(v)})` : "";
}

/**
 * `spillway doctor` for people: each project's checks, one line each, and what to do.
 *
 * @example
 * console.log(formatDoctor(report));
 */
export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = [];
  for (const [name, p] of Object.entries(r.projects)) {
    lines.push(`${name} (${p.role})`);
    for (const c of p.checks) lines.push(`  ${c.ok ? "ok     " : "MISSING"} ${c.name.padEnd(11)} ${c.detail}`);
  }
  lines.push(r.ok ? "everything is in place" : "something is missing: see MISSING above");
  return lines.join("\n");
}
