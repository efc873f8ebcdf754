import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import postgres from "postgres";
import { checkJwt, signJwt } from "./jwt.ts";

/** The roles PostgREST's authenticator may switch to on Supabase. */
const API_ROLES = new Set(["anon", "authenticated", "service_role"]);

/** A Data API stand-in: its URL, the project's anon key, and switches for the tests. */
export interface DataApi {
  url: string;
  /** The project's anon key: an HS256 JWT with role `anon`, signed with the project's secret. */
  anonKey: string;
  hang(on: boolean): void;
  close(): Promise<void>;
}

/**
 * STAND-IN for PostgREST (the Supabase Data API), which cannot run here: the smallest part
 * of it that the client helper uses, answering as PostgREST does and backed by the real
 * database. `GET /rest/v1/<table>?select=a,b` and `POST /rest/v1/<table>` (a JSON object
 * or array). As PostgREST behind Supabase's gateway, it takes the bearer token (else the
 * `apikey` header), verifies it (HS256 with the project's JWT secret, not past `exp`) and
 * answers 401 otherwise; each request runs in a transaction as the token's `role`, with
 * `request.jwt.claims` (and `request.jwt.claim.sub`, `.role`) set locally, so RLS policies
 * using `auth.uid()` apply. Errors are `{code, message, details, hint}` with PostgREST's
 * status codes (409 for a unique violation, 401/403 for a missing privilege as anon/as a
 * user, 400 for anything else raised by the database, such as Spillway's fence; 503
 * PGRST000 when the database refuses the connection, as PostgREST answers when it cannot
 * reach it).
 *
 * @example
 * const api = await startDataApi(pair.urls.primary, "the-projects-jwt-secret-0123456789");
 * const res = await fetch(`${api.url}/rest/v1/spillway_active?select=active,epoch`, { headers: { apikey: api.anonKey } });
 */
export async function startDataApi(dbUrl: string, jwtSecret: string): Promise<DataApi> {
  const now = Math.floor(Date.now() / 1000);
  const anonKey = signJwt(jwtSecret, { iss: "supabase", ref: "stand-in", role: "anon", iat: now, exp: now + 10 * 365 * 86400 });
  // PostgREST renders bigint as a JSON number.
  const sql = postgres(dbUrl, {
    max: 4,
    onnotice: () => {},
    // PostgREST answers at once while its database is down (503), never after a growing wait.
    backoff: () => 0,
    types: { int8: { to: 20, from: [20], parse: (x: string) => Number(x), serialize: (x: number) => String(x) } },
  });
  let hanging = false;
  const server: Server = createServer(async (req, res) => {
    if (hanging) return; // never answers: a project that hangs
    const url = new URL(req.url ?? "/", "http://stand-in");
    const match = /^\/rest\/v1\/([a-z_][a-z0-9_]*)$/.exec(url.pathname);
    // PostgREST answers browsers from any origin.
    const cors = {
      "Access-Control-Allow-Origin": "*",
      "Access-Control-Allow-Headers": "*",
      "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    };
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "Content-Type": "application/json", ...cors });
      res.end(body === undefined ? "" : JSON.stringify(body));
    };
    if (req.method === "OPTIONS") {
      res.writeHead(204, cors);
      return res.end();
    }
    if (!match) return send(404, { code: "PGRST125", message: "Invalid path specified in request URL", details: null, hint: null });
    const table = match[1]!;
    const token = /^Bearer (.+)$/i.exec(req.headers.authorization ?? "")?.[1] ?? req.headers.apikey;
    if (typeof token !== "string")
      return send(401, { message: "No API key found in request", hint: "No `apikey` request header or url param was found." });
    const checked = checkJwt(jwtSecret, token);
    if ("refused" in checked) {
      res.setHeader(
        "WWW-Authenticate",
        `Bearer error="invalid_token", error_description="${checked.refused === "expired" ? "JWT expired" : "JWSError JWSInvalidSignature"}"`,
      );
      return checked.refused === "expired"
        ? send(401, { code: "PGRST303", message: "JWT expired", details: null, hint: null })
        : send(401, {
            code: "PGRST301",
            message: checked.refused === "malformed" ? "Expected 3 parts in JWT; got 1" : "JWSError JWSInvalidSignature",
            details: null,
            hint: null,
          });
    }
    const claims = checked.claims;
    const role = typeof claims.role === "string" ? claims.role : "anon";
    if (!API_ROLES.has(role)) return send(401, { code: "PGRST301", message: `role "${role}" does not exist`, details: null, hint: null });
    // As PostgREST does before the request's query: the token's role and claims, for this transaction only.
    const asToken = async (tx: postgres.TransactionSql) => {
      await tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
        set_config('request.jwt.claim.sub', ${typeof claims.sub === "string" ? claims.sub : ""}, true),
        set_config('request.jwt.claim.role', ${role}, true), set_config('request.method', ${req.method ?? ""}, true),
        set_config('request.path', ${url.pathname}, true)`;
    };
    try {
      if (req.method === "GET") {
        const columns = (url.searchParams.get("select") ?? "*").split(",").map((c) => c.trim());
        if (!columns.every((c) => c === "*" || /^[a-z_][a-z0-9_]*$/.test(c)))
          return send(400, { code: "PGRST100", message: "bad select", details: null, hint: null });
        const rows = await sql.begin(async (tx) => {
          await asToken(tx);
          return columns[0] === "*"
            ? await tx`select * from ${tx(`public.${table}`)}`
            : await tx`select ${tx(columns)} from ${tx(`public.${table}`)}`;
        });
        return send(200, rows);
      }
      if (req.method === "POST") {
        const chunks: Buffer[] = [];
        for await (const c of req) chunks.push(c as Buffer);
        const parsed = JSON.parse(Buffer.concat(chunks).toString() || "{}");
        const rows = Array.isArray(parsed) ? parsed : [parsed];
        const inserted = await sql.begin(async (tx) => {
          await asToken(tx);
          return await tx`insert into ${tx(`public.${table}`)} ${tx(rows)} returning *`;
        });
        const wantsRows = /return=representation/.test(String(req.headers.prefer ?? ""));
        return send(201, wantsRows ? inserted : undefined);
      }
      return send(405, { code: "PGRST105", message: "method not allowed", details: null, hint: null });
    } catch (e) {
      const err = e as { code?: string; message?: string; detail?: string; hint?: string };
      // As PostgREST answers when it cannot connect to its database (the request did not run).
      if (err.code === "ECONNREFUSED" || err.code === "57P03") {
        return send(503, {
          code: "PGRST000",
          message: "Could not connect with the database due to an incorrect db-uri or due to the PostgreSQL service not running.",
          details: err.message ?? null,
          hint: null,
        });
      }
      const status = err.code === "23505" ? 409 : err.code === "42501" ? (role === "anon" ? 401 : 403) : 400;
      return send(status, {
        code: err.code ?? "PGRST000",
        message: err.message ?? String(e),
        details: err.detail ?? null,
        hint: err.hint ?? null,
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    anonKey,
    hang(on) {
      hanging = on;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await sql.end({ timeout: 1 });
    },
  };
}
