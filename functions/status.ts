import { readActivity } from "./activity.ts";
import { userCount } from "./backup/auth.ts";
import { readPosition } from "./backup/position.ts";
import { slotRetainedBytes } from "./backup/source.ts";
import { type DivergentStatus, readDivergent } from "./divergent.ts";
import { describeError, PG } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { heldFailovers } from "./failover-hold.ts";
import { type AfterSwitch, assessHealth, type Health } from "./health.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { type Db, onBoth, type Project, type Projects } from "./project.ts";
import { latestRun, type Run } from "./runs.ts";
import { carriedSchemas } from "./schemas.ts";
import { readSettings, type Settings } from "./settings.ts";
import { readStates } from "./state.ts";
import {
  bytesAfterSwitch,
  type Forecast,
  FRESH_COPY_BASIS,
  forecast,
  measure,
  phase,
  readSamples,
  type Sample,
  STATUS_LOCK_WAIT_MS,
  switchFigures,
  type TableSize,
  withLockWait,
} from "./usage.ts";

/** One project in `GET /status`. */
export interface ProjectStatus {
  role: "active" | "standby";
  reachable: boolean;
  usedBytes: number | null;
  quotaBytes: number;
  usage: number | null;
  readOnly: boolean | null;
  fenced: boolean | null;
  measuredAt: string | null;
  largestTables: TableSize[];
  /** Users in the project's Supabase Auth; null when Auth is absent or not carried. */
  users: number | null;
  /** When a tick last reached it (measured it and wrote its sample): what keeps a Free project from pausing. */
  lastActivityAt: string | null;
  error: string | null;
}

/** The body of `GET /status`. */
export interface Status {
  active: ProjectName;
  standby: ProjectName;
  epoch: number;
  phase: "normal" | "backup" | "critical";
  thresholds: { backup: number; switch: number };
  projects: Record<ProjectName, ProjectStatus>;
  lastBackup: Run | null;
  standbyLagSeconds: number | null;
  forecast: Forecast;
  samples: Record<ProjectName, { at: string; usedBytes: number }[]>;
  /** Changes an old active committed after a failover's last carried position, never applied (docs/failover.md); null when unknown. */
  divergent: DivergentStatus | null;
  /** What needs an operator, worst first. */
  health: Health;
  /** The standby right after a switch; null when it cannot be read. */
  afterSwitch: AfterSwitch | null;
}

/** Samples per project: at the local server's 5 s ticks, 20 minutes, more than a forecast needs. */
const HISTORY = 240;

/**
 * Seconds of the active's changes the standby does not have: zero while the active's row
 * change counters still equal those at the last backup's snapshot, else the age of that
 * snapshot.
 *
 * @example
 * const lag = await standbyLag(projects.primary, run, ["public"]);
 */
export async function standbyLag(active: Project, run: Run, schemas: string[]): Promise<number | null> {
  if (!run.snapshotAt || run.source !== active.name) return null;
  if ((await changeCounter(active.sql, schemas)) === run.details.changeCounter) return 0;
  return Math.max(0, Math.round((Date.now() - Date.parse(run.snapshotAt)) / 1000));
}

/**
 * The row changes Postgres's statistics have counted on a project's replicated tables and
 * in Auth's carried tables (`sql` a project's connection or a transaction on it).
 *
 * @example
 * const before = await changeCounter(projects.primary.sql, ["public"]);
 */
export async function changeCounter(sql: Db, schemas: string[]): Promise<string> {
  // Auth's changes count by their inserts into Spillway's change table (its deletes are Spillway's own).
  const [row] = await sql<{ counter: string }[]>`
    select (coalesce(sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del), 0)
      + coalesce((select a.n_tup_ins from pg_catalog.pg_stat_user_tables a where a.schemaname = 'spillway' and a.relname = 'auth_changes'), 0))::text as counter
    from pg_catalog.pg_stat_user_tables s
    join pg_catalog.pg_class c on c.oid = s.relid
    where s.schemaname = any(${schemas}) and c.relkind = 'r' and not (s.schemaname = 'public' and s.relname = 'spillway_active')`;
  return row!.counter;
}

/**
 * Builds `GET /status`: both projects measured at once; a project that is down is reported
 * with `reachable: false` and its error instead of failing the whole answer.
 *
 * @example
 * const status = await readStatus(projects, redact);
 */
export async function readStatus(projects: Projects, redact: (text: string) => string): Promise<Status> {
  const [{ copies, winner }, { settings }, activity] = await Promise.all([
    readStates(projects),
    readSettings(projects),
    readActivity(projects),
  ]);
  const thresholds = { backup: settings.backupThreshold, switch: settings.switchThreshold };
  const measured = await onBoth(projects, async (p) => {
    const standby = p.name === winner.standby;
    const [m, samples, lastBackup, users, position] = await Promise.all([
      measure(p, { lockWaitMs: STATUS_LOCK_WAIT_MS }),
      readSamples(p.sql, p.name, HISTORY),
      standby ? latestRun(p.sql) : null,
      // Auth's tables are held too while a load replaces them: then the count is unknown.
      withLockWait(p.sql, STATUS_LOCK_WAIT_MS, (db) => userCount(db, settings.auth)).catch((e) => {
        if ((e as { code?: string }).code === PG.lockNotAvailable) return null;
        throw e;
      }),
      standby ? readPosition(p.sql) : null,
    ]);
    // The latest run is often the latest success too: ask again only when it is not.
    const lastSucceeded = !lastBackup || lastBackup.status === "succeeded" ? lastBackup : await latestRun(p.sql, "succeeded");
    return { m, samples, lastBackup, lastSucceeded, users, position };
  });

  const projectStatus = {} as Record<ProjectName, ProjectStatus>;
  const samples = {} as Status["samples"];
  for (const name of PROJECT_NAMES) {
    const o = measured[name];
    const quotaBytes = settings.quotaBytes[name];
    const copy = copies[name];
    const base = {
      role: name === winner.active ? ("active" as const) : ("standby" as const),
      quotaBytes,
      fenced: copy.ok ? copy.value.fenced : null,
      lastActivityAt: activity[name],
    };
    if (o.ok) {
      const { m } = o.value;
      projectStatus[name] = {
        ...base,
        reachable: true,
        usedBytes: m.usedBytes,
        usage: m.usedBytes / quotaBytes,
        readOnly: m.readOnly,
        measuredAt: m.measuredAt,
        largestTables: m.largestTables,
        users: o.value.users,
        error: null,
      };
      samples[name] = o.value.samples;
    } else {
      projectStatus[name] = {
        ...base,
        reachable: false,
        usedBytes: null,
        usage: null,
        readOnly: null,
        measuredAt: null,
        largestTables: [],
        users: null,
        error: redact(describeError(o.error)),
      };
      samples[name] = [];
    }
  }

  const active = projectStatus[winner.active];
  const standbyMeasured = measured[winner.standby];
  const lastBackup = standbyMeasured.ok ? standbyMeasured.value.lastBackup : null;
  const lastSucceeded = standbyMeasured.ok ? standbyMeasured.value.lastSucceeded : null;
  const lag = lastSucceeded
    ? await carriedSchemas(projects[winner.active].sql, settings.schemas)
        .then((schemas) => standbyLag(projects[winner.active], lastSucceeded, schemas))
        .catch(() => null)
    : null;
  // Growth is the active's own: samples from before it became active include the loads that
  // filled it as a standby, which are Spillway's doing, not the app's.
  const activeSamples = samples[winner.active].filter((x) => x.at >= winner.since);
  const activeForecast = forecast(activeSamples, settings.quotaBytes[winner.active], thresholds, new Date());
  if (activeForecast.reason && activeSamples.length < samples[winner.active].length) {
    activeForecast.reason = `since ${winner.active} became active, ${activeForecast.reason}`;
  }
  const now = new Date();
  const standby = projectStatus[winner.standby];
  const afterSwitch =
    active.reachable && standby.reachable
      ? await afterSwitchOf(projects, winner.active, winner.standby, standby.usedBytes!, settings, activeForecast).catch(() => null)
      : null;
  const position = standbyMeasured.ok ? standbyMeasured.value.position : null;
  const retained =
    active.reachable && position?.source === winner.active
      ? await slotRetainedBytes(projects[winner.active], position.slot).catch(() => null)
      : null;
  const currentPhase = phase(active.usage ?? 0, thresholds);
  const health = assessHealth({
    now,
    active: winner.active,
    standby: winner.standby,
    phase: currentPhase,
    thresholds,
    activeReachable: active.reachable,
    activeError: active.error,
    activeUsage: active.usage,
    activeReadOnly: active.readOnly,
    standbyReachable: standby.reachable,
    standbyError: standby.error,
    lastBackup,
    hasBackup: lastSucceeded?.source === winner.active,
    standbyLagSeconds: lag,
    tickSeconds: tickSpacing(samples[winner.active]),
    lastTickAt:
      PROJECT_NAMES.map((n) => samples[n].at(-1)?.at ?? "")
        .sort()
        .at(-1) || null,
    afterSwitch,
    slot: retained === null ? null : { retainedBytes: retained, maxRetainedBytes: settings.maxRetainedBytes },
    heldFailovers: active.reachable ? await heldFailovers(projects[winner.active].sql).catch(() => []) : [],
  });
  return {
    active: winner.active,
    standby: winner.standby,
    epoch: winner.epoch,
    phase: currentPhase,
    thresholds,
    projects: projectStatus,
    lastBackup,
    standbyLagSeconds: lag,
    forecast: activeForecast,
    samples,
    divergent: await readDivergent(projects).catch(() => null),
    health,
    afterSwitch,
  };
}

// By the switch's own formula, with the active's growth for how long the room lasts.
async function afterSwitchOf(
  projects: Projects,
  active: ProjectName,
  standby: ProjectName,
  usedBytes: number,
  settings: Settings,
  growth: Forecast,
): Promise<AfterSwitch> {
  const bytes = bytesAfterSwitch(await switchFigures(projects[active], projects[standby], settings, usedBytes, STATUS_LOCK_WAIT_MS));
  const quota = settings.quotaBytes[standby];
  const headroomBytes = Math.round(settings.switchThreshold * quota - bytes);
  const perDay = growth.bytesPerHour === null ? null : growth.bytesPerHour * 24;
  return {
    project: standby,
    usedBytes: bytes,
    usage: bytes / quota,
    headroomBytes,
    days: perDay !== null && perDay > 0 ? Math.max(0, headroomBytes) / perDay : null,
    basis: FRESH_COPY_BASIS,
  };
}

// The median spacing of the latest samples: a tick stores one in each project.
function tickSpacing(samples: Sample[]): number | null {
  const last = samples.slice(-21);
  const gaps = last.slice(1).map((s, i) => Date.parse(s.at) - Date.parse(last[i]!.at));
  if (gaps.length === 0) return null;
  return gaps.sort((a, b) => a - b)[Math.floor(gaps.length / 2)]! / 1000;
}

/**
 * Records `health.changed` when the health differs from the one last told (the newest such
 * event in either project; none yet counts as `ok`): an alert goes out on entering
 * `degraded` or `critical`, once, not at every tick.
 *
 * @example
 * await recordHealthChange(projects, events, status.health);
 */
export async function recordHealthChange(projects: Projects, events: EventLog, health: Health): Promise<void> {
  const told = await onBoth(
    projects,
    (p) => p.sql<{ at: Date; state: Health["state"] }[]>`
      select at, data->>'state' as state from spillway.events where kind = 'health.changed' order by at desc limit 1`,
  );
  const latest = PROJECT_NAMES.flatMap((n) => (told[n].ok ? told[n].value : [])).sort((a, b) => b.at.getTime() - a.at.getTime())[0];
  const previous = latest?.state ?? "ok";
  if (previous === health.state) return;
  await events.record(
    health.state === "critical" ? "error" : health.state === "degraded" ? "warn" : "info",
    "health.changed",
    health.state === "ok"
      ? `health is ok again (was ${previous})`
      : `health is ${health.state} (was ${previous}): ${health.reasons.map((r) => r.message).join("; ")}`,
    { data: { state: health.state, previous, reasons: health.reasons } },
  );
}
