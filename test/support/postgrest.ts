import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import postgres from "postgres";

/**
 * STAND-IN for PostgREST (the Supabase Data API), which cannot run here: the smallest part
 * of it that the client helper uses, answering as PostgREST does and backed by the real
 * database. `GET /rest/v1/<table>?select=a,b` and `POST /rest/v1/<table>` (a JSON object
 * or array), run as the `anon` role; errors are `{code, message, details, hint}` with
 * PostgREST's status codes (409 for a unique violation, 401 for a missing privilege, 400
 * for anything else raised by the database, such as Spillway's fence; 503 PGRST000 when the
 * database refuses the connection, as PostgREST answers when it cannot reach it).
 *
 * @example
 * const api = await startDataApi(pair.urls.primary);
 * const res = await fetch(`${api.url}/rest/v1/spillway_active?select=active,epoch`);
 */
export async function startDataApi(dbUrl: string): Promise<{ url: string; hang(on: boolean): void; close(): Promise<void> }> {
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
    try {
      if (req.method === "GET") {
        const columns = (url.searchParams.get("select") ?? "*").split(",").map((c) => c.trim());
        if (!columns.every((c) => c === "*" || /^[a-z_][a-z0-9_]*$/.test(c)))
          return send(400, { code: "PGRST100", message: "bad select", details: null, hint: null });
        const rows = await sql.begin(async (tx) => {
          await tx`set local role anon`;
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
          await tx`set local role anon`;
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
      const status = err.code === "23505" ? 409 : err.code === "42501" ? 401 : 400;
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
