import type { AlertConfig } from "./alerts.ts";
import type { StorageApis } from "./storage.ts";

/** Process configuration, read once from the environment by the entries (never below them). */
export interface Config {
  /** Both set, or both unset (embedded mode, `spillway start` only). */
  dbUrls: { primary: string; secondary: string } | null;
  /**
   * Optional, per project: the URL the other project's fdw link reaches it by, when the
   * database URL is a transaction-mode pooler's (postgres_fdw keeps session settings).
   */
  fdwUrls: { primary?: string; secondary?: string };
  adminToken: string | null;
  cronToken: string | null;
  /** `["*"]` allows any origin: the widget authenticates with a bearer token, never cookies. */
  corsOrigins: string[];
  dataDir: string;
  port: number;
  /** Seconds between ticks of the local scheduler (`spillway start`), the stand-in for pg_cron. */
  tickSeconds: number;
  /** Where alerts are posted (`SPILLWAY_ALERT_WEBHOOK_URL`, `SPILLWAY_ALERT_SECRET`); null: none. */
  alerts: AlertConfig | null;
  /**
   * Each project's API URL and service key (`SPILLWAY_<PROJECT>_API_URL`,
   * `SPILLWAY_<PROJECT>_SERVICE_KEY`), for carrying Storage; null: Storage is not carried.
   */
  storageApis: StorageApis;
}

/** Thrown by `loadConfig` with one line per problem, each naming its variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
}

const MIN_TOKEN_LENGTH = 16;

/**
 * Who reads the configuration, and so what it must hold: `start` (the local server) needs the
 * admin token once it is given database URLs; `function` (the Edge Function) needs both URLs
 * and the admin token; `init` both URLs and the cron token; `doctor` both URLs; `any` nothing.
 */
export type ConfigPurpose = "any" | "start" | "function" | "init" | "doctor";

/**
 * Validates the environment and returns the configuration, or throws a `ConfigError`
 * listing every problem at once, before anything connects.
 *
 * @example
 * const config = loadConfig({ SPILLWAY_ADMIN_TOKEN: "a-long-enough-secret" }, "start");
 */
export function loadConfig(env: Record<string, string | undefined>, purpose: ConfigPurpose = "any"): Config {
  const problems: string[] = [];
  const value = (name: string) => {
    const v = env[name]?.trim();
    return v ? v : null;
  };

  const primary = value("SPILLWAY_PRIMARY_DB_URL");
  const secondary = value("SPILLWAY_SECONDARY_DB_URL");
  for (const [name, url] of [
    ["SPILLWAY_PRIMARY_DB_URL", primary],
    ["SPILLWAY_SECONDARY_DB_URL", secondary],
  ] as const) {
    if (url && !isPostgresUrl(url)) problems.push(`${name} must be a postgres:// or postgresql:// URL with a host`);
  }
  if ((primary === null) !== (secondary === null)) {
    problems.push(
      `SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL must be set together (only ${primary ? "the primary" : "the secondary"} is set)`,
    );
  }
  const fdwUrls: Config["fdwUrls"] = {};
  for (const [project, name] of [
    ["primary", "SPILLWAY_PRIMARY_FDW_URL"],
    ["secondary", "SPILLWAY_SECONDARY_FDW_URL"],
  ] as const) {
    const url = value(name);
    if (url === null) continue;
    if (!isPostgresUrl(url)) problems.push(`${name} must be a postgres:// or postgresql:// URL with a host`);
    else fdwUrls[project] = url;
  }
  if (primary && secondary && isPostgresUrl(primary) && isPostgresUrl(secondary) && databaseKey(primary) === databaseKey(secondary)) {
    problems.push("SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL point at the same database");
  }
  if (purpose !== "any" && purpose !== "start" && primary === null && secondary === null) {
    problems.push(`SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL must be set${purpose === "function" ? "" : ` for ${purpose}`}`);
  }

  const adminToken = value("SPILLWAY_ADMIN_TOKEN");
  if (adminToken !== null && adminToken.length < MIN_TOKEN_LENGTH) {
    problems.push(`SPILLWAY_ADMIN_TOKEN must be at least ${MIN_TOKEN_LENGTH} characters`);
  }
  if (adminToken === null && (purpose === "function" || (purpose === "start" && (primary !== null || secondary !== null)))) {
    problems.push(
      purpose === "function"
        ? "SPILLWAY_ADMIN_TOKEN must be set"
        : "SPILLWAY_ADMIN_TOKEN must be set when SPILLWAY_PRIMARY_DB_URL and SPILLWAY_SECONDARY_DB_URL are",
    );
  }
  const cronToken = value("SPILLWAY_CRON_TOKEN");
  if (cronToken === null && purpose === "init") problems.push("SPILLWAY_CRON_TOKEN must be set for init (the same value the function has)");
  if (cronToken !== null && cronToken.length < MIN_TOKEN_LENGTH) {
    problems.push(`SPILLWAY_CRON_TOKEN must be at least ${MIN_TOKEN_LENGTH} characters`);
  }
  if (cronToken !== null && cronToken === adminToken) {
    problems.push("SPILLWAY_CRON_TOKEN must differ from SPILLWAY_ADMIN_TOKEN (the cron token may only call /tick)");
  }

  const corsOrigins = (value("SPILLWAY_CORS_ORIGINS") ?? "*")
    .split(",")
    .map((o) => o.trim())
    .filter(Boolean);
  for (const origin of corsOrigins) {
    if (origin !== "*" && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      problems.push(`SPILLWAY_CORS_ORIGINS: "${origin}" is not an origin like https://app.example.com`);
    }
  }

  const portText = value("PORT") ?? "8787";
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port < 1 || port > 65535) problems.push(`PORT must be a number from 1 to 65535, not "${portText}"`);

  const tickText = value("SPILLWAY_TICK_SECONDS") ?? "5";
  const tickSeconds = Number(tickText);
  if (!/^\d+(\.\d+)?$/.test(tickText) || tickSeconds < 0.2 || tickSeconds > 3600) {
    problems.push(`SPILLWAY_TICK_SECONDS must be a number of seconds from 0.2 to 3600, not "${tickText}"`);
  }

  const webhookUrl = value("SPILLWAY_ALERT_WEBHOOK_URL");
  const alertSecret = value("SPILLWAY_ALERT_SECRET");
  // The URL is a secret: problems name the variable, never its value.
  if (webhookUrl !== null && !isHttpUrl(webhookUrl)) problems.push("SPILLWAY_ALERT_WEBHOOK_URL must be an http:// or https:// URL");
  if (alertSecret !== null && webhookUrl === null) problems.push("SPILLWAY_ALERT_SECRET is set but SPILLWAY_ALERT_WEBHOOK_URL is not");
  if (alertSecret !== null && alertSecret.length < MIN_TOKEN_LENGTH)
    problems.push(`SPILLWAY_ALERT_SECRET must be at least ${MIN_TOKEN_LENGTH} characters`);

  const storageApis = readStorageApis(value, problems);

  if (problems.length > 0) throw new ConfigError(problems);
  return {
    dbUrls: primary && secondary ? { primary, secondary } : null,
    fdwUrls,
    adminToken,
    cronToken,
    corsOrigins,
    dataDir: value("SPILLWAY_DATA_DIR") ?? ".spillway",
    port,
    tickSeconds,
    alerts: webhookUrl ? { webhookUrl, secret: alertSecret } : null,
    storageApis,
  };
}

// The four variables come together or not at all; the keys are secrets: problems name the
// variable, never its value.
function readStorageApis(value: (name: string) => string | null, problems: string[]): StorageApis {
  const names = [
    "SPILLWAY_PRIMARY_API_URL",
    "SPILLWAY_PRIMARY_SERVICE_KEY",
    "SPILLWAY_SECONDARY_API_URL",
    "SPILLWAY_SECONDARY_SERVICE_KEY",
  ];
  const [primaryUrl, primaryKey, secondaryUrl, secondaryKey] = names.map(value);
  const set = names.filter((_, i) => [primaryUrl, primaryKey, secondaryUrl, secondaryKey][i] !== null);
  if (set.length === 0) return null;
  if (set.length < names.length) {
    problems.push(`${names.filter((n) => !set.includes(n)).join(", ")} must be set too (Storage is carried with all four, or none)`);
    return null;
  }
  for (const [name, url] of [
    ["SPILLWAY_PRIMARY_API_URL", primaryUrl],
    ["SPILLWAY_SECONDARY_API_URL", secondaryUrl],
  ] as const) {
    if (!isHttpUrl(url!)) problems.push(`${name} must be an http:// or https:// URL like https://<ref>.supabase.co`);
  }
  return {
    primary: { url: primaryUrl!, serviceKey: primaryKey! },
    secondary: { url: secondaryUrl!, serviceKey: secondaryKey! },
  };
}

// A URL the drivers and the log redaction can both read: user and password decode too.
function isPostgresUrl(text: string): boolean {
  try {
    const url = new URL(text);
    decodeURIComponent(url.username);
    decodeURIComponent(url.password);
    return (url.protocol === "postgres:" || url.protocol === "postgresql:") && url.hostname !== "";
  } catch {
    return false;
  }
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
  } catch {
    return false;
  }
}

/**
 * What tells two databases apart: host, port, database, and the tenant a pooler routes by.
 * On Supabase's shared pooler every project has the same host and port, and the user name
 * `postgres.<ref>` names the project; elsewhere the user name names only a role.
 *
 * @example
 * databaseKey("postgres://postgres.abc:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres")
 * // "aws-0-eu-west-1.pooler.supabase.com:5432/postgres?tenant=abc"
 */
export function databaseKey(text: string): string {
  const u = new URL(text);
  const user = decodeURIComponent(u.username);
  const dot = user.indexOf(".");
  const tenant = dot < 0 ? "" : user.slice(dot + 1);
  const database = decodeURIComponent(u.pathname.replace(/^\//, "")) || "postgres";
  return `${u.hostname.toLowerCase()}:${u.port || "5432"}/${database}?tenant=${tenant}`;
}
