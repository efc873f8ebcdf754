import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Where the CLI finds the running server, and with which token. */
export interface ApiTarget {
  url: string;
  token: string | null;
}

/** An API answer that was not 2xx, or no answer at all. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/**
 * The server's base URL and admin token from `SPILLWAY_URL` / `SPILLWAY_ADMIN_TOKEN`, falling
 * back to the local embedded server and the token `spillway start` keeps in its data dir.
 *
 * @example
 * const target = apiTarget(process.env);
 */
export function apiTarget(env: Record<string, string | undefined>): ApiTarget {
  const url = (env.SPILLWAY_URL?.trim() || `http://localhost:${env.PORT?.trim() || "8787"}`).replace(/\/+$/, "");
  let token = env.SPILLWAY_ADMIN_TOKEN?.trim() || null;
  const secrets = join(env.SPILLWAY_DATA_DIR?.trim() || ".spillway", "secrets.json");
  if (!token && existsSync(secrets)) token = (JSON.parse(readFileSync(secrets, "utf8")) as { adminToken?: string }).adminToken ?? null;
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
    const error = (json as { error?: { code?: string; message?: string } }).error;
    throw new ApiError(
      `${error?.code ?? response.status}: ${error?.message ?? "request failed"}`,
      error?.code ?? "HTTP_ERROR",
      response.status,
    );
  }
  return json as T;
}
