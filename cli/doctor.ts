import postgres, { type Sql } from "postgres";
import { readPosition } from "../functions/backup/position.ts";
import { describeError } from "../functions/errors.ts";
import { PROJECT_NAMES, type ProjectName } from "../functions/names.ts";
import { type ProjectState, readProjectState } from "../functions/state.ts";
import { appliedNames, listMigrations, MIGRATIONS_DIR } from "./migrations.ts";

/** One thing `spillway doctor` checks in a project. */
export interface Check {
  name: "connection" | "migrations" | "cron job" | "pg_net" | "secrets" | "slot" | "fence" | "last tick";
  ok: boolean;
  detail: string;
}

/** What `spillway doctor` found: `ok` when nothing is missing in either project. */
export interface DoctorReport {
  ok: boolean;
  projects: Record<ProjectName, { role: "active" | "standby" | "unknown"; checks: Check[] }>;
}

/** A tick older than this means the scheduler is not reaching the function. */
const TICK_WITHIN_SECONDS = 120;

/**
 * `spillway doctor`: connects to both projects and says, for each, whether Spillway's
 * migrations, the pg_cron job, pg_net, the stored function URL and cron token, the
 * replication slot a backup made (on the active), the fence (on the standby) are in place,
 * and whether a tick arrived in the last 2 minutes. Reads only.
 *
 * @example
 * const report = await doctor({ primary: urlA, secondary: urlB });
 */
export async function doctor(urls: Record<ProjectName, string>): Promise<DoctorReport> {
  const pools = Object.fromEntries(
    PROJECT_NAMES.map((n) => [n, postgres(urls[n], { max: 1, connect_timeout: 10, prepare: false, onnotice: () => {} })]),
  ) as Record<ProjectName, Sql>;
  try {
    const states = await Promise.all(PROJECT_NAMES.map((n) => readProjectState(pools[n]).catch(() => null)));
    const known = states.filter((s): s is ProjectState => s !== null);
    const active = known.length > 0 ? known.reduce((a, b) => (b.epoch > a.epoch ? b : a)).active : null;
    const projects = {} as DoctorReport["projects"];
    for (const [i, name] of PROJECT_NAMES.entries()) {
      const role = active === null ? "unknown" : name === active ? "active" : "standby";
      const other = PROJECT_NAMES[1 - i]!;
      projects[name] = { role, checks: await checkProject(pools[name], pools[other], states[i] ?? null, role) };
    }
    return { ok: PROJECT_NAMES.every((n) => projects[n].checks.every((c) => c.ok)), projects };
  } finally {
    await Promise.all(PROJECT_NAMES.map((n) => pools[n].end({ timeout: 1 })));
  }
}

async function checkProject(sql: Sql, other: Sql, state: ProjectState | null, role: "active" | "standby" | "unknown"): Promise<Check[]> {
  try {
    await sql`select 1`;
  } catch (e) {
    return [{ name: "connection", ok: false, detail: `cannot connect: ${describeError(e)}` }];
  }
  const checks: Check[] = [];
  const applied = await appliedNames(sql);
  const missing = listMigrations(MIGRATIONS_DIR).filter((m) => !applied.has(m.name));
  checks.push(
    missing.length === 0
      ? { name: "migrations", ok: true, detail: `all ${applied.size} applied` }
      : { name: "migrations", ok: false, detail: `missing ${missing.map((m) => m.file).join(", ")}; run supabase db push --db-url on it` },
  );
  if (missing.length === listMigrations(MIGRATIONS_DIR).length) return checks;

  const [x] = await sql<{ cron: boolean; net: boolean; url: boolean; token: boolean }[]>`
    select exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') as cron,
      pg_catalog.to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is not null as net,
      spillway.secret('spillway_function_url') is not null as url,
      spillway.secret('spillway_cron_token') is not null as token`;
  let job: { active: boolean; schedule: string } | null = null;
  if (x!.cron) {
    [job = null] = await sql<
      { active: boolean; schedule: string }[]
    >`select active, schedule from cron.job where jobname = 'spillway-tick'`;
  }
  checks.push(
    !x!.cron
      ? { name: "cron job", ok: false, detail: "pg_cron is not enabled: enable it (Database → Extensions), then run spillway init" }
      : !job
        ? { name: "cron job", ok: false, detail: "no spillway-tick job: run spillway init" }
        : { name: "cron job", ok: job.active, detail: `spillway-tick, ${job.schedule}${job.active ? "" : ", inactive"}` },
  );
  checks.push(
    x!.net
      ? { name: "pg_net", ok: true, detail: "net.http_post is there" }
      : {
          name: "pg_net",
          ok: false,
          detail: "pg_net is not enabled: the job cannot reach the function; enable it (Database → Extensions)",
        },
  );
  checks.push(
    x!.url && x!.token
      ? { name: "secrets", ok: true, detail: "function URL and cron token stored" }
      : { name: "secrets", ok: false, detail: `no ${x!.url ? "cron token" : "function URL"} stored: run spillway init --url …` },
  );
  checks.push(await checkSlot(sql, other, role));
  checks.push(
    !state
      ? { name: "fence", ok: false, detail: "no state row" }
      : role === "standby"
        ? {
            name: "fence",
            ok: state.fenced,
            detail: state.fenced ? `fenced (epoch ${state.epoch})` : "NOT fenced: apps could write to the standby",
          }
        : { name: "fence", ok: !state.fenced, detail: state.fenced ? "the active is fenced: apps cannot write" : "open to app writes" },
  );
  const [tick] = await sql<{ age: number | null }[]>`select extract(epoch from now() - max(at))::float8 as age from spillway.usage_samples`;
  const age = tick?.age ?? null;
  checks.push(
    age !== null && age <= TICK_WITHIN_SECONDS
      ? { name: "last tick", ok: true, detail: `${Math.round(age)} s ago` }
      : {
          name: "last tick",
          ok: false,
          detail: `${age === null ? "no tick yet" : `last ${Math.round(age / 60)} min ago`}; see cron.job_run_details and net._http_response, or call spillway status`,
        },
  );
  return checks;
}

// The active keeps the slot the standby's last backup reads changes from; the standby needs none.
async function checkSlot(sql: Sql, other: Sql, role: "active" | "standby" | "unknown"): Promise<Check> {
  if (role !== "active") return { name: "slot", ok: true, detail: "none needed here" };
  const position = await readPosition(other).catch(() => null);
  if (!position) return { name: "slot", ok: true, detail: "none yet: the first backup makes it" };
  const [slot] = await sql<
    { ok: boolean }[]
  >`select exists (select 1 from pg_catalog.pg_replication_slots where slot_name = ${position.slot}) as ok`;
  return slot!.ok
    ? { name: "slot", ok: true, detail: position.slot }
    : { name: "slot", ok: false, detail: `${position.slot} is gone: the next backup is a full one` };
}
