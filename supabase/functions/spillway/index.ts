// Spillway's Edge Function entry: wires configuration and serves the app. Nothing else.

import { AlertSender } from "../../../functions/alerts.ts";
import { createApp } from "../../../functions/app.ts";
import { type Config, ConfigError, loadConfig } from "../../../functions/config.ts";
import { isWriteAfterClose } from "../../../functions/errors.ts";
import { EventLog } from "../../../functions/events.ts";
import { claimProject, connectProjects } from "../../../functions/project.ts";

function serveConfigError(problems: string[]): void {
  for (const p of problems) console.error(`spillway: ${p}`);
  const body = JSON.stringify({ error: { code: "CONFIG_INVALID", message: problems.join("; ") } });
  Deno.serve(() => new Response(body, { status: 500, headers: { "Content-Type": "application/json" } }));
}

let config: Config | null;
try {
  config = loadConfig(Deno.env.toObject(), "function");
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  serveConfigError(e.problems);
  config = null;
}

// See isWriteAfterClose: a dead connection's late write must not end the isolate.
globalThis.addEventListener("error", (event) => {
  if (isWriteAfterClose(event.error)) event.preventDefault();
});

if (config?.dbUrls && config.adminToken) {
  // Two connections per project: a backup or switch holds one in its transaction, and its
  // lease renewal and progress go through the other, never waiting for the run itself.
  const projects = connectProjects(config.dbUrls, { max: 2, connectTimeout: 5 }, config.fdwUrls);
  const secrets = [
    config.adminToken,
    config.cronToken,
    config.alerts?.webhookUrl,
    config.alerts?.secret,
    config.storageApis?.primary.serviceKey,
    config.storageApis?.secondary.serviceKey,
    ...[...Object.values(config.dbUrls), ...Object.values(config.fdwUrls)].map((u) => decodeURIComponent(new URL(u).password)),
  ].filter((s): s is string => Boolean(s));
  const events = new EventLog(projects, { secrets, sinks: [(e) => console.log(JSON.stringify(e))] });
  const alerts = config.alerts ? new AlertSender(events, config.alerts) : null;
  // Requests wait for the first contact with both projects: what they read needs its record.
  const claimed = Promise.all(
    [projects.primary, projects.secondary].map((p) =>
      claimProject(p).catch((e) => console.error(`spillway: ${events.redact(String(e?.message ?? e))}`)),
    ),
  );
  const app = createApp({
    projects,
    events,
    adminToken: config.adminToken,
    cronToken: config.cronToken,
    corsOrigins: config.corsOrigins,
    alerts: config.alerts,
    storage: config.storageApis,
    runtime: "edge",
    // Supabase ends an Edge Function's call after 150 s of wall clock.
    wallClockMs: 150_000,
  });
  // Supabase may end an isolate once its answer is sent: alerts queued by a request are
  // handed to EdgeRuntime.waitUntil so they are still delivered (absent outside Supabase).
  const edge = (globalThis as { EdgeRuntime?: { waitUntil(p: Promise<unknown>): void } }).EdgeRuntime;
  Deno.serve({ port: config.port }, async (request) => {
    await claimed;
    const response = await app.fetch(request);
    if (alerts && edge) edge.waitUntil(alerts.idle());
    return response;
  });
}
