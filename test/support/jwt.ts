import { createHmac, timingSafeEqual } from "node:crypto";

const b64 = (x: Buffer | string) => Buffer.from(x).toString("base64url");

/**
 * An HS256 JWT signed with `secret`, as a project with a legacy JWT secret issues them
 * (GoTrue's access tokens, the project's anon key).
 *
 * @example
 * const anonKey = signJwt(secret, { role: "anon", iss: "supabase", iat: now, exp: now + 3600 });
 */
export function signJwt(secret: string, payload: Record<string, unknown>): string {
  const head = `${b64(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64(JSON.stringify(payload))}`;
  return `${head}.${b64(createHmac("sha256", secret).update(head).digest())}`;
}

/** Why a token is refused: not a JWT, not HS256 signed with the secret, or past its `exp`. */
export type JwtRefusal = "malformed" | "signature" | "expired";

/**
 * The claims of an HS256 token signed with `secret` and not past its `exp`, or why not.
 *
 * @example
 * const checked = checkJwt(secret, token);
 * if ("refused" in checked) return unauthorized(checked.refused);
 */
export function checkJwt(secret: string, token: string): { claims: Record<string, unknown> } | { refused: JwtRefusal } {
  const [header, payload, signature, ...rest] = token.split(".");
  if (!header || !payload || !signature || rest.length > 0) return { refused: "malformed" };
  let head: Record<string, unknown>;
  let claims: Record<string, unknown>;
  try {
    head = JSON.parse(Buffer.from(header, "base64url").toString());
    claims = JSON.parse(Buffer.from(payload, "base64url").toString());
  } catch {
    return { refused: "malformed" };
  }
  if (head.alg !== "HS256") return { refused: "signature" };
  const expected = createHmac("sha256", secret).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { refused: "signature" };
  if (claims.exp !== undefined && !(typeof claims.exp === "number" && claims.exp > Date.now() / 1000)) return { refused: "expired" };
  return { claims };
}
