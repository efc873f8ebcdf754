import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../functions/config.ts";
import { describeError, SpillwayError } from "../functions/errors.ts";
import type { Status } from "../functions/status.ts";
import type { SpillwayEvent } from "../functions/events.ts";
import { apiTarget, callApi, ApiError } from "./api.ts";
import { formatEvents, formatStatus } from "./format.ts";
import { install } from "./install.ts";
import { start } from "./start.ts";

const USAGE = `usage: spillway <command> [options]

  start                  run Spillway locally (two embedded Postgres servers unless
                         SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL are set)
  install [dir]          copy Spillway's migrations into an app's supabase/migrations
  status [--json]        both projects, roles, usage, last backup
  logs [--limit N] [--level info|warn|error] [--json]
                         latest events, newest first

Commands that talk to a server use SPILLWAY_URL (default http://localhost:8787) and
SPILLWAY_ADMIN_TOKEN (default: the token of a local \`spillway start\`).`;

/** Exit codes: 0 done, 1 the operation failed, 2 the command line was wrong. */
class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const out = (line: string) => process.stdout.write(line + "\n");
  switch (command) {
    case "start": {
      parse(rest, {});
      await start(loadConfig(process.env), out);
      return 0;
    }
    case "install": {
      const { positionals } = parse(rest, {}, true);
      if (positionals.length > 1) throw new UsageError("install takes at most one folder");
      const copied = install(positionals[0] ?? ".");
      out(copied.length ? `copied ${copied.length} migration(s): ${copied.join(", ")}` : "Spillway's migrations are already installed; nothing copied");
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
      const query = new URLSearchParams();
      if (values.limit !== undefined) query.set("limit", String(values.limit));
      if (values.level !== undefined) query.set("level", String(values.level));
      const { events } = await callApi<{ events: SpillwayEvent[] }>(apiTarget(process.env), "GET", `/logs${query.size ? `?${query}` : ""}`);
      out(values.json ? JSON.stringify(events, null, 2) : formatEvents(events) || "no events yet");
      return 0;
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

type Options = Parameters<typeof parseArgs>[0] extends infer T ? T extends { options?: infer O } ? O : never : never;

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
    const message = e instanceof ApiError || e instanceof SpillwayError ? e.message : describeError(e);
    process.stderr.write(`spillway: ${message}\n`);
    process.exit(1);
  },
);
