import type { Sql } from "postgres";
import { PG } from "./errors.ts";
import type { Db, Project } from "./project.ts";
import { carriedSchemas } from "./schemas.ts";

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

/** How long `/status` waits for a table a running load holds, before it measures without the tables. */
export const STATUS_LOCK_WAIT_MS = 1000;

/**
 * Measures a project: database size, heaviest tables, and whether the database itself is
 * set read-only (what Supabase does to a free project past its quota). Read from the
 * catalog rather than the session: behind a pooler, a session's setting may be another
 * client's leftover. With `lockWaitMs`, a table a full backup's load holds is waited for no
 * longer than that: the size is then measured without the heaviest tables, so that
 * `/status` still answers (with the run's progress) while a copy loads.
 *
 * @example
 * const m = await measure(projects.primary);
 */
export async function measure(project: Project, options: { lockWaitMs?: number } = {}): Promise<Measurement> {
  try {
    return await withLockWait(project.sql, options.lockWaitMs, (db) => readMeasurement(db, project.name, true));
  } catch (e) {
    if ((e as { code?: string }).code !== PG.lockNotAvailable) throw e;
    return await readMeasurement(project.sql, project.name, false);
  }
}

async function readMeasurement(db: Db, name: string, withTables: boolean): Promise<Measurement> {
  // Without the tables, the view is not read at all: its heaviest tables' sizes lock them.
  const [row] = await db<{ used_bytes: string; largest_tables: TableSize[]; read_only: boolean; now: Date }[]>`
    select ${withTables ? db`u.used_bytes, u.largest_tables` : db`pg_catalog.pg_database_size(pg_catalog.current_database()) as used_bytes, '[]'::jsonb as largest_tables`}, now(),
      exists (
        select 1 from pg_catalog.pg_db_role_setting s
        cross join lateral unnest(s.setconfig) as c(setting)
        where s.setdatabase = (select oid from pg_catalog.pg_database where datname = current_database())
          and s.setrole in (0, (select oid from pg_catalog.pg_roles where rolname = current_user))
          and lower(c.setting) in ('default_transaction_read_only=on', 'default_transaction_read_only=true', 'default_transaction_read_only=1')
      ) as read_only
    from ${withTables ? db`spillway.usage u` : db`spillway.project p`}`;
  if (!row) throw new Error(`project ${name} has no spillway.project row yet`);
  return {
    usedBytes: Number(row.used_bytes),
    largestTables: row.largest_tables.map((t) => ({ schema: t.schema, table: t.table, bytes: Number(t.bytes) })),
    readOnly: row.read_only,
    measuredAt: row.now.toISOString(),
  };
}

/**
 * Runs `read` in a read-only transaction whose lock waits end after `ms` with 55P03
 * (`lock_not_available`), or on the connection as is when `ms` is undefined.
 *
 * @example
 * const n = await withLockWait(project.sql, 1000, (db) => userCount(db, true));
 */
export async function withLockWait<T>(sql: Sql, ms: number | undefined, read: (db: Db) => Promise<T>): Promise<T> {
  if (ms === undefined) return await read(sql);
  return (await sql.begin("read only", async (tx) => {
    await tx`select pg_catalog.set_config('lock_timeout', ${`${ms}ms`}, true)`;
    return await read(tx);
  })) as T;
}

/**
 * Bytes the replicated tables of a project take, indexes and TOAST included: what a backup
 * makes the standby hold of the active's data.
 *
 * @example
 * const bytes = await replicatedBytes(projects.primary, ["public"]);
 */
export async function replicatedBytes(project: Project, schemas: string[], lockWaitMs?: number): Promise<number> {
  return await withLockWait(project.sql, lockWaitMs, async (db) => {
    const [row] = await db<{ bytes: string }[]>`
      select coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::text as bytes
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = any(${schemas}) and c.relkind = 'r'`;
    return Number(row!.bytes);
  });
}

/**
 * How `freshCopyBytes` estimates what a fresh copy of the active's tables would hold, as
 * `/status` states it in `afterSwitch.basis`.
 */
export const FRESH_COPY_BASIS =
  "the active's replicated tables with their indexes and TOAST (pg_total_relation_size), each scaled by its live rows' share of live and dead rows (n_live_tup / (n_live_tup + n_dead_tup)): the dead rows a fresh copy leaves behind";

/**
 * Bytes the active's replicated tables would take in a fresh copy: each table's size,
 * indexes and TOAST included, without the share its dead rows take (a copy writes only the
 * live ones). Tables the statistics have not counted yet count whole.
 *
 * @example
 * const bytes = await freshCopyBytes(projects.primary, ["public"]);
 */
export async function freshCopyBytes(project: Project, schemas: string[]): Promise<number> {
  const [row] = await project.sql<{ bytes: string }[]>`
    select coalesce(sum(pg_catalog.pg_total_relation_size(c.oid) * case
      when coalesce(s.n_live_tup + s.n_dead_tup, 0) > 0 then s.n_live_tup::float8 / (s.n_live_tup + s.n_dead_tup) else 1 end), 0)::int8::text as bytes
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    left join pg_catalog.pg_stat_user_tables s on s.relid = c.oid
    where n.nspname = any(${schemas}) and c.relkind = 'r'`;
  return Number(row!.bytes);
}

/** What `usageAfterSwitch` needs to know of the two projects. */
export interface SwitchFigures {
  targetUsedBytes: number;
  targetQuotaBytes: number;
  /** The source's replicated tables as a fresh copy would hold them (`freshCopyBytes`); null when they cannot be read. */
  sourceCopyBytes: number | null;
  /** The bytes the target's copy of the replicated tables takes now. */
  targetReplicatedBytes: number;
}

/**
 * The target's bytes once it holds what the source holds now: its own size plus what the
 * source's tables, as a fresh copy holds them, outgrew the target's copy by. The one formula
 * the tick's policy, the switch's `TARGET_UNFIT` check and `/status`'s `afterSwitch` share,
 * so that a tick never chooses a switch that the switch refuses. With the source
 * unreadable, the target as it is.
 *
 * @example
 * bytesAfterSwitch({ targetUsedBytes: 100, targetQuotaBytes: 1000, sourceCopyBytes: 300, targetReplicatedBytes: 250 }) // 150
 */
export function bytesAfterSwitch(f: SwitchFigures): number {
  const growth = f.sourceCopyBytes === null ? 0 : Math.max(0, f.sourceCopyBytes - f.targetReplicatedBytes);
  return f.targetUsedBytes + growth;
}

/**
 * `bytesAfterSwitch` as a share of the target's quota.
 *
 * @example
 * usageAfterSwitch({ targetUsedBytes: 100, targetQuotaBytes: 1000, sourceCopyBytes: 300, targetReplicatedBytes: 250 }) // 0.15
 */
export function usageAfterSwitch(f: SwitchFigures): number {
  return bytesAfterSwitch(f) / f.targetQuotaBytes;
}

/**
 * Reads the figures `usageAfterSwitch` needs for a switch from `source` to `target`; the
 * target's size comes from `targetUsedBytes` when already measured. `lockWaitMs` bounds the
 * wait for the target's tables (a load holding them fails the read with 55P03).
 *
 * @example
 * const after = usageAfterSwitch(await switchFigures(projects.primary, projects.secondary, settings));
 */
export async function switchFigures(
  source: Project,
  target: Project,
  settings: { schemas: string[] | null; quotaBytes: Record<string, number> },
  targetUsedBytes?: number,
  lockWaitMs?: number,
): Promise<SwitchFigures> {
  // The active's carried schemas on both sides: what the standby holds besides stays after a switch.
  const schemas = await carriedSchemas(source.sql, settings.schemas).catch(() => null);
  const [used, sourceCopyBytes, targetReplicatedBytes] = await Promise.all([
    targetUsedBytes ?? measure(target).then((m) => m.usedBytes),
    schemas ? freshCopyBytes(source, schemas).catch(() => null) : null,
    replicatedBytes(target, schemas ?? (await carriedSchemas(target.sql, settings.schemas)), lockWaitMs),
  ]);
  return { targetUsedBytes: used, targetQuotaBytes: settings.quotaBytes[target.name]!, sourceCopyBytes, targetReplicatedBytes };
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
  /** ISO time each threshold is crossed (see `crossed`), null when not forecast. */
  backupAt: string | null;
  switchAt: string | null;
  /** A threshold the latest sample is already at or over: its time is when the samples crossed it. */
  crossed: { backup: boolean; switch: boolean };
  /** The samples the line is drawn through: how many, the time they span, and how far they scatter around it (bytes, root mean square). */
  samples: { count: number; spanMs: number; spreadBytes: number | null };
  /** Why there is no forecast (too short a stretch of samples, say), or null. */
  reason: string | null;
}

/** The shortest stretch of samples a growth is drawn from: seconds of them say little. */
export const MIN_FORECAST_SPAN_MS = 60_000;

/**
 * Fits a line through the samples and projects when usage reaches each threshold; a
 * threshold the latest sample is at or over is given the time the samples crossed it.
 * Samples spanning less than `MIN_FORECAST_SPAN_MS` give no growth, and `reason` says why;
 * from then on the fit comes with its span and spread, for the reader to weigh.
 *
 * @example
 * forecast(samples, 524288000, { backup: 0.85, switch: 0.9 }, new Date())
 */
export function forecast(samples: Sample[], quotaBytes: number, thresholds: { backup: number; switch: number }, now: Date): Forecast {
  const latest = samples.at(-1);
  const spanMs = latest ? Date.parse(latest.at) - Date.parse(samples[0]!.at) : 0;
  const fit = spanMs >= MIN_FORECAST_SPAN_MS ? fitLine(samples) : null;
  const slope = fit?.slope ?? null;
  const crossedAt = (threshold: number): string | null => {
    const target = threshold * quotaBytes;
    if (!latest || latest.usedBytes < target) return null;
    let i = samples.length - 1;
    while (i > 0 && samples[i - 1]!.usedBytes >= target) i--;
    return samples[i]!.at;
  };
  const at = (threshold: number): string | null => {
    if (!latest) return null;
    const crossed = crossedAt(threshold);
    if (crossed) return crossed;
    if (slope === null || slope <= 0) return null;
    const ms = Date.parse(latest.at) + (threshold * quotaBytes - latest.usedBytes) / slope;
    return new Date(Math.max(ms, now.getTime())).toISOString();
  };
  const reason = !latest
    ? "no samples yet"
    : spanMs < MIN_FORECAST_SPAN_MS
      ? `the samples span ${Math.floor(spanMs / 1000)} s; a forecast needs ${MIN_FORECAST_SPAN_MS / 60_000} min`
      : slope === null
        ? "the samples do not show a growth"
        : null;
  return {
    bytesPerHour: slope === null ? null : slope * 3_600_000,
    backupAt: at(thresholds.backup),
    switchAt: at(thresholds.switch),
    crossed: { backup: crossedAt(thresholds.backup) !== null, switch: crossedAt(thresholds.switch) !== null },
    samples: { count: samples.length, spanMs, spreadBytes: fit ? fit.spread : null },
    reason,
  };
}

function fitLine(samples: Sample[]): { slope: number; spread: number } | null {
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
  const slope = (n * sxy - sx * sy) / denominator;
  const intercept = (sy - slope * sx) / n;
  const squares = samples.reduce((sum, s, i) => sum + (s.usedBytes - (intercept + slope * (xs[i]! - x0))) ** 2, 0);
  return { slope, spread: Math.sqrt(squares / n) };
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
