import { userCount } from "./backup/auth.ts";
import { describeError } from "./errors.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { type Db, onBoth, type Project, type Projects } from "./project.ts";
import { latestRun, type Run } from "./runs.ts";
import { carriedSchemas } from "./schemas.ts";
import { readSettings } from "./settings.ts";
import { readStates } from "./state.ts";
import { type Forecast, forecast, measure, phase, readSamples, type TableSize } from "./usage.ts";

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
  const [{ copies, winner }, { settings }] = await Promise.all([readStates(projects), readSettings(projects)]);
  const thresholds = { backup: settings.backupThreshold, switch: settings.switchThreshold };
  const measured = await onBoth(projects, async (p) => {
    const [m, samples, lastBackup, users] = await Promise.all([
      measure(p),
      readSamples(p.sql, p.name, HISTORY),
      p.name === winner.standby ? latestRun(p.sql) : null,
      userCount(p.sql, settings.auth),
    ]);
    // The latest run is often the latest success too: ask again only when it is not.
    const lastSucceeded = !lastBackup || lastBackup.status === "succeeded" ? lastBackup : await latestRun(p.sql, "succeeded");
    return { m, samples, lastBackup, lastSucceeded, users };
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
  return {
    active: winner.active,
    standby: winner.standby,
    epoch: winner.epoch,
    phase: phase(active.usage ?? 0, thresholds),
    thresholds,
    projects: projectStatus,
    lastBackup,
    standbyLagSeconds: lag,
    forecast: activeForecast,
    samples,
  };
}
