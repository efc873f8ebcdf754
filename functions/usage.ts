import type { Sql } from "postgres";
import type { Project } from "./project.ts";

/** One table among the heaviest of a database. */
export interface TableSize {
  schema: string;
  table: string;
  bytes: number;
}

/** A project's size now, as `spillway.usage` reports it. */
export interface Measurement {
  usedBytes: number;
  largestTables: TableSize[];
  readOnly: boolean;
  measuredAt: string;
}

/** A stored usage sample. */
export interface Sample {
  at: string;
  usedBytes: number;
}

/**
 * Measures a project: database size, heaviest tables, and whether the database itself is
 * set read-only (what Supabase does to a free project past its quota). Read from the
 * catalog rather than the session: behind a pooler, a session's setting may be another
 * client's leftover.
 *
 * @example
 * const m = await measure(projects.primary);
 */
export async function measure(project: Project): Promise<Measurement> {
  const [row] = await project.sql<{ used_bytes: string; largest_tables: TableSize[]; read_only: boolean; now: Date }[]>`
    select u.used_bytes, u.largest_tables, now(),
      exists (
        select 1 from pg_catalog.pg_db_role_setting s
        cross join lateral unnest(s.setconfig) as c(setting)
        where s.setdatabase = (select oid from pg_catalog.pg_database where datname = current_database())
          and s.setrole in (0, (select oid from pg_catalog.pg_roles where rolname = current_user))
          and lower(c.setting) in ('default_transaction_read_only=on', 'default_transaction_read_only=true', 'default_transaction_read_only=1')
      ) as read_only
    from spillway.usage u`;
  if (!row) throw new Error(`project ${project.name} has no spillway.project row yet`);
  return {
    usedBytes: Number(row.used_bytes),
    largestTables: row.largest_tables.map((t) => ({ schema: t.schema, table: t.table, bytes: Number(t.bytes) })),
    readOnly: row.read_only,
    measuredAt: row.now.toISOString(),
  };
}

/**
 * Stores a sample in the measured project's own `spillway.usage_samples`.
 *
 * @example
 * await storeSample(project.sql, "primary", m.usedBytes, quota);
 */
export async function storeSample(sql: Sql, project: string, usedBytes: number, quotaBytes: number): Promise<void> {
  await sql.begin("read write", (tx) => tx`insert into spillway.usage_samples (project, used_bytes, quota_bytes) values (${project}, ${usedBytes}, ${quotaBytes})`);
}

/**
 * The most recent samples of a project, oldest first.
 *
 * @example
 * const history = await readSamples(project.sql, "primary", 200);
 */
export async function readSamples(sql: Sql, project: string, limit: number): Promise<Sample[]> {
  const rows = await sql<{ at: Date; used_bytes: string }[]>`
    select at, used_bytes from spillway.usage_samples where project = ${project} order by at desc limit ${limit}`;
  return rows.reverse().map((r) => ({ at: r.at.toISOString(), usedBytes: Number(r.used_bytes) }));
}

/** Growth and the forecast of when each threshold is crossed. */
export interface Forecast {
  /** Least-squares growth over the samples, in bytes per hour; null with fewer than two samples. */
  bytesPerHour: number | null;
  /** ISO time each threshold is crossed: now when already crossed, null when usage is not growing. */
  backupAt: string | null;
  switchAt: string | null;
}

/**
 * Fits a line through the samples and projects when usage reaches each threshold.
 *
 * @example
 * forecast(samples, 524288000, { backup: 0.85, switch: 0.9 }, new Date())
 */
export function forecast(samples: Sample[], quotaBytes: number, thresholds: { backup: number; switch: number }, now: Date): Forecast {
  const slope = growthPerMs(samples);
  const latest = samples.at(-1);
  const at = (threshold: number): string | null => {
    if (!latest) return null;
    const target = threshold * quotaBytes;
    if (latest.usedBytes >= target) return now.toISOString();
    if (slope === null || slope <= 0) return null;
    const ms = Date.parse(latest.at) + (target - latest.usedBytes) / slope;
    return new Date(Math.max(ms, now.getTime())).toISOString();
  };
  return {
    bytesPerHour: slope === null ? null : slope * 3_600_000,
    backupAt: at(thresholds.backup),
    switchAt: at(thresholds.switch),
  };
}

function growthPerMs(samples: Sample[]): number | null {
  if (samples.length < 2) return null;
  const xs = samples.map((s) => Date.parse(s.at));
  const x0 = xs[0]!;
  const n = samples.length;
  let sx = 0, sy = 0, sxx = 0, sxy = 0;
  samples.forEach((s, i) => {
    const x = xs[i]! - x0;
    sx += x;
    sy += s.usedBytes;
    sxx += x * x;
    sxy += x * s.usedBytes;
  });
  const denominator = n * sxx - sx * sx;
  if (denominator === 0) return null;
  return (n * sxy - sx * sy) / denominator;
}

/**
 * The phase of the active project: `normal` below the backup threshold, `backup` from it,
 * `critical` from the switch threshold.
 *
 * @example
 * phase(0.87, { backup: 0.85, switch: 0.9 }) // "backup"
 */
export function phase(usage: number, thresholds: { backup: number; switch: number }): "normal" | "backup" | "critical" {
  if (usage >= thresholds.switch) return "critical";
  if (usage >= thresholds.backup) return "backup";
  return "normal";
}
