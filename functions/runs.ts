import type { Sql as Pool } from "postgres";
import type { ProjectName } from "./names.ts";
import type { Project, Db as Sql } from "./project.ts";

/** Where a running copy is, as it reports itself. */
export interface Progress {
  phase: "snapshot" | "load" | "catch-up" | "indexes" | "verify" | "commit";
  table: string | null;
  tablesDone: number;
  tablesTotal: number;
  rows: number;
  bytes: number;
}

/**
 * A run's `progress` as stored: empty until the run first reports, its last `Progress`
 * while it runs, `done` with the totals once it succeeded.
 */
export interface RunProgress {
  phase?: Progress["phase"] | "done";
  table?: string | null;
  tablesDone?: number;
  tablesTotal?: number;
  rows?: number;
  bytes?: number;
}

/** What a run records beyond its figures; each kind of run fills in its own. */
export interface RunDetails {
  /** Why this kind of backup (the plan's reason). */
  reason?: string;
  verify?: boolean;
  /** A full copy built over several calls. */
  staged?: boolean;
  /** A staged copy that stopped at its budget and continues on the next call. */
  continues?: boolean;
  /** Row changes the active's statistics had counted at the copied moment (the standby lag compares them); null when changes were left. */
  changeCounter?: string | null;
  /** The change capture slot the copy builds on. */
  slot?: string;
  verified?: boolean;
  perTable?: { table: string; rows: number; bytes: number }[];
  /** A full copy's connections to the active that rows came through at once (fdw). */
  lanes?: number;
  /** The commit position in the active's change stream the copy stands at. */
  appliedLsn?: string | null;
  transactions?: number;
  /** Changes were left for the next call (the budget ran out). */
  more?: boolean;
  /** An incremental run's apply alone (peek, write, commit, advance), in milliseconds. */
  applyMs?: number;
  /** An incremental run's WAL skipped to its mark (nothing in it to carry), in bytes. */
  skippedBytes?: number;
  /** The error's details of a failed run. */
  failure?: unknown;
  /** An incremental run of the standby following the active, told in a summary rather than by its own events. */
  follows?: boolean;
  /** Why Auth's users were not carried by this run (the standby's Auth cannot hold the active's yet); absent when they were. */
  authNotCarried?: string[];
  /** `switch`: recorded by a switch, which left both projects holding the same data. */
  origin?: "switch";
}

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
  progress: RunProgress;
  details: RunDetails;
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
  progress: RunProgress;
  strategy: Run["strategy"];
  snapshot_at: Date | null;
  details: RunDetails;
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

/**
 * The speed of the last one-shot full copy at least `minBytes` large, in bytes a second, or
 * null before one (smaller copies are mostly fixed costs and say little about the speed).
 *
 * @example
 * const speed = await lastCopySpeed(target.sql, 32 * 1024 * 1024);
 */
export async function lastCopySpeed(sql: Sql, minBytes: number): Promise<number | null> {
  const [last] = await sql<{ bytes: string; duration_ms: string }[]>`
    select bytes::text, duration_ms::text from spillway.runs
    where kind = 'full' and status = 'succeeded' and not coalesce((details->>'staged')::boolean, false) and bytes >= ${minBytes} and duration_ms > 0
    order by started_at desc limit 1`;
  return last ? Number(last.bytes) / (Number(last.duration_ms) / 1000) : null;
}

/** What the standby following the active did over a stretch of time. */
export interface Following {
  runs: number;
  rows: number;
  firstAt: string | null;
}

/**
 * The following runs (`details.follows`) that succeeded after `since` (all when null).
 *
 * @example
 * const f = await followingSince(projects.secondary.sql, lastSummaryAt);
 */
export async function followingSince(sql: Sql, since: string | null): Promise<Following> {
  const [row] = await sql<{ runs: number; rows: string; first_at: Date | null }[]>`
    select count(*)::int as runs, coalesce(sum(rows), 0)::text as rows, min(started_at) as first_at from spillway.runs
    where status = 'succeeded' and (details->>'follows')::boolean and (${since}::timestamptz is null or finished_at > ${since}::timestamptz)`;
  return { runs: row!.runs, rows: Number(row!.rows), firstAt: row!.first_at?.toISOString() ?? null };
}

/**
 * Marks as failed every run still `running` on the standby but `keep` (a staged copy's
 * run, which the next call continues): a process killed mid-run leaves its row so.
 *
 * @example
 * await target.sql.begin("read write", (tx) => failInterrupted(tx, staging?.runId ?? null));
 */
export async function failInterrupted(tx: Sql, keep: string | null): Promise<void> {
  await tx`
    update spillway.runs set status = 'failed', finished_at = now(), error = 'interrupted before it could finish'
    where status = 'running' and id is distinct from ${keep}::uuid`;
}

/** A run as it starts. */
export interface RunStart {
  id: string;
  kind: Run["kind"];
  source: ProjectName;
  target: ProjectName;
  strategy: "copy" | "fdw";
  details: RunDetails;
}

/**
 * Records a run as `running`, in the standby's transaction `tx` (with whatever else must
 * name it, such as a staged copy's row).
 *
 * @example
 * await startRun(tx, { id, kind: "full", source: "primary", target: "secondary", strategy: "copy", details: { reason } });
 */
export async function startRun(tx: Sql, run: RunStart): Promise<void> {
  await tx`
    insert into spillway.runs (id, kind, status, source, target, strategy, details)
    values (${run.id}, ${run.kind}, 'running', ${run.source}, ${run.target}, ${run.strategy}, ${tx.json(run.details as never)})`;
}

/** A succeeded run's figures. */
export interface RunFigures {
  tables: number;
  rows: number;
  bytes: number;
  snapshotAt: string | null;
  details: RunDetails;
}

/**
 * Records a run's success inside the transaction that publishes what it copied, so that the
 * run and the data commit together or not at all.
 *
 * @example
 * await finishRun(tx, id, { tables: 3, rows: 120, bytes: 8192, snapshotAt, details: { changeCounter, slot } });
 */
export async function finishRun(tx: Sql, id: string, f: RunFigures): Promise<Run> {
  const progress: RunProgress = { phase: "done", tablesDone: f.tables, tablesTotal: f.tables, rows: f.rows, bytes: f.bytes };
  const [row] = await tx<RunRow[]>`
    update spillway.runs set status = 'succeeded', finished_at = clock_timestamp(), tables = ${f.tables}, rows = ${f.rows},
      bytes = ${f.bytes}, duration_ms = (extract(epoch from clock_timestamp() - started_at) * 1000)::int8, snapshot_at = ${f.snapshotAt},
      progress = ${tx.json(progress as never)},
      details = details || ${tx.json(f.details as never)}
    where id = ${id}
    returning *`;
  return toRun(row!);
}

/**
 * Adds to a run's details while it is still running (a staged copy that continues).
 *
 * @example
 * await noteRun(target.sql, id, { continues: true });
 */
export async function noteRun(sql: Pool, id: string, details: RunDetails): Promise<void> {
  await sql.begin("read write", (tx) => tx`update spillway.runs set details = details || ${tx.json(details as never)} where id = ${id}`);
}

/**
 * Records a run's failure with its (redacted) message and the error's details.
 *
 * @example
 * await failRun(target.sql, id, { durationMs: 1200, message: "connection refused", failure: null });
 */
export async function failRun(sql: Pool, id: string, f: { durationMs: number; message: string; failure: unknown }): Promise<void> {
  const details: RunDetails = f.failure ? { failure: f.failure } : {};
  await sql.begin(
    "read write",
    (tx) => tx`
      update spillway.runs set status = 'failed', finished_at = now(), duration_ms = ${f.durationMs}, error = ${f.message},
        details = details || ${tx.json(details as never)}
      where id = ${id}`,
  );
}

/**
 * Records a full copy that needed no copying: a switch left the old active holding the same
 * data as the new one, so that a failback needs no backup first.
 *
 * @example
 * await recordSameData(projects.primary.sql, { source: "secondary", target: "primary", reason, changeCounter });
 */
export async function recordSameData(
  sql: Pool,
  r: { source: ProjectName; target: ProjectName; reason: string; changeCounter: string },
): Promise<void> {
  const details: RunDetails = { reason: r.reason, origin: "switch", changeCounter: r.changeCounter };
  await sql.begin(
    "read write",
    (tx) => tx`
    insert into spillway.runs (id, kind, status, source, target, started_at, finished_at, duration_ms, snapshot_at, strategy, details)
    values (${crypto.randomUUID()}, 'full', 'succeeded', ${r.source}, ${r.target}, now(), now(), 0, now(), null, ${tx.json(details as never)})`,
  );
}

/** Reports a running copy's progress; `flush` waits for what was reported to be written. */
export interface ProgressWriter {
  update(progress: Progress): void;
  flush(): Promise<void>;
}

/**
 * Writes a run's progress to its row on its own connection, at most once a second while a
 * phase loads (at once when the phase changes), so that `/status` shows a long copy moving.
 *
 * @example
 * const progress = progressWriter(target, id);
 * progress.update({ phase: "load", table: "public.todos", tablesDone: 0, tablesTotal: 3, rows: 0, bytes: 0 });
 * await progress.flush();
 */
export function progressWriter(target: Project, id: string): ProgressWriter {
  let latest: Progress | null = null;
  let lastWrite = 0;
  let chain: Promise<unknown> = Promise.resolve();
  const write = (p: Progress) => {
    chain = chain
      .then(() =>
        target.sql.begin(
          "read write",
          (tx) =>
            tx`update spillway.runs set progress = ${tx.json({ ...p })}, tables = ${p.tablesDone}, rows = ${p.rows}, bytes = ${p.bytes} where id = ${id} and status = 'running'`,
        ),
      )
      .catch(() => undefined);
  };
  return {
    update(p: Progress) {
      latest = p;
      const now = Date.now();
      if (now - lastWrite >= 1000 || p.phase !== "load") {
        lastWrite = now;
        write(p);
      }
    },
    async flush() {
      if (latest) write(latest);
      await chain;
    },
  };
}
