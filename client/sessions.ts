// Where each project's client keeps its session, so that Spillway can sign a client out on
// this device alone once its session was handed to the other project's client: a sign-out
// through supabase-js would ask the project to end the session, the very session the new
// active now holds.
import type { Session, SupabaseClientOptions } from "@supabase/supabase-js";

type AuthOptions = NonNullable<SupabaseClientOptions<"public">["auth"]>;

/** A storage supabase-js accepts for sessions (localStorage's methods, maybe async). */
export type AuthStorage = NonNullable<AuthOptions["storage"]>;

/**
 * The storage a client is to be created with: the app's own, else the one supabase-js would
 * pick itself (localStorage in a browser that lets it be written, else memory), so that a
 * session the app stored before is found under the same key as without Spillway. Null with
 * `persistSession: false`, where supabase-js keeps the session in a store of its own.
 *
 * @example
 * const storage = authStorage(options.clientOptions?.auth);
 */
export function authStorage(auth: AuthOptions | undefined): AuthStorage | null {
  if (auth?.persistSession === false) return null;
  return auth?.storage ?? browserStorage() ?? memoryStorage();
}

/**
 * Removes the session stored under `storageKey` (and what supabase-js keeps beside it), as
 * supabase-js does at a sign-out but without a request: the client reads its session from
 * the storage on every use, so it is signed out from then on.
 *
 * @example
 * await forgetSession(storage, options.clientOptions?.auth?.userStorage, "sb-spillway-primary-auth");
 */
export async function forgetSession(storage: AuthStorage, userStorage: AuthStorage | undefined, storageKey: string): Promise<void> {
  for (const key of [storageKey, `${storageKey}-code-verifier`, `${storageKey}-user`]) await storage.removeItem(key);
  await userStorage?.removeItem(`${storageKey}-user`);
}

/**
 * The session an Auth answer leaves its client with: none after a sign-out of this
 * session, the answer's own after a sign-in, sign-up or refresh that returned one, and
 * `undefined` when the answer does not change it.
 *
 * @example
 * const now = await sessionAfter(request, response); // null after POST /auth/v1/logout
 */
export async function sessionAfter(request: Request, answer: Response): Promise<Session | null | undefined> {
  if (!answer.ok) return undefined;
  const url = new URL(request.url);
  if (url.pathname.endsWith("/logout")) return url.searchParams.get("scope") === "others" ? undefined : null;
  const body = (await answer
    .clone()
    .json()
    .catch(() => null)) as Partial<Session> | null;
  return typeof body?.access_token === "string" && typeof body.refresh_token === "string" ? (body as Session) : undefined;
}

// supabase-js's own test: a browser whose localStorage can be written (private modes and
// sandboxed frames may refuse).
function browserStorage(): AuthStorage | null {
  if (typeof window === "undefined" || typeof document === "undefined") return null;
  try {
    const probe = `spillway-probe-${Math.random()}`;
    globalThis.localStorage.setItem(probe, probe);
    globalThis.localStorage.removeItem(probe);
    return globalThis.localStorage;
  } catch {
    return null;
  }
}

function memoryStorage(): AuthStorage {
  const items = new Map<string, string>();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => {
      items.set(key, value);
    },
    removeItem: (key) => {
      items.delete(key);
    },
  };
}
