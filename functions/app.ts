import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { z } from "zod";
import type { AlertConfig } from "./alerts.ts";
import { bearer, sameSecret } from "./auth.ts";
import { requireStandbyRoom, runBackup } from "./backup.ts";
import { checkPatch, readPatchFacts, requireConfirmation, schemasLeftOut } from "./consequences.ts";
import { describeError, invalid, isConnectionError, SpillwayError } from "./errors.ts";
import { type EventLog, LEVELS, type Level } from "./events.ts";
import { acknowledgeFailover } from "./failover-hold.ts";
import { PROJECT_NAMES } from "./names.ts";
import type { Projects } from "./project.ts";
import { type RealtimeStatus, realtimeStatus } from "./realtime.ts";
import { applyPatch, patchSettingsTelling, type Runtime, readSettings } from "./settings.ts";
import { readActive } from "./state.ts";
import { readStatus } from "./status.ts";
import { type StorageApis, type StorageStatus, storageStatus } from "./storage.ts";
import { switchOver } from "./switchover.ts";
import { tick } from "./tick.ts";
import { verify } from "./verify.ts";

/** A file the server may hand out (the widget); anything not listed is a 404. */
export interface StaticFile {
  body: Uint8Array;
  type: string;
}

/** What `createApp` needs; the entries build it from `loadConfig`. */
export interface AppDeps {
  projects: Projects;
  events: EventLog;
  adminToken: string;
  cronToken: string | null;
  corsOrigins: string[];
  /** Where alerts go: `/config` shows only the host of this secret URL. */
  alerts?: AlertConfig | null;
  /** Served at `/` and below by the local server; keyed by path without the leading slash. */
  staticFiles?: Map<string, StaticFile>;
  /** Where the entry runs (default node): the `auto` strategy follows it. */
  runtime?: Runtime;
  /** The runtime's wall-clock limit for one call (the Edge Function's 150 s): a switch fits it or refuses before fencing. */
  wallClockMs?: number;
  /** Both projects' Storage APIs: Storage is carried with every backup (null or absent: not carried). */
  storage?: StorageApis;
}

/** How long `GET /active` reuses one reading of the state. */
const ACTIVE_CACHE_MS = 250;

/** Largest request body accepted, in bytes (documented in the README). */
export const MAX_BODY_BYTES = 64 * 1024;

type Env = { Variables: { caller: "admin" | "cron" } };

/**
 * Builds Spillway's HTTP app: the API under `/spillway` and, when given, the widget files
 * at `/`. Runs unchanged on Deno and Node.
 *
 * @example
 * Deno.serve(createApp(deps).fetch);
 */
export function createApp(deps: AppDeps): Hono {
  const api = new Hono<Env>();
  const ctx = {
    projects: deps.projects,
    events: deps.events,
    runtime: deps.runtime ?? ("node" as const),
    wallClockMs: deps.wallClockMs,
    storage: deps.storage ?? null,
  };

  api.use(
    "*",
    cors({
      origin: deps.corsOrigins.includes("*") ? "*" : deps.corsOrigins,
      allowMethods: ["GET", "POST", "PATCH", "OPTIONS"],
      allowHeaders: ["Authorization", "Content-Type"],
      maxAge: 600,
    }),
  );
  // Only where bodies are read: checking a GET's body would make the Node adapter build a
  // full Request for every poll of /active.
  api.on(
    ["POST", "PATCH", "PUT", "DELETE"],
    "*",
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: () => {
        throw new SpillwayError("PAYLOAD_TOO_LARGE", 413, `request body is over ${MAX_BODY_BYTES} bytes`);
      },
    }),
  );

  const requireCaller = (allowCron: boolean) => async (c: Context<Env>, next: () => Promise<void>) => {
    const token = bearer(c.req.header("Authorization"));
    if (token !== null && sameSecret(token, deps.adminToken)) c.set("caller", "admin");
    else if (allowCron && token !== null && deps.cronToken !== null && sameSecret(token, deps.cronToken)) c.set("caller", "cron");
    else throw new SpillwayError("UNAUTHORIZED", 401, "a valid bearer token is required");
    await next();
  };
  const admin = requireCaller(false);

  api.get("/health", (c) => c.json({ ok: true }));

  // Apps poll this: one database read serves everyone asking within ACTIVE_CACHE_MS.
  let activeCache: { at: number; value: Promise<{ active: string; epoch: number; since: string }> } | null = null;
  api.get("/active", async (c) => {
    if (!activeCache || Date.now() - activeCache.at > ACTIVE_CACHE_MS) {
      const value = readActive(deps.projects).then(({ active, epoch, since }) => ({ active, epoch, since }));
      activeCache = { at: Date.now(), value };
      value.catch(() => {
        activeCache = null;
      });
    }
    return c.json(await activeCache.value);
  });

  // Callers who ask while a reading is under way share it: an answer is at most one reading
  // old, and 200 dashboards polling at once cost one reading, not 200.
  let statusReading: Promise<Awaited<ReturnType<typeof readStatus>> & { storage: StorageStatus; realtime: RealtimeStatus }> | null = null;
  api.get("/status", admin, async (c) => {
    statusReading ??= Promise.all([
      readStatus(deps.projects, (t) => deps.events.redact(t)),
      storageStatus(deps.projects, ctx.storage),
      realtimeStatus(deps.projects),
    ])
      .then(([status, storage, realtime]) => ({ ...status, storage, realtime }))
      .finally(() => {
        statusReading = null;
      });
    return c.json(await statusReading);
  });

  api.get("/config", admin, async (c) => {
    const { settings } = await readSettings(deps.projects);
    const projects = Object.fromEntries(
      PROJECT_NAMES.map((n) => [n, { host: deps.projects[n].host, database: deps.projects[n].database }]),
    );
    const alerts = deps.alerts ? { webhookHost: new URL(deps.alerts.webhookUrl).host, signed: deps.alerts.secret !== null } : null;
    return c.json({ settings, projects, alerts });
  });

  api.patch("/config", admin, async (c) => {
    const body = await readJson(c, "INVALID_CONFIG");
    if (body === null || typeof body !== "object" || Array.isArray(body))
      throw invalid("INVALID_CONFIG", { body: "must be a JSON object of settings" });
    const { confirm, ...patch } = body as Record<string, unknown>;
    if (confirm !== undefined && typeof confirm !== "boolean") throw invalid("INVALID_CONFIG", { confirm: "must be true or false" });
    // A change that would leave data behind or act at once is made only when confirmed.
    const current = await readSettings(deps.projects);
    const facts = await readPatchFacts(deps.projects);
    const check = checkPatch(current.settings, applyPatch(current.settings, patch), facts);
    const confirmed = requireConfirmation(check, confirm === true);
    const { settings, changed } = await patchSettingsTelling(deps.projects, patch);
    const names = Object.keys(changed);
    const what =
      names.length === 0
        ? "settings saved; nothing changed"
        : `settings changed: ${names.map((n) => `${n} ${JSON.stringify(changed[n]!.from)} → ${JSON.stringify(changed[n]!.to)}`).join(", ")}`;
    await deps.events.record(
      confirmed.length > 0 ? "warn" : "info",
      "config.changed",
      `${what}${confirmed.length > 0 ? `; confirmed: ${confirmed.join("; ")}` : ""}`,
      // The app schemas a stored list leaves out on purpose: backups and switches go ahead without them.
      {
        data: {
          patch,
          changed,
          confirmed,
          ...("schemas" in patch ? { leftOut: schemasLeftOut(settings.schemas, facts.tablesBySchema) } : {}),
        },
      },
    );
    return c.json({ settings });
  });

  api.get("/logs", admin, async (c) => {
    const query = parseLogQuery(c.req.queries());
    return c.json({ events: await deps.events.list(query) });
  });

  api.post("/force-backup", admin, async (c) => {
    const body = parseBody(backupBody, await readJson(c, "INVALID_BODY"));
    if (!body.force) await requireStandbyRoom(deps.projects);
    const run = await runBackup(ctx, { mode: body.mode ?? "auto", verify: body.verify ?? false });
    // 202: a staged full backup that continues on the next call or tick.
    // A run that carried the app but not Auth's users says so: the standby cannot take over sign-ins yet.
    const notCarried = run.details.authNotCarried;
    const warning = notCarried?.length
      ? `Auth's users were not carried (the standby's Auth cannot hold the active's): ${notCarried.slice(0, 2).join("; ")}; a switch is refused until they are`
      : undefined;
    return c.json(warning ? { run, warning } : { run }, run.status === "running" ? 202 : 200);
  });

  api.post("/force-switch", admin, async (c) => {
    const body = parseBody(switchBody, await readJson(c, "INVALID_BODY"));
    try {
      const result = await switchOver(ctx, { to: body.to, force: body.force ?? false });
      return c.json({ switch: result });
    } finally {
      activeCache = null;
    }
  });

  // The operator has compared an old active whose changes could not be listed: it may be backed up to again.
  api.post("/failover/ack", admin, async (c) => {
    const body = parseBody(ackBody, await readJson(c, "INVALID_BODY"));
    const { active } = await readActive(deps.projects);
    return c.json({ acknowledged: await acknowledgeFailover(deps.projects[active], deps.events, body.epoch) });
  });

  api.post("/verify", admin, async (c) =>
    c.json({ verify: await verify({ projects: deps.projects, events: deps.events, storage: ctx.storage }) }),
  );

  api.post("/tick", requireCaller(true), async (c) => c.json(await tick(ctx)));

  const app = new Hono();
  app.route("/spillway", api);
  if (deps.staticFiles) {
    const files = deps.staticFiles;
    app.get("/*", (c) => {
      const path = decodeURIComponentSafe(c.req.path.replace(/^\/+/, "")) || "index.html";
      const file = files.get(path);
      if (!file) throw new SpillwayError("NOT_FOUND", 404, "no such file");
      return c.body(file.body as Uint8Array<ArrayBuffer>, 200, {
        "Content-Type": file.type,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
      });
    });
  }
  app.notFound((c) => c.json({ error: { code: "NOT_FOUND", message: `no route for ${c.req.method} ${c.req.path}` } }, 404));
  app.onError((err, c) => {
    if (err instanceof SpillwayError) {
      const body = {
        error: { code: err.code, message: deps.events.redact(err.message), ...(err.details === undefined ? {} : { details: err.details }) },
      };
      return c.json(body, err.status);
    }
    // A connection lost or refused outside onProject (a server restarting, say) is the
    // documented 503, not an internal error.
    if (isConnectionError(err)) {
      return c.json(
        { error: { code: "PROJECT_UNREACHABLE", message: deps.events.redact(`a project is unreachable: ${describeError(err)}`) } },
        503,
      );
    }
    void deps.events.error("http.internal", err, { data: { method: c.req.method, path: c.req.path } });
    return c.json({ error: { code: "INTERNAL", message: "internal error; see the events log" } }, 500);
  });
  return app;
}

const backupBody = z
  .object({
    mode: z.enum(["auto", "full", "incremental"], { errorMap: () => ({ message: 'must be "auto", "full" or "incremental"' }) }).optional(),
    verify: z.boolean({ invalid_type_error: "must be true or false" }).optional(),
    force: z.boolean({ invalid_type_error: "must be true or false" }).optional(),
  })
  .strict();

const switchBody = z
  .object({
    to: z.enum(["primary", "secondary"], { errorMap: () => ({ message: 'must be "primary" or "secondary"' }) }).optional(),
    force: z.boolean({ invalid_type_error: "must be true or false" }).optional(),
  })
  .strict();

const ackBody = z
  .object({
    epoch: z
      .number({ required_error: "is required", invalid_type_error: "must be a whole number" })
      .int("must be a whole number")
      .positive("must be at least 1"),
  })
  .strict();

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw invalid("INVALID_BODY", { body: "must be a JSON object" });
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const fields: Record<string, string> = {};
  for (const issue of parsed.error.issues) {
    if (issue.code === "unrecognized_keys") for (const k of issue.keys) fields[k] = "is not a field of this request";
    else fields[issue.path.join(".") || "body"] ??= issue.message;
  }
  throw invalid("INVALID_BODY", fields);
}

async function readJson(c: Context, code: string): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw invalid(code, { body: "is not valid JSON" });
  }
}

// A parameter given twice is refused: which of its values would count is the caller's guess.
function parseLogQuery(given: Record<string, string[]>): { limit: number; level?: Level; before?: string } {
  const fields: Record<string, string> = {};
  const allowed = new Set(["limit", "level", "before"]);
  const q: Record<string, string> = {};
  for (const [key, values] of Object.entries(given)) {
    if (!allowed.has(key)) fields[key] = "is not a query parameter of /logs";
    else if (values.length > 1) fields[key] = "is given more than once";
    q[key] = values[0] ?? "";
  }
  let limit = 50;
  if (q.limit !== undefined) {
    limit = Number(q.limit);
    if (!/^\d+$/.test(q.limit) || limit < 1 || limit > 500) fields.limit = "must be a whole number from 1 to 500";
  }
  if (q.level !== undefined && !LEVELS.includes(q.level as Level)) fields.level = "must be info, warn or error";
  if (q.before !== undefined && (!/^\d{4}-\d{2}-\d{2}/.test(q.before) || Number.isNaN(Date.parse(q.before)))) {
    fields.before = "must be an ISO timestamp";
  }
  if (Object.keys(fields).length > 0) throw invalid("INVALID_QUERY", fields);
  return { limit, level: q.level as Level | undefined, before: q.before };
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return "";
  }
}
