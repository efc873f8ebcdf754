import type { Db as Sql } from "./project.ts";

/** One backup, as `Run` in the HTTP contract. */
export interface Run {
  id: string;
  kind: "full" | "incremental";
  status: "running" | "succeeded" | "failed";
  source: string;
  target: string;
  startedAt: string;
  finishedAt: string | null;
  tables: number;
  rows: number;
  bytes: number;
  durationMs: number | null;
  error: string | null;
  strategy: "copy" | "fdw" | null;
  /** The active's point in time this run copied, once it succeeded. */
  snapshotAt: string | null;
  progress: Record<string, unknown>;
  details: Record<string, unknown>;
}

/** A `spillway.runs` row as postgres.js returns it. */
export interface RunRow {
  id: string;
  kind: Run["kind"];
  status: Run["status"];
  source: string;
  target: string;
  started_at: Date;
  finished_at: Date | null;
  tables: number;
  rows: string;
  bytes: string;
  duration_ms: string | null;
  error: string | null;
  progress: Record<string, unknown>;
  strategy: Run["strategy"];
  snapshot_at: Date | null;
  details: Record<string, unknown>;
}

/** Maps a `spillway.runs` row. */
export function toRun(r: RunRow): Run {
  return {
    id: r.id,
    kind: r.kind,
    status: r.status,
    source: r.source,
    target: r.target,
    startedAt: r.started_at.toISOString(),
    finishedAt: r.finished_at?.toISOString() ?? null,
    tables: r.tables,
    rows: Number(r.rows),
    bytes: Number(r.bytes),
    durationMs: r.duration_ms === null ? null : Number(r.duration_ms),
    error: r.error,
    progress: r.progress,
    strategy: r.strategy,
    snapshotAt: r.snapshot_at?.toISOString() ?? null,
    details: r.details,
  };
}

/**
 * The latest run into a project (its `spillway.runs`, where runs are kept by their target).
 *
 * @example
 * const last = await latestRun(projects.secondary.sql);
 */
export async function latestRun(sql: Sql, status?: Run["status"]): Promise<Run | null> {
  const [row] = await sql<RunRow[]>`
    select * from spillway.runs
    where (${status ?? null}::text is null or status = ${status ?? null})
    order by started_at desc limit 1`;
  return row ? toRun(row) : null;
}

/**
 * One run by id.
 *
 * @example
 * const run = await readRun(projects.secondary.sql, id);
 */
export async function readRun(sql: Sql, id: string): Promise<Run | null> {
  const [row] = await sql<RunRow[]>`select * from spillway.runs where id = ${id}`;
  return row ? toRun(row) : null;
}
