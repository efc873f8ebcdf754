import { appendFileSync, mkdirSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { join } from "node:path";
import { type ServerType, serve } from "@hono/node-server";
import { type AlertConfig, AlertSender } from "../functions/alerts.ts";
import { createApp } from "../functions/app.ts";
import { describeError } from "../functions/errors.ts";
import { EventLog } from "../functions/events.ts";
import { claimProject, closeProjects, connectProjects, type Projects } from "../functions/project.ts";
import { readStatus } from "../functions/status.ts";
import type { StorageApis } from "../functions/storage.ts";
import { tick } from "../functions/tick.ts";
import { installCrashGuards } from "./guards.ts";
import { writeUsageFiles } from "./usage-files.ts";
import { loadWidgetFiles, WIDGET_DIR } from "./widget-files.ts";

/** What the local server needs. */
export interface ServerOptions {
  dbUrls: { primary: string; secondary: string };
  /** See `Config.fdwUrls`. */
  fdwUrls?: { primary?: string; secondary?: string };
  adminToken: string;
  cronToken: string | null;
  corsOrigins: string[];
  port: number;
  dataDir: string;
  tickSeconds: number;
  /** Where alerts are posted; none when absent. */
  alerts?: AlertConfig | null;
  /** Both projects' Storage APIs (see `Config.storageApis`); Storage is not carried when absent. */
  storageApis?: StorageApis;
  /** Called with each tick's failure (the scheduler itself never stops). */
  onTickError?: (message: string) => void;
}

/** A running local server with its scheduler. */
export interface RunningServer {
  url: string;
  projects: Projects;
  events: EventLog;
  close(): Promise<void>;
}

/**
 * Fails with a readable message when the port is taken, before anything else is started.
 *
 * @example
 * await ensurePortFree(8787);
 */
export async function ensurePortFree(port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once("error", (e: NodeJS.ErrnoException) => {
      reject(
        new Error(
          e.code === "EADDRINUSE" ? `port ${port} is in use; set PORT to a free port` : `cannot listen on port ${port}: ${e.message}`,
        ),
      );
    });
    probe.listen(port, () => probe.close(() => resolve()));
  });
}

/**
 * A free TCP port on the loopback interface.
 *
 * @example
 * const port = await freePort();
 */
export async function freePort(): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Connects to both projects, checks they carry Spillway's migrations and are who they say,
 * serves the API and the widget, and ticks every `tickSeconds` (the local stand-in for the
 * pg_cron job). Events also go to `<dataDir>/spillway.log`, one JSON line each, and after each
 * tick `<dataDir>/usage-<project>.json` hold each project's latest measurement.
 *
 * @example
 * const server = await startServer({ dbUrls, adminToken, cronToken: null, corsOrigins: ["*"], port: 8787, dataDir: ".spillway", tickSeconds: 5 });
 */
export async function startServer(options: ServerOptions): Promise<RunningServer> {
  installCrashGuards();
  const projects = connectProjects(options.dbUrls, {}, options.fdwUrls);
  try {
    await Promise.all([claimProject(projects.primary), claimProject(projects.secondary)]);
  } catch (e) {
    await closeProjects(projects, 1);
    throw e;
  }
  const secrets = [
    options.adminToken,
    options.cronToken,
    options.alerts?.webhookUrl,
    options.alerts?.secret,
    options.storageApis?.primary.serviceKey,
    options.storageApis?.secondary.serviceKey,
    ...[...Object.values(options.dbUrls), ...Object.values(options.fdwUrls ?? {})].map((u) => decodeURIComponent(new URL(u).password)),
  ].filter((s): s is string => Boolean(s));
  const events = new EventLog(projects, { secrets });
  mkdirSync(options.dataDir, { recursive: true });
  const logFile = join(options.dataDir, "spillway.log");
  events.addSink((e) => appendFileSync(logFile, `${JSON.stringify(e)}\n`));
  const alerts = options.alerts ? new AlertSender(events, options.alerts) : null;

  const app = createApp({
    projects,
    events,
    adminToken: options.adminToken,
    cronToken: options.cronToken,
    corsOrigins: options.corsOrigins,
    alerts: options.alerts ?? null,
    storage: options.storageApis ?? null,
    staticFiles: loadWidgetFiles(WIDGET_DIR),
  });
  let server: ServerType;
  await new Promise<void>((resolve, reject) => {
    server = serve({ fetch: app.fetch, port: options.port }, () => resolve());
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(new Error(e.code === "EADDRINUSE" ? `port ${options.port} is in use; set PORT to a free port` : e.message)),
    );
  });

  await events.record("info", "server.started", `Spillway serving on port ${options.port}, ticking every ${options.tickSeconds} s`);

  let running: Promise<unknown> | null = null;
  let stopped = false;
  // A tick still running when the next is due is not doubled: the next one is skipped.
  const runTick = () => {
    if (stopped || running) return;
    running = tick({ projects, events })
      .then(async () => writeUsageFiles(options.dataDir, await readStatus(projects, (t) => events.redact(t))))
      .catch((e) => options.onTickError?.(events.redact(describeError(e))))
      .finally(() => {
        running = null;
      });
  };
  // The first tick (a measurement, and settling anything a crash left) runs before the
  // server is announced, so that operations asked for at once do not meet its lease.
  runTick();
  await running;
  const timer = setInterval(runTick, options.tickSeconds * 1000);

  return {
    url: `http://localhost:${options.port}`,
    projects,
    events,
    async close() {
      stopped = true;
      clearInterval(timer);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      await closed;
      await running;
      await alerts?.close();
      await closeProjects(projects);
    },
  };
}
