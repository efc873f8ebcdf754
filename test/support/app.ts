import assert from "node:assert/strict";
import { installCrashGuards } from "../../cli/guards.ts";
import { type AlertConfig, AlertSender, type DeliveryOptions } from "../../functions/alerts.ts";
import { createApp } from "../../functions/app.ts";
import { runBackup } from "../../functions/backup.ts";
import { EventLog, type SpillwayEvent } from "../../functions/events.ts";
import { claimProject, closeProjects, connectProjects, type Projects } from "../../functions/project.ts";
import { patchSettings, type Runtime } from "../../functions/settings.ts";
import type { StorageApis } from "../../functions/storage.ts";
import type { TestPair } from "./postgres.ts";

export const ADMIN_TOKEN = "test-admin-token-0123456789";
export const CRON_TOKEN = "test-cron-token-0123456789";

/** Spillway's app wired to a test pair, as an entry would wire it. */
export interface TestApp {
  app: ReturnType<typeof createApp>;
  projects: Projects;
  events: EventLog;
  /** Every event that reached the local sink. */
  sunk: SpillwayEvent[];
  /** The alert sender, when the app was given a webhook. */
  alerts: AlertSender | null;
  request(path: string, init?: RequestInit & { token?: string | null }): Promise<Response>;
  close(): Promise<void>;
}

/**
 * Wires the app to the pair's own URLs, or to `urls` (a pooler's, say) with the fdw link
 * at `fdwUrls`; `max` connections per project (default 4), `runtime` and `wallClockMs` as an entry tells them.
 *
 * @example
 * const t = await testApp(pair);
 * const res = await t.request("/spillway/status");
 */
export async function testApp(
  pair: TestPair,
  options: {
    alerts?: AlertConfig;
    delivery?: DeliveryOptions;
    urls?: TestPair["urls"];
    fdwUrls?: Partial<TestPair["urls"]>;
    max?: number;
    runtime?: Runtime;
    wallClockMs?: number;
    storage?: StorageApis;
  } = {},
): Promise<TestApp> {
  installCrashGuards();
  const projects = connectProjects(options.urls ?? pair.urls, { connectTimeout: 2, max: options.max }, options.fdwUrls);
  await Promise.all([claimProject(projects.primary), claimProject(projects.secondary)]);
  const sunk: SpillwayEvent[] = [];
  const secrets = [ADMIN_TOKEN, CRON_TOKEN, pair.primary.password, pair.secondary.password, options.alerts?.webhookUrl ?? ""];
  const events = new EventLog(projects, { secrets, sinks: [(e) => sunk.push(e)] });
  const alerts = options.alerts ? new AlertSender(events, options.alerts, options.delivery) : null;
  const app = createApp({
    projects,
    events,
    adminToken: ADMIN_TOKEN,
    cronToken: CRON_TOKEN,
    corsOrigins: ["*"],
    alerts: options.alerts ?? null,
    runtime: options.runtime,
    wallClockMs: options.wallClockMs,
    storage: options.storage,
  });
  return {
    app,
    projects,
    events,
    sunk,
    alerts,
    request(path, init = {}) {
      const { token = ADMIN_TOKEN, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (token !== null) headers.set("Authorization", `Bearer ${token}`);
      return Promise.resolve(app.request(path, { ...rest, headers }));
    },
    async close() {
      await alerts?.close();
      await closeProjects(projects, 1);
    },
  };
}

/**
 * Stands in for the passing of time after a process was killed: the lease it held expires
 * at once in both projects.
 *
 * @example
 * await expireLease(pair);
 */
export async function expireLease(pair: TestPair): Promise<void> {
  for (const s of [pair.primary, pair.secondary]) await s.admin`update spillway.lease set expires_at = now() - interval '1 second'`;
}

/**
 * One call to the app's HTTP API under `/spillway`, as an operator makes it: the status
 * and the parsed body.
 *
 * @example
 * const { status, body } = await call(t, "POST", "/force-backup", { mode: "full" });
 */
export async function call(t: TestApp, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await t.request(`/spillway${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: JSON.parse(await res.text()) };
}

/**
 * `POST /force-backup` in `mode` (with more of the body in `body`), asserted answered 200;
 * answers the run.
 *
 * @example
 * assert.equal((await forceBackup(t, "auto")).kind, "incremental");
 */
export async function forceBackup(t: TestApp, mode: string, body: Record<string, unknown> = {}): Promise<any> {
  const r = await call(t, "POST", "/force-backup", { mode, ...body });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.run;
}

/**
 * A full backup staged one call at a time (no budget) until it publishes, `afterFirstCall`
 * run once between the first call and the second; answers how many calls it took.
 *
 * @example
 * assert.ok((await stageUntilPublished(t, () => signUp(pair.primary, "ben@example.com", "pw"))) > 1);
 */
export async function stageUntilPublished(t: TestApp, afterFirstCall: () => Promise<unknown>): Promise<number> {
  let calls = 0;
  for (;;) {
    const run = await runBackup({ projects: t.projects, events: t.events }, { mode: "full", verify: false, staged: true, budgetMs: 0 });
    calls += 1;
    if (run.status === "succeeded") return calls;
    assert.ok(calls < 20, "the staged backup never published");
    if (calls === 1) await afterFirstCall();
  }
}

/**
 * `PATCH /config` as made while `down` could not be reached: the change is stored in the
 * other project only.
 *
 * @example
 * await patchWithOneDown(pair, "secondary", { auth: false });
 */
export async function patchWithOneDown(pair: TestPair, down: "primary" | "secondary", patch: Record<string, unknown>): Promise<void> {
  const oneUp = connectProjects({ ...pair.urls, [down]: "postgres://postgres:x@127.0.0.1:9/postgres" }, { connectTimeout: 2 });
  try {
    await patchSettings(oneUp, patch);
  } finally {
    await closeProjects(oneUp, 1);
  }
}
