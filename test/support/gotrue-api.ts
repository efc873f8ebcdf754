import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { passwordSignIn, refreshToken, type SignedIn } from "./gotrue.ts";
import { checkJwt, signJwt } from "./jwt.ts";
import type { TestServer } from "./postgres.ts";

/**
 * STAND-IN for Supabase Auth's HTTP API (GoTrue), which cannot run here: the smallest part
 * of it supabase-js calls to sign in, keep and refresh a session, and sign out, answering
 * as GoTrue does and backed by the real database through the writes of `gotrue.ts` (as
 * GoTrue's own role). Access tokens are HS256 JWTs signed with the project's JWT secret
 * (node:crypto), as a project with a legacy JWT secret issues them; each carries the
 * session's id, and a token whose session is gone is refused, as GoTrue does.
 *
 * - `POST /auth/v1/token?grant_type=password` `{email, password}`: a session.
 * - `POST /auth/v1/token?grant_type=refresh_token` `{refresh_token}`: a session, the old
 *   token revoked (looked up in the tables of the project this front serves).
 * - `GET /auth/v1/user` (bearer access token): the user.
 * - `POST /auth/v1/logout?scope=local|global|others` (bearer access token): 204.
 *
 * Any other path is passed on to `next` (the Data API stand-in), so that one URL serves a
 * project as Supabase's does. A database error (the fence's included) is a 500, as GoTrue
 * answers it.
 *
 * @example
 * const api = await startAuthApi(pair.primary, { jwtSecret: SECRET, next: dataApi.url });
 */
export async function startAuthApi(
  db: TestServer,
  options: { jwtSecret: string; next: string; accessTokenSeconds?: number },
): Promise<{ url: string; close(): Promise<void> }> {
  const ttl = options.accessTokenSeconds ?? 3600;
  const session = async (s: SignedIn) => {
    const [user] = await db.admin`select * from auth.users where id = ${s.userId}`;
    const now = Math.floor(Date.now() / 1000);
    const access_token = signJwt(options.jwtSecret, {
      aud: "authenticated",
      exp: now + ttl,
      iat: now,
      sub: s.userId,
      email: user!.email,
      role: "authenticated",
      aal: "aal1",
      amr: [{ method: "password", timestamp: now }],
      session_id: s.sessionId,
      is_anonymous: false,
    });
    return {
      access_token,
      token_type: "bearer",
      expires_in: ttl,
      expires_at: now + ttl,
      refresh_token: s.refreshToken,
      user: userJson(user!),
    };
  };
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://stand-in");
    const cors = {
      "Access-Control-Allow-Origin": "*",
      "Access-Control-Allow-Headers": "*",
      "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    };
    const send = (status: number, body?: unknown) => {
      res.writeHead(status, { "Content-Type": "application/json", ...cors });
      res.end(body === undefined ? "" : JSON.stringify(body));
    };
    const fail = (status: number, error_code: string, msg: string) => send(status, { code: status, error_code, msg });
    if (!url.pathname.startsWith("/auth/v1/")) return await pass(req, res, options.next);
    if (req.method === "OPTIONS") return send(204);
    try {
      const route = `${req.method} ${url.pathname.slice("/auth/v1".length)}`;
      if (route === "POST /token") {
        const body = JSON.parse((await read(req)) || "{}");
        const grant = url.searchParams.get("grant_type");
        if (grant === "password") {
          const s = await passwordSignIn(db, String(body.email ?? ""), String(body.password ?? ""));
          return s ? send(200, await session(s)) : fail(400, "invalid_credentials", "Invalid login credentials");
        }
        if (grant === "refresh_token") {
          const s = await refreshToken(db, String(body.refresh_token ?? ""));
          return s ? send(200, await session(s)) : fail(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found");
        }
        return fail(400, "validation_failed", "unsupported_grant_type");
      }
      const checked = checkJwt(options.jwtSecret, /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "");
      // GoTrue takes only its own access tokens here, which always carry an expiry.
      if ("refused" in checked || typeof checked.claims.exp !== "number")
        return fail(403, "bad_jwt", "invalid JWT: unable to parse or verify signature");
      const claims = checked.claims;
      const [live] = await db.admin`select user_id from auth.sessions where id = ${String(claims.session_id)}::uuid`;
      if (!live) return fail(403, "session_not_found", "Session from session_id claim in JWT does not exist");
      if (route === "GET /user") {
        const [user] = await db.admin`select * from auth.users where id = ${live.user_id}`;
        return user ? send(200, userJson(user)) : fail(403, "user_not_found", "User from sub claim in JWT does not exist");
      }
      if (route === "POST /logout") {
        const scope = url.searchParams.get("scope") ?? "global";
        await db.admin.begin(async (tx) => {
          await tx`set local role supabase_auth_admin`;
          if (scope === "local") await tx`delete from auth.sessions where id = ${String(claims.session_id)}::uuid`;
          else if (scope === "others")
            await tx`delete from auth.sessions where user_id = ${live.user_id} and id <> ${String(claims.session_id)}::uuid`;
          else await tx`delete from auth.sessions where user_id = ${live.user_id}`;
        });
        return send(204);
      }
      return fail(404, "not_found", "Not Found");
    } catch (e) {
      return fail(500, "unexpected_failure", `Database error: ${(e as Error).message}`);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// GoTrue's user object, the part supabase-js reads.
function userJson(u: Record<string, unknown>) {
  return {
    id: u.id,
    aud: u.aud,
    role: u.role,
    email: u.email,
    email_confirmed_at: u.email_confirmed_at,
    last_sign_in_at: u.last_sign_in_at,
    app_metadata: u.raw_app_meta_data ?? {},
    user_metadata: u.raw_user_meta_data ?? {},
    created_at: u.created_at,
    updated_at: u.updated_at,
    is_anonymous: u.is_anonymous,
  };
}

async function read(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

// The request as it came, to the server behind this one.
async function pass(req: IncomingMessage, res: ServerResponse, next: string): Promise<void> {
  const body = req.method === "GET" || req.method === "HEAD" ? undefined : await read(req);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && k !== "host" && k !== "content-length") headers.set(k, v);
  const answer = await fetch(`${next}${req.url}`, { method: req.method, headers, body });
  res.writeHead(answer.status, Object.fromEntries(answer.headers));
  res.end(Buffer.from(await answer.arrayBuffer()));
}
