import { createInterface } from "node:readline/promises";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../functions/config.ts";
import { describeError, SpillwayError } from "../functions/errors.ts";
import type { SpillwayEvent } from "../functions/events.ts";
import type { Run } from "../functions/runs.ts";
import type { Status } from "../functions/status.ts";
import type { SwitchResult } from "../functions/switchover.ts";
import type { VerifyResult } from "../functions/verify.ts";
import { ApiError, type ApiTarget, apiTarget, callApi, TargetError } from "./api.ts";
import { parseAssignments } from "./assignments.ts";
import { EmbeddedPostgresMissing } from "./cluster.ts";
import { doctor } from "./doctor.ts";
import { type ConfigView, formatBytes, formatConfig, formatDoctor, formatEvents, formatRun, formatStatus, formatVerify } from "./format.ts";
import { init } from "./init.ts";
import { install } from "./install.ts";
import { start } from "./start.ts";

const USAGE = `usage: spillway <command> [options]

  start [--demo]         run Spillway locally (two embedded Postgres servers unless
                         SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL are set);
                         --demo: a small quota and a writer, to watch a backup and a
                         switch happen within about two minutes
  install [dir]          copy Spillway's migrations into an app's supabase/migrations
  init --url URL         store the function URL (…/functions/v1/spillway) and
                         SPILLWAY_CRON_TOKEN where pg_cron's job reads them, in both
                         projects (SPILLWAY_PRIMARY_DB_URL, SPILLWAY_SECONDARY_DB_URL)
  status [--json]        both projects, roles, usage, last backup
  logs [--limit N] [--level info|warn|error] [--json]
                         latest events, newest first
  backup [--full] [--verify] [--force] [--json]
                         back the active project up to the standby now; --force even
                         when it would put the standby over its switch threshold
  verify [--json]        compare every replicated table on both projects
  switch [--to NAME] [--force] [--yes] [--json]
                         make the standby (or NAME) the active project; asks first
                         on a terminal unless --yes
  config [--json]        the settings, one key = value line each
  config set KEY=VALUE ... [--confirm]
                         change settings (e.g. switchThreshold=0.92
                         quotaBytes.primary=600000000 schemas=public,shop); --confirm
                         for a change that would leave data behind or act at once
  doctor [--json]        check each project's setup (SPILLWAY_PRIMARY_DB_URL,
                         SPILLWAY_SECONDARY_DB_URL): migrations, cron job, pg_net,
                         secrets, slot, fence, a tick in the last 2 minutes

Commands that talk to a server use SPILLWAY_URL (default http://localhost:8787) and
SPILLWAY_ADMIN_TOKEN (default: the token of a local \`spillway start\`).`;

/** Exit codes: 0 done, 1 the operation failed, 2 the command line was wrong. */
class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const out = (line: string) => process.stdout.write(`${line}\n`);
  switch (command) {
    case "start": {
      const { values } = parse(rest, { demo: { type: "boolean" } });
      // The demo ticks every 2 s unless told otherwise, so that it spills within minutes.
      const env = values.demo ? { SPILLWAY_TICK_SECONDS: "2", ...process.env } : process.env;
      await start(loadConfig(env, "start"), out, { demo: values.demo === true });
      return 0;
    }
    case "install": {
      const { positionals } = parse(rest, {}, true);
      if (positionals.length > 1) throw new UsageError("install takes at most one folder");
      const copied = install(positionals[0] ?? ".");
      out(
        copied.length
          ? `copied ${copied.length} migration(s): ${copied.join(", ")}`
          : "Spillway's migrations are already installed; nothing copied",
      );
      return 0;
    }
    case "init": {
      const { values } = parse(rest, { url: { type: "string" } });
      const url = String(values.url ?? "");
      if (!/^https?:\/\/\S+$/.test(url))
        throw new UsageError("init needs --url with the function's http(s) URL, e.g. https://REF.supabase.co/functions/v1/spillway");
      const config = loadConfig(process.env, "init");
      for (const line of await init(config.dbUrls!, url, config.cronToken!)) out(line);
      return 0;
    }
    case "status": {
      const { values } = parse(rest, { json: { type: "boolean" } });
      const status = await callApi<Status>(apiTarget(process.env), "GET", "/status");
      out(values.json ? JSON.stringify(status, null, 2) : formatStatus(status));
      return 0;
    }
    case "logs": {
      const { values } = parse(rest, { json: { type: "boolean" }, limit: { type: "string" }, level: { type: "string" } });
      if (values.limit !== undefined && !/^\d+$/.test(String(values.limit)))
        throw new UsageError(`--limit must be a whole number, not "${values.limit}"`);
      if (values.level !== undefined && !["info", "warn", "error"].includes(String(values.level)))
        throw new UsageError(`--level must be info, warn or error, not "${values.level}"`);
      const query = new URLSearchParams();
      if (values.limit !== undefined) query.set("limit", String(values.limit));
      if (values.level !== undefined) query.set("level", String(values.level));
      const { events } = await callApi<{ events: SpillwayEvent[] }>(apiTarget(process.env), "GET", `/logs${query.size ? `?${query}` : ""}`);
      out(values.json ? JSON.stringify(events, null, 2) : formatEvents(events) || "no events yet");
      return 0;
    }
    case "backup": {
      const { values } = parse(rest, {
        json: { type: "boolean" },
        full: { type: "boolean" },
        verify: { type: "boolean" },
        force: { type: "boolean" },
      });
      const target = apiTarget(process.env);
      const stopProgress = values.json ? () => {} : showProgress(target);
      try {
        let { run } = await callApi<{ run: Run }>(target, "POST", "/force-backup", {
          mode: values.full ? "full" : "auto",
          verify: values.verify ?? false,
          force: values.force ?? false,
        });
        // A staged full backup answers after each call's budget; it goes on until published.
        // Its room was checked at the first call: the staged copy itself must not fail that check.
        while (run.status === "running")
          ({ run } = await callApi<{ run: Run }>(target, "POST", "/force-backup", { mode: "auto", verify: false, force: true }));
        stopProgress();
        out(values.json ? JSON.stringify(run, null, 2) : formatRun(run));
      } finally {
        stopProgress();
      }
      return 0;
    }
    case "verify": {
      const { values } = parse(rest, { json: { type: "boolean" } });
      const { verify } = await callApi<{ verify: VerifyResult }>(apiTarget(process.env), "POST", "/verify");
      out(values.json ? JSON.stringify(verify, null, 2) : formatVerify(verify));
      return verify.ok ? 0 : 1;
    }
    case "switch": {
      const { values } = parse(rest, {
        to: { type: "string" },
        force: { type: "boolean" },
        yes: { type: "boolean" },
        json: { type: "boolean" },
      });
      if (values.to !== undefined && values.to !== "primary" && values.to !== "secondary")
        throw new UsageError(`--to must be primary or secondary, not "${values.to}"`);
      const target = apiTarget(process.env);
      if (!values.yes) {
        if (!process.stdin.isTTY) throw new UsageError("a switch needs --yes when it is not run on a terminal");
        const status = await callApi<Status>(target, "GET", "/status");
        const to = values.to ?? status.standby;
        const answer = await ask(
          `Switch the active project from ${status.active} to ${to} (epoch ${status.epoch} → ${status.epoch + 1})${values.force ? ", forced" : ""}? [y/N] `,
        );
        if (!/^y(es)?$/i.test(answer.trim())) {
          out("cancelled; nothing changed");
          return 1;
        }
      }
      const { switch: result } = await callApi<{ switch: SwitchResult }>(target, "POST", "/force-switch", {
        to: values.to,
        force: values.force ?? false,
      });
      out(
        values.json
          ? JSON.stringify(result, null, 2)
          : `${result.to} is now active (epoch ${result.epoch}); app writes were blocked for ${result.writesBlockedMs} ms; the switch took ${result.durationMs} ms` +
              (result.dataLossSince ? `; changes made on ${result.from} after ${result.dataLossSince} may be missing` : ""),
      );
      return 0;
    }
    case "config": {
      const { values, positionals } = parse(rest, { json: { type: "boolean" }, confirm: { type: "boolean" } }, true);
      const target = apiTarget(process.env);
      if (positionals.length === 0) {
        const view = await callApi<ConfigView>(target, "GET", "/config");
        out(values.json ? JSON.stringify(view, null, 2) : formatConfig(view));
        return 0;
      }
      const [verb, ...assignments] = positionals;
      if (verb !== "set") throw new UsageError(`config takes "set KEY=VALUE ...", not "${verb}"`);
      if (assignments.length === 0) throw new UsageError("config set needs at least one KEY=VALUE, e.g. switchThreshold=0.92");
      let patch: Record<string, unknown>;
      try {
        patch = parseAssignments(assignments);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      try {
        const { settings } = await callApi<{ settings: Record<string, unknown> }>(target, "PATCH", "/config", {
          ...patch,
          ...(values.confirm ? { confirm: true } : {}),
        });
        out(values.json ? JSON.stringify(settings, null, 2) : `saved: ${Object.keys(patch).join(", ")}`);
        return 0;
      } catch (e) {
        if (!(e instanceof ApiError) || e.code !== "CONFIRM_REQUIRED") throw e;
        const consequences = (e.details as { consequences?: string[] } | undefined)?.consequences ?? [e.message];
        for (const c of consequences) process.stderr.write(`spillway: ${c}\n`);
        process.stderr.write("spillway: nothing changed; run again with --confirm to make this change\n");
        return 1;
      }
    }
    case "doctor": {
      const { values } = parse(rest, { json: { type: "boolean" } });
      const config = loadConfig(process.env, "doctor");
      const report = await doctor(config.dbUrls!);
      out(values.json ? JSON.stringify(report, null, 2) : formatDoctor(report));
      return report.ok ? 0 : 1;
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      out(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${command}"; run \`spillway help\``);
  }
}

// On a terminal, a long backup shows where it is, from the run's progress in /status.
function showProgress(target: ApiTarget): () => void {
  if (!process.stderr.isTTY) return () => {};
  let shown = false;
  const timer = setInterval(() => {
    callApi<Status>(target, "GET", "/status").then(
      (s) => {
        const run = s.lastBackup;
        if (run?.status !== "running") return;
        const p = run.progress as {
          phase?: string;
          table?: string | null;
          tablesDone?: number;
          tablesTotal?: number;
          rows?: number;
          bytes?: number;
        };
        process.stderr.write(
          `\r\x1b[K${p.phase ?? "starting"} ${p.tablesDone ?? 0}/${p.tablesTotal ?? "?"} tables, ${p.rows ?? 0} rows, ${formatBytes(p.bytes ?? 0)}${p.table ? ` (${p.table})` : ""}`,
        );
        shown = true;
      },
      () => undefined,
    );
  }, 1000);
  return () => {
    clearInterval(timer);
    if (shown) process.stderr.write("\r\x1b[K");
    shown = false;
  };
}

async function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

type Options = Parameters<typeof parseArgs>[0] extends infer T ? (T extends { options?: infer O } ? O : never) : never;

function parse(args: string[], options: Options, allowPositionals = false) {
  try {
    return parseArgs({ args, options: options ?? {}, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`spillway: ${e.message}\n`);
      process.exit(2);
    }
    if (e instanceof ConfigError) {
      for (const p of e.problems) process.stderr.write(`spillway: ${p}\n`);
      process.exit(2);
    }
    if (e instanceof TargetError || e instanceof EmbeddedPostgresMissing) {
      process.stderr.write(`spillway: ${e.message}\n`);
      process.exit(2);
    }
    // A request the server found malformed is the command line's mistake: one line per field.
    if (e instanceof ApiError && e.status === 400 && e.details && typeof e.details === "object") {
      for (const [field, why] of Object.entries(e.details)) process.stderr.write(`spillway: ${field} ${why}\n`);
      process.exit(2);
    }
    const message = e instanceof ApiError || e instanceof SpillwayError ? e.message : describeError(e);
    process.stderr.write(`spillway: ${message}\n`);
    process.exit(1);
  },
);
