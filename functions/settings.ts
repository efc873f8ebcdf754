import { z } from "zod";
import { invalid, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { onBoth, type Projects } from "./project.ts";

const quota = z
  .number({ invalid_type_error: "must be a number of bytes" })
  .int("must be a whole number of bytes")
  .positive("must be more than 0")
  .max(Number.MAX_SAFE_INTEGER, "is too large");
const threshold = z.number({ invalid_type_error: "must be a number" }).gt(0, "must be more than 0").lte(1, "must be at most 1");
const RESERVED_SCHEMAS = new Set([
  "spillway",
  "pg_catalog",
  "information_schema",
  "pg_toast",
  "extensions",
  "auth",
  "storage",
  "vault",
  "cron",
  "net",
  "supabase_migrations",
  "realtime",
  "graphql",
  "graphql_public",
  "pgsodium",
]);

/**
 * Whether a schema may hold an app's tables: not one of Spillway's, Postgres's or Supabase's own.
 *
 * @example
 * isAppSchema("auth") // false
 */
export function isAppSchema(name: string): boolean {
  return !RESERVED_SCHEMAS.has(name) && !name.startsWith("pg_");
}

const schemaName = z
  .string({ invalid_type_error: "must be a schema name" })
  .regex(/^[a-z_][a-z0-9_$]{0,62}$/, "must be a lowercase schema name")
  .refine(isAppSchema, "names a schema that belongs to Spillway, Postgres or Supabase");

const settingsShape = {
  backupThreshold: threshold,
  switchThreshold: threshold,
  quotaBytes: z.object({ primary: quota, secondary: quota }, { invalid_type_error: "must be an object" }).strict(),
  autoBackup: z.boolean({ invalid_type_error: "must be true or false" }),
  autoSwitch: z.boolean({ invalid_type_error: "must be true or false" }),
  strategy: z.enum(["auto", "copy", "fdw"], { errorMap: () => ({ message: 'must be "auto", "copy" or "fdw"' }) }),
  schemas: z
    .array(schemaName, { invalid_type_error: "must be a list of schema names, or null for every app schema" })
    .min(1, "must name at least one schema")
    .max(32, "may name at most 32 schemas")
    .refine((list) => new Set(list).size === list.length, "must not repeat a schema")
    .nullable(),
  budgetSeconds: z
    .number({ invalid_type_error: "must be a number of seconds" })
    .int("must be a whole number of seconds")
    .min(5, "must be at least 5")
    .max(3600, "must be at most 3600"),
  auth: z.boolean({ invalid_type_error: "must be true or false" }),
  authSessions: z.boolean({ invalid_type_error: "must be true or false" }),
  storage: z.boolean({ invalid_type_error: "must be true or false" }),
  maxRetainedBytes: z
    .number({ invalid_type_error: "must be a number of bytes" })
    .int("must be a whole number of bytes")
    .min(1048576, "must be at least 1048576 (1 MB)")
    .max(Number.MAX_SAFE_INTEGER, "is too large"),
  // Off (null), or when to publish the standby with the active unreachable (docs/failover.md).
  failover: z
    .object(
      {
        afterSeconds: z
          .number({ invalid_type_error: "must be a number of seconds" })
          .int("must be a whole number of seconds")
          .min(1, "must be at least 1")
          .max(86400, "must be at most 86400")
          .default(180),
        maxLagSeconds: z
          .number({ invalid_type_error: "must be a number of seconds" })
          .int("must be a whole number of seconds")
          .min(0, "must be at least 0")
          .max(86400, "must be at most 86400")
          .default(60),
      },
      { invalid_type_error: 'must be null or {"afterSeconds": 180, "maxLagSeconds": 60}' },
    )
    .strict()
    .nullable(),
};

const settingsSchema = z.object(settingsShape).strict();
const patchSchema = z
  .object({
    ...settingsShape,
    quotaBytes: z.object({ primary: quota, secondary: quota }, { invalid_type_error: "must be an object" }).partial().strict(),
  })
  .partial()
  .strict();

/** Operator settings, stored in the database and changed with `PATCH /config`. */
export type Settings = z.infer<typeof settingsSchema>;

/** The defaults, as the first migration stores them. */
export const DEFAULT_SETTINGS: Settings = {
  backupThreshold: 0.85,
  switchThreshold: 0.9,
  quotaBytes: { primary: 524288000, secondary: 524288000 },
  autoBackup: true,
  autoSwitch: true,
  strategy: "auto",
  // Every schema holding the app's tables (`carriedSchemas`); a list carries only those.
  schemas: null,
  budgetSeconds: 120,
  // Carry Supabase Auth's users; where a project has no `auth` schema there is nothing to carry.
  auth: true,
  // Sessions are only good on the project whose JWT secret signed them: the operator turns
  // this on once both projects share one (docs/auth.md).
  authSessions: false,
  // Fence Supabase Storage's objects with the tables (docs/storage.md).
  storage: true,
  maxRetainedBytes: 134217728,
  // Off until the operator opts in: a failover may lose the active's last changes.
  failover: null,
};

/** Where the process runs, as its entry says: the Edge Function runtime, or Node (local server, CLI, tests). */
export type Runtime = "edge" | "node";

/**
 * The strategy a backup uses. `auto` is fdw under the Edge runtime, where the standby
 * pulling the rows keeps the function's CPU time small, and copy elsewhere.
 *
 * @example
 * resolveStrategy("auto", "edge") // "fdw"
 */
export function resolveStrategy(strategy: Settings["strategy"], runtime: Runtime): "copy" | "fdw" {
  if (strategy !== "auto") return strategy;
  return runtime === "edge" ? "fdw" : "copy";
}

/**
 * Applies a partial change to settings, validating every field. Throws 400
 * `INVALID_CONFIG` whose details name each bad field (dotted paths, `quotaBytes.primary`).
 *
 * @example
 * const next = applyPatch(DEFAULT_SETTINGS, { backupThreshold: 0.8 });
 */
export function applyPatch(current: Settings, patch: unknown): Settings {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) {
    throw invalid("INVALID_CONFIG", { body: "must be a JSON object of settings" });
  }
  const parsed = patchSchema.safeParse(patch);
  if (!parsed.success) throw invalid("INVALID_CONFIG", fieldErrors(parsed.error));
  const p = parsed.data;
  const next: Settings = {
    ...current,
    ...p,
    quotaBytes: { ...current.quotaBytes, ...p.quotaBytes },
  } as Settings;
  if (next.switchThreshold <= next.backupThreshold) {
    const why = `backupThreshold (${next.backupThreshold}) must be below switchThreshold (${next.switchThreshold})`;
    throw invalid("INVALID_CONFIG", { backupThreshold: why, switchThreshold: why });
  }
  return next;
}

function fieldErrors(error: z.ZodError): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      const base = issue.path.join(".");
      for (const key of issue.keys) fields[base ? `${base}.${key}` : key] = "is not a setting";
      continue;
    }
    const path = issue.path.join(".") || "body";
    fields[path] ??= issue.message;
  }
  return fields;
}

/** Settings as read from the database, with the version that orders them. */
export interface StoredSettings {
  settings: Settings;
  version: number;
}

/**
 * Reads the settings from both projects; the highest version wins, so a change made while
 * one project was down is not undone when it comes back.
 *
 * @example
 * const { settings } = await readSettings(projects);
 */
export async function readSettings(projects: Projects): Promise<StoredSettings> {
  return (await readBoth(projects)).winner;
}

/** Each project's stored settings (null: unreachable or not installed) and the winner. */
interface BothSettings {
  winner: StoredSettings;
  stored: Record<ProjectName, (StoredSettings & { valid: boolean; text: string }) | null>;
}

async function readBoth(projects: Projects): Promise<BothSettings> {
  const outcomes = await onBoth(projects, async (p) => {
    const [row] = await p.sql<{ data: unknown; version: string }[]>`select data, version from spillway.settings where id`;
    return row;
  });
  const stored: BothSettings["stored"] = { primary: null, secondary: null };
  let best: StoredSettings | null = null;
  let firstError: unknown = null;
  for (const name of PROJECT_NAMES) {
    const o = outcomes[name];
    if (!o.ok) {
      firstError ??= o.error;
      continue;
    }
    if (!o.value) continue;
    // Stored settings are trusted but may predate a newer field: defaults fill the gaps.
    const merged = settingsSchema.safeParse({ ...DEFAULT_SETTINGS, ...(o.value.data as object) });
    stored[name] = {
      settings: merged.success ? merged.data : DEFAULT_SETTINGS,
      version: Number(o.value.version),
      valid: merged.success,
      text: JSON.stringify(merged.success ? merged.data : o.value.data),
    };
    if (!best || best.version < stored[name].version) best = stored[name];
  }
  if (best) return { winner: { settings: best.settings, version: best.version }, stored };
  if (firstError) throw firstError;
  throw new SpillwayError("NOT_INSTALLED", 503, "neither project holds Spillway's settings");
}

/**
 * Reads the settings like `readSettings`, and gives a project that missed a change (it was
 * unreachable when the settings were patched) the winning version: each project's triggers
 * (Auth's capture) follow its own copy, so the two must not stay apart. When what is
 * carried of Auth differs between the copies, both projects forget their Auth copy record,
 * as a patch does, and the next backup is full: the project that was behind captured by its
 * old settings meanwhile. Call under the operation lease, before planning.
 *
 * @example
 * const { settings, version } = await convergeSettings(projects, events);
 */
export async function convergeSettings(projects: Projects, events?: EventLog): Promise<StoredSettings & { repaired: ProjectName[] }> {
  const { winner, stored } = await readBoth(projects);
  const best = PROJECT_NAMES.map((name) => stored[name]).find((s) => s !== null && s.version === winner.version)!;
  // Behind: an older version, or the same version with other settings (two patches at once).
  const behind = PROJECT_NAMES.filter(
    (name) => stored[name] !== null && stored[name] !== best && (stored[name].version < winner.version || stored[name].text !== best.text),
  );
  // Stored settings that do not validate are read as the defaults: never copied over a project's own.
  if (behind.length === 0 || !best.valid) return { ...winner, repaired: [] };
  const authDiffers = behind.some((name) => {
    const old = stored[name]!.settings;
    return old.auth !== winner.settings.auth || old.authSessions !== winner.settings.authSessions;
  });
  const repaired: ProjectName[] = [];
  for (const name of PROJECT_NAMES) {
    if (!behind.includes(name) && !(authDiffers && stored[name] !== null)) continue;
    // A project that cannot take the write now (unreachable, out of disk) is repaired at the
    // next tick; what it carries of Auth is caught by the Auth copy record's generation.
    await projects[name].sql
      .begin("read write", async (tx) => {
        // Only over an older version, or the same one: a patch that landed meanwhile stays.
        const moved = await tx`
          update spillway.settings set data = ${tx.json(winner.settings as never)}, version = ${winner.version}, updated_at = now()
          where id and version <= ${winner.version} and data is distinct from ${tx.json(winner.settings as never)}`;
        if (moved.count > 0) repaired.push(name);
        if (authDiffers) await tx`delete from spillway.auth_copy where id`;
      })
      .catch(() => undefined);
  }
  if (repaired.length > 0) {
    await events?.record(
      "warn",
      "settings.converged",
      `${repaired.join(" and ")} missed a settings change (version ${winner.version}) and now holds it${authDiffers ? "; what is carried of Auth changed there, so the next backup is a full one" : ""}`,
      { data: { version: winner.version, repaired, fullBackup: authDiffers } },
    );
  }
  return { ...winner, repaired };
}

/**
 * The settings a change really changed, by dotted name (`quotaBytes.primary`), with their
 * values before and after: a form that sends every field changes only what differs.
 *
 * @example
 * changedSettings(DEFAULT_SETTINGS, { ...DEFAULT_SETTINGS, backupThreshold: 0.8 }) // { backupThreshold: { from: 0.85, to: 0.8 } }
 */
export function changedSettings(before: Settings, after: Settings): Record<string, { from: unknown; to: unknown }> {
  const changed: Record<string, { from: unknown; to: unknown }> = {};
  for (const key of Object.keys(after) as (keyof Settings)[]) {
    if (key === "quotaBytes") {
      for (const name of PROJECT_NAMES) {
        if (before.quotaBytes[name] !== after.quotaBytes[name])
          changed[`quotaBytes.${name}`] = { from: before.quotaBytes[name], to: after.quotaBytes[name] };
      }
    } else if (JSON.stringify(before[key]) !== JSON.stringify(after[key])) {
      changed[key] = { from: before[key], to: after[key] };
    }
  }
  return changed;
}

/**
 * Validates a partial change and stores the result in every reachable project under a new
 * version. Nothing is stored when validation fails.
 *
 * @example
 * const settings = await patchSettings(projects, { autoSwitch: false });
 */
export async function patchSettings(projects: Projects, patch: unknown): Promise<Settings> {
  return (await patchSettingsTelling(projects, patch)).settings;
}

/**
 * `patchSettings`, answering also what the change changed (`changedSettings`).
 *
 * @example
 * const { settings, changed } = await patchSettingsTelling(projects, { autoSwitch: false });
 */
export async function patchSettingsTelling(
  projects: Projects,
  patch: unknown,
): Promise<{ settings: Settings; changed: ReturnType<typeof changedSettings> }> {
  const current = await readSettings(projects);
  const next = applyPatch(current.settings, patch);
  const version = current.version + 1;
  // Auth's changes (sessions' with `authSessions`) are captured only while the setting is
  // on: a copy made before it changed can no longer be built on.
  const authChanged = next.auth !== current.settings.auth || next.authSessions !== current.settings.authSessions;
  const outcomes = await onBoth(projects, (p) =>
    p.sql.begin("read write", async (tx) => {
      await tx`update spillway.settings set data = ${tx.json(next as never)}, version = ${version}, updated_at = now() where id`;
      if (authChanged) await tx`delete from spillway.auth_copy where id`;
    }),
  );
  if (!outcomes.primary.ok && !outcomes.secondary.ok) throw outcomes.primary.error;
  return { settings: next, changed: changedSettings(current.settings, next) };
}
