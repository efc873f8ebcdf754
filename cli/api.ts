import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Where the CLI finds the running server, and with which token. */
export interface ApiTarget {
  url: string;
  token: string | null;
}

/** An API answer that was not 2xx, or no answer at all; `details` as the API gave them. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** `SPILLWAY_URL` is not an http(s) URL: a configuration error (exit 2). */
export class TargetError extends Error {}

const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * The server's base URL and admin token from `SPILLWAY_URL` / `SPILLWAY_ADMIN_TOKEN`. Without
 * `SPILLWAY_URL`, the local server (`http://localhost:$PORT`, PORT default 8787). Without a
 * token, a local server's own, from the data dir `spillway start` keeps it in: never sent to
 * any other host.
 *
 * @example
 * const target = apiTarget(process.env);
 */
export function apiTarget(env: Record<string, string | undefined>): ApiTarget {
  const given = env.SPILLWAY_URL?.trim();
  if (given && !/^https?:\/\/[^/\s]+(\/\S*)?$/.test(given)) {
    throw new TargetError("SPILLWAY_URL must be the server's http(s) URL, e.g. https://REF.supabase.co/functions/v1/spillway");
  }
  const url = (given || `http://localhost:${env.PORT?.trim() || "8787"}`).replace(/\/+$/, "");
  let token = env.SPILLWAY_ADMIN_TOKEN?.trim() || null;
  const secrets = join(env.SPILLWAY_DATA_DIR?.trim() || ".spillway", "secrets.json");
  if (!token && LOCAL_HOSTS.has(new URL(url).hostname) && existsSync(secrets)) {
    token = (JSON.parse(readFileSync(secrets, "utf8")) as { adminToken?: string }).adminToken ?? null;
  }
  return { url, token };
}

/**
 * Calls the API and returns the JSON body; any failure becomes an `ApiError` with one line.
 *
 * @example
 * const status = await callApi(target, "GET", "/status");
 */
export async function callApi<T>(target: ApiTarget, method: string, path: string, body?: unknown): Promise<T> {
  const base = target.url.endsWith("/spillway") ? target.url : `${target.url}/spillway`;
  let response: Response;
  try {
    response = await fetch(`${base}${path}`, {
      method,
      headers: {
        ...(target.token ? { Authorization: `Bearer ${target.token}` } : {}),
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15 * 60 * 1000),
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).message;
    throw new ApiError(
      `cannot reach Spillway at ${target.url} (${cause}); is \`spillway start\` running, or SPILLWAY_URL set?`,
      "UNREACHABLE",
      0,
    );
  }
  const text = await response.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ApiError(
      `Spillway at ${target.url} answered ${response.status} with a body that is not JSON`,
      "BAD_RESPONSE",
      response.status,
    );
  }
  if (!response.ok) {
    const error = (json as { error?: { code?: string; message?: string; details?: unknown } }).error;
    const message =
      response.status === 401
        ? target.token
          ? `Spillway at ${target.url} refused the admin token; set SPILLWAY_ADMIN_TOKEN to the server's admin token`
          : `Spillway at ${target.url} needs an admin token; set SPILLWAY_ADMIN_TOKEN`
        : (error?.message ?? "request failed");
    throw new ApiError(`${error?.code ?? response.status}: ${message}`, error?.code ?? "HTTP_ERROR", response.status, error?.details);
  }
  return json as T;
}
