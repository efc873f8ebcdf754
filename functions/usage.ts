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
 * Bytes the replicated tables of a project take, indexes and TOAST included: what a backup
 * makes the standby hold of the active's data.
 *
 * @example
 * const bytes = await replicatedBytes(projects.primary, ["public"]);
 */
export async function replicatedBytes(project: Project, schemas: string[]): Promise<number> {
  const [row] = await project.sql<{ bytes: string }[]>`
    select coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::text as bytes
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where n.nspname = any(${schemas}) and c.relkind = 'r'`;
  return Number(row!.bytes);
}

/** What `usageAfterSwitch` needs to know of the two projects. */
export interface SwitchFigures {
  targetUsedBytes: number;
  targetQuotaBytes: number;
  /** The replicated tables' bytes on each side; null for the source when it cannot be read. */
  sourceReplicatedBytes: number | null;
  targetReplicatedBytes: number;
}

/**
 * The target's usage once it holds what the source holds now: its own size plus what the
 * source's replicated tables outgrew the target's copy by. The one formula the tick's policy
 * and the switch's `TARGET_UNFIT` check share, so that a tick never chooses a switch that
 * the switch refuses. With the source unreadable, the target as it is.
 *
 * @example
 * usageAfterSwitch({ targetUsedBytes: 100, targetQuotaBytes: 1000, sourceReplicatedBytes: 300, targetReplicatedBytes: 250 }) // 0.15
 */
export function usageAfterSwitch(f: SwitchFigures): number {
  const growth = f.sourceReplicatedBytes === null ? 0 : Math.max(0, f.sourceReplicatedBytes - f.targetReplicatedBytes);
  return (f.targetUsedBytes + growth) / f.targetQuotaBytes;
}

/**
 * Reads what `usageAfterSwitch` needs of a switch (or a backup) from `source` to `target`.
 *
 * @example
 * const figures = await readSwitchFigures(projects.primary, projects.secondary, ["public"], 524288000);
 */
export async function readSwitchFigures(
  source: Project,
  target: Project,
  schemas: string[],
  targetQuotaBytes: number,
): Promise<SwitchFigures> {
  const [m, sourceReplicatedBytes, targetReplicatedBytes] = await Promise.all([
    measure(target),
    replicatedBytes(source, schemas),
    replicatedBytes(target, schemas),
  ]);
  return { targetUsedBytes: m.usedBytes, targetQuotaBytes, sourceReplicatedBytes, targetReplicatedBytes };
}

/**
 * Stores a sample in the measured project's own `spillway.usage_samples`.
 *
 * @example
 * await storeSample(project.sql, "primary", m.usedBytes, quota);
 */
export async function storeSample(sql: Sql, project: string, usedBytes: number, quotaBytes: number): Promise<void> {
  await sql.begin(
    "read write",
    (tx) => tx`insert into spillway.usage_samples (project, used_bytes, quota_bytes) values (${project}, ${usedBytes}, ${quotaBytes})`,
  );
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
  /** Least-squares growth over the samples, in bytes per hour; null when there is no forecast. */
  bytesPerHour: number | null;
  /** ISO time each threshold is crossed: now when already crossed, null when not forecast. */
  backupAt: string | null;
  switchAt: string | null;
  /** Why there is no forecast (too short a stretch of samples, say), or null. */
  reason: string | null;
}

/** The shortest stretch of samples a growth is drawn from: seconds of them say little. */
export const MIN_FORECAST_SPAN_MS = 10 * 60_000;

/**
 * Fits a line through the samples and projects when usage reaches each threshold. Samples
 * spanning less than `MIN_FORECAST_SPAN_MS` give no growth, and `reason` says why.
 *
 * @example
 * forecast(samples, 524288000, { backup: 0.85, switch: 0.9 }, new Date())
 */
export function forecast(samples: Sample[], quotaBytes: number, thresholds: { backup: number; switch: number }, now: Date): Forecast {
  const latest = samples.at(-1);
  const span = latest ? Date.parse(latest.at) - Date.parse(samples[0]!.at) : 0;
  const slope = span >= MIN_FORECAST_SPAN_MS ? growthPerMs(samples) : null;
  const at = (threshold: number): string | null => {
    if (!latest) return null;
    const target = threshold * quotaBytes;
    if (latest.usedBytes >= target) return now.toISOString();
    if (slope === null || slope <= 0) return null;
    const ms = Date.parse(latest.at) + (target - latest.usedBytes) / slope;
    return new Date(Math.max(ms, now.getTime())).toISOString();
  };
  const minutes = MIN_FORECAST_SPAN_MS / 60_000;
  const reason = !latest
    ? "no samples yet"
    : span < MIN_FORECAST_SPAN_MS
      ? `the samples span ${Math.floor(span / 60_000)} min; a forecast needs ${minutes}`
      : slope === null
        ? "the samples do not show a growth"
        : null;
  return {
    bytesPerHour: slope === null ? null : slope * 3_600_000,
    backupAt: at(thresholds.backup),
    switchAt: at(thresholds.switch),
    reason,
  };
}

function growthPerMs(samples: Sample[]): number | null {
  if (samples.length < 2) return null;
  const xs = samples.map((s) => Date.parse(s.at));
  const x0 = xs[0]!;
  const n = samples.length;
  let sx = 0,
    sy = 0,
    sxx = 0,
    sxy = 0;
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
