// getActiveClient(): a supabase-js client for whichever project Spillway has made active.
// Runs in browsers, Node and Deno: it uses fetch and nothing of Node's.
import { createClient, type Session, type SupabaseClient, type SupabaseClientOptions } from "@supabase/supabase-js";
import { followingRealtime } from "./realtime.js";
import { WATCH_MS, watchActive } from "./routing.js";
import { type AuthStorage, authStorage, forgetSession, sessionAfter } from "./sessions.js";

/** The two projects, by name. */
export type ProjectName = "primary" | "secondary";

/** Options for `getActiveClient`. */
export interface ActiveClientOptions {
  projects: Record<ProjectName, { url: string; anonKey: string }>;
  /** Spillway's function URL (…/functions/v1/spillway); its `GET /active` is asked instead of the Data API. */
  statusUrl?: string;
  /** How long an answer is trusted, in ms (default 30 000). */
  cacheTtlMs?: number;
  /** How long one look-up may take, in ms (default 5 000). */
  timeoutMs?: number;
  /**
   * How often the published state of both projects is read in the background, in ms
   * (default 1 000; every 500 ms while a switch is suspected; 0: only when the app sends a
   * request), so that reads and Realtime channels reach the new active within 2 s of a
   * switch without app traffic. Each read is one small Data API request per project.
   */
  watchMs?: number;
  /**
   * How long a Data API write refused by the fence is held while a switch is under way,
   * in ms (default 10 000). It is sent to the new active project once that is published;
   * only a switch that outlasts this surfaces the fence error. An Auth request (sign-in,
   * sign-up, refresh, sign-out) answered with a 500 is held as long, and sent to the new
   * active if one is published meanwhile; otherwise its answer is returned. A Data API
   * request the active project could not take at all (connection refused, or PostgREST
   * could not reach its database: 503 PGRST000–PGRST002) is held as long while another
   * project may be published as active (a failover), then sent there; past this it fails
   * with `ActiveProjectUnreachable`.
   */
  switchWaitMs?: number;
  fetch?: typeof fetch;
  /**
   * Hand the signed-in user's session to the new active project's client at a switch, so
   * that the user stays signed in (default false). Only for deployments where both
   * projects share one JWT secret and Spillway carries sessions (setting `authSessions`,
   * docs/auth.md); elsewhere the new project refuses the session and users sign in again.
   * The old project's client is then signed out on this device (no request is sent) and
   * its auto-refresh stopped, so that it does not come back signed in at a failback.
   */
  keepSession?: boolean;
  /** Passed to `createClient` for both projects (each keeps its own auth storage key). */
  clientOptions?: SupabaseClientOptions<"public">;
}

/** What `onSwitch` callbacks receive. */
export interface SwitchEvent {
  from: ProjectName | null;
  to: ProjectName;
  epoch: number;
  /**
   * With `keepSession`, what became of the session signed in on the old project's client:
   * `kept` (the new project's client is signed in as the same user), `lost` (the new
   * project refused it: users sign in again) or `none` (nobody was signed in).
   */
  session?: "kept" | "lost" | "none";
}

/** Thrown when neither project (nor the status URL) says which project is active. */
export class ActiveProjectUnknown extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ActiveProjectUnknown";
  }
}

/**
 * Thrown for a Data API request that could not be sent: the active project did not take it
 * (connection refused, or its Data API could not reach the database) and no other project
 * was published as active within `switchWaitMs`. supabase-js answers it as `{ error }`.
 */
export class ActiveProjectUnreachable extends Error {
  readonly code = "SPILLWAY_UNREACHABLE";
  constructor(message: string) {
    super(message);
    this.name = "ActiveProjectUnreachable";
  }
}

/** The SQLSTATE of Spillway's fence error. */
export const FENCE_CODE = "SPWFN";

interface Resolver {
  options: ActiveClientOptions;
  clients: Partial<Record<ProjectName, SupabaseClient>>;
  /** Each client's latest session, as its auth events told it (kept with `keepSession`). */
  sessions: Partial<Record<ProjectName, Session | null>>;
  active: { name: ProjectName; epoch: number; at: number } | null;
  pending: Promise<ProjectName> | null;
  /** The session being handed to the new active's client; clients are handed out after it. */
  handover: Promise<void> | null;
  /** With `keepSession`: each client's auth storage (null: supabase-js's own, unreachable). */
  storages: Partial<Record<ProjectName, AuthStorage | null>>;
  /** With `keepSession`: each client's Auth requests not yet answered (and noted). */
  authInFlight: Record<ProjectName, Set<Promise<unknown>>>;
  /** Clients whose auto-refresh was stopped when their session was handed on. */
  refreshStopped: Set<ProjectName>;
  /** Stops the background look-ups (null: not watching yet). */
  watching: (() => void) | null;
  /** Until when (ms since the epoch) a switch is suspected: look-ups are then more frequent. */
  suspectedUntil: number;
  /** Told the active project whenever a look-up (or a fence error) names it. */
  followers: Set<(name: ProjectName) => void>;
}

const resolvers = new Map<string, Resolver>();
const listeners = new Set<(event: SwitchEvent) => void>();

/**
 * Resolves to a supabase-js client for the active project, pinned to it: its sessions
 * belong to that project (see `keepSession`). Keep it until `onSwitch` reports a switch,
 * which the background look-ups (`watchMs`) notice within 2 s, then ask again; or use
 * `createSpillwayClient`, whose one client follows by itself. The answer is cached for
 * `cacheTtlMs`; a Data API call that fails with Spillway's fence error (SQLSTATE SPWFN) is
 * held while the switch is under way (up to `switchWaitMs`) and then sent to the project
 * that was published as the new active one. With `keepSession`, the client for a new active
 * project is handed the session signed in on the old one's before it is returned.
 *
 * @example
 * let supabase = await getActiveClient(options);
 * onSwitch(async () => { supabase = await getActiveClient(options); }); // the new active's client
 * await supabase.from("todos").insert({ title: "milk" });
 */
export async function getActiveClient(options: ActiveClientOptions): Promise<SupabaseClient> {
  const resolver = watched(resolverFor(options));
  const name = await resolveActive(resolver, false);
  await resolver.handover;
  return clientFor(resolver, name);
}

/**
 * Returns one supabase-js client, at once, whose every Data API, Auth, Storage and
 * Functions request goes to the project that is active when it is sent: an app replaces
 * `createClient(url, key)` with it and changes nothing else. Which project is active is
 * read in the background (`watchMs`), so reads reach the new active within 2 s of a
 * switch without app traffic; writes refused by the fence during a switch are held and
 * sent to the new active. Realtime channels follow too: at a switch the socket is reopened
 * on the new active and every channel rejoins there with its callbacks, filters and token
 * (and its tracked presence). Auth: sign-in and sign-up go to the active project; a session from one
 * project is only valid on the other when both share a JWT secret and Spillway carries
 * sessions (setting `authSessions`): then its one session goes on working after a switch.
 *
 * @example
 * const supabase = createSpillwayClient({ projects: { primary: { url, anonKey }, secondary: { url: url2, anonKey: key2 } } });
 * await supabase.from("todos").insert({ title: "milk" });
 */
export function createSpillwayClient(options: ActiveClientOptions): SupabaseClient {
  const resolver = watched(resolverFor(options));
  const home = options.projects.primary;
  const userOptions = options.clientOptions ?? {};
  const realtime = followingRealtime({
    projects: options.projects,
    origin: "primary",
    current: () => resolver.active?.name ?? "primary",
    options: userOptions.realtime,
  });
  const client = createClient(home.url, home.anonKey, {
    ...userOptions,
    realtime: realtime.options,
    global: { ...userOptions.global, fetch: routedFetch(resolver, "primary", true) },
  });
  resolver.followers.add(realtime.follow);
  // storage-js builds public and signed URLs from its own URL (the primary's): they name the active's.
  const onActive = (url: string) => {
    const to = options.projects[resolver.active?.name ?? "primary"].url;
    return url.startsWith(home.url) ? to + url.slice(home.url.length) : url;
  };
  const from = client.storage.from.bind(client.storage);
  client.storage.from = (id: string) => {
    const bucket = from(id);
    const publicUrl = bucket.getPublicUrl.bind(bucket);
    const signedUrl = bucket.createSignedUrl.bind(bucket);
    bucket.getPublicUrl = ((...args: Parameters<typeof publicUrl>) => {
      const got = publicUrl(...args);
      return { data: { publicUrl: onActive(got.data.publicUrl) } };
    }) as typeof publicUrl;
    bucket.createSignedUrl = (async (...args: Parameters<typeof signedUrl>) => {
      const got = await signedUrl(...args);
      return got.data ? { ...got, data: { ...got.data, signedUrl: onActive(got.data.signedUrl) } } : got;
    }) as typeof signedUrl;
    return bucket;
  };
  return client;
}

/**
 * Calls `callback` whenever the active project changes (sessions do not carry across
 * projects unless they share a JWT secret: a good moment to ask users to sign in again;
 * with `keepSession` the event says whether the session was kept). Returns the
 * unsubscribe function.
 *
 * @example
 * const off = onSwitch(({ to, epoch }) => console.log(`now on ${to} (epoch ${epoch})`));
 */
export function onSwitch(callback: (event: SwitchEvent) => void): () => void {
  listeners.add(callback);
  return () => listeners.delete(callback);
}

function resolverFor(options: ActiveClientOptions): Resolver {
  const key = JSON.stringify([
    options.projects,
    options.statusUrl ?? null,
    options.cacheTtlMs,
    options.timeoutMs,
    options.switchWaitMs,
    options.watchMs,
  ]);
  let r = resolvers.get(key);
  if (!r) {
    r = {
      options,
      clients: {},
      sessions: {},
      active: null,
      pending: null,
      handover: null,
      storages: {},
      authInFlight: { primary: new Set(), secondary: new Set() },
      refreshStopped: new Set(),
      watching: null,
      suspectedUntil: 0,
      followers: new Set(),
    };
    resolvers.set(key, r);
  }
  r.options = options;
  return r;
}

// Starts the background look-ups for `r` (once): the active project is then known within
// `watchMs` of a publish, whether the app sends requests or not.
function watched(r: Resolver): Resolver {
  r.watching ??= watchActive({
    lookUp: () =>
      resolveActive(r, true).catch((e) => {
        r.suspectedUntil = Date.now() + (r.options.switchWaitMs ?? 10_000);
        throw e;
      }),
    suspected: () => Date.now() < r.suspectedUntil,
    everyMs: r.options.watchMs ?? WATCH_MS,
  });
  return r;
}

async function resolveActive(r: Resolver, fresh: boolean): Promise<ProjectName> {
  const ttl = r.options.cacheTtlMs ?? 30_000;
  if (!fresh && r.active && Date.now() - r.active.at < ttl) return r.active.name;
  r.pending ??= lookUp(r).finally(() => {
    r.pending = null;
  });
  return await r.pending;
}

async function lookUp(r: Resolver): Promise<ProjectName> {
  const found = r.options.statusUrl ? await fromStatusUrl(r) : await fromDataApi(r);
  const previous = r.active;
  // The epoch only grows: an older answer (a copy not yet updated) never wins.
  if (previous && found.epoch < previous.epoch) {
    previous.at = Date.now();
    return previous.name;
  }
  r.active = { name: found.name, epoch: found.epoch, at: Date.now() };
  if (previous && previous.name !== found.name) switched(r, { from: previous.name, to: found.name, epoch: found.epoch });
  for (const f of r.followers) f(found.name);
  return found.name;
}

async function timedFetch(r: Resolver, url: string, init: RequestInit = {}): Promise<Response> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), r.options.timeoutMs ?? 5_000);
  try {
    return await (r.options.fetch ?? fetch)(url, { ...init, signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

async function fromStatusUrl(r: Resolver): Promise<{ name: ProjectName; epoch: number }> {
  const base = r.options.statusUrl!.replace(/\/+$/, "");
  const url = base.endsWith("/active") ? base : `${base}/active`;
  try {
    const res = await timedFetch(r, url);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = (await res.json()) as { active?: unknown; epoch?: unknown };
    if ((body.active !== "primary" && body.active !== "secondary") || typeof body.epoch !== "number") throw new Error("unexpected answer");
    return { name: body.active, epoch: body.epoch };
  } catch (e) {
    throw new ActiveProjectUnknown(`could not learn the active project from ${url}: ${(e as Error).message}`);
  }
}

async function fromDataApi(r: Resolver): Promise<{ name: ProjectName; epoch: number }> {
  const names: ProjectName[] = ["primary", "secondary"];
  const answers = await Promise.all(
    names.map(async (name) => {
      const p = r.options.projects[name];
      try {
        const res = await timedFetch(r, `${p.url.replace(/\/+$/, "")}/rest/v1/spillway_active?select=active,epoch`, {
          headers: { apikey: p.anonKey, Authorization: `Bearer ${p.anonKey}`, Accept: "application/json" },
        });
        if (!res.ok) return null;
        const [row] = (await res.json()) as { active: ProjectName; epoch: number | string }[];
        return row && (row.active === "primary" || row.active === "secondary") ? { name: row.active, epoch: Number(row.epoch) } : null;
      } catch {
        return null;
      }
    }),
  );
  const best = answers.filter((a): a is { name: ProjectName; epoch: number } => a !== null).sort((a, b) => b.epoch - a.epoch)[0];
  if (!best) throw new ActiveProjectUnknown("neither project answered which one is active (both unreachable?)");
  return best;
}

function clientFor(r: Resolver, name: ProjectName): SupabaseClient {
  const existing = r.clients[name];
  if (existing) return existing;
  const p = r.options.projects[name];
  const userOptions = r.options.clientOptions ?? {};
  const storage = r.options.keepSession ? storageFor(r, name) : null;
  const client = createClient(p.url, p.anonKey, {
    ...userOptions,
    auth: { ...userOptions.auth, storageKey: storageKey(name), ...(storage ? { storage } : {}) },
    global: { ...userOptions.global, fetch: routedFetch(r, name, false) },
  });
  r.clients[name] = client;
  // The latest session as the client's own events tell it: asking the client at the switch
  // (getSession) could refresh an expired token against the fenced old project, which
  // refuses, and the session would be dropped before it is handed over.
  if (r.options.keepSession)
    client.auth.onAuthStateChange((_event, session) => {
      r.sessions[name] = session;
    });
  return client;
}

// The active project changed: tell the listeners, with `keepSession` once the new active's
// client holds the old one's session (or has refused it).
function switched(r: Resolver, event: SwitchEvent): void {
  if (!r.options.keepSession) {
    for (const l of listeners) l(event);
    return;
  }
  // Bounded like a look-up: a new project that does not answer must not hold the app's
  // clients back; the session is then lost, as without the option.
  const limit = r.options.timeoutMs ?? 5_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // A handover past its time is given up: it must not sign the new client in (or out)
  // later, over what the user did there meanwhile.
  const given = { up: false };
  const handover = (r.handover ?? Promise.resolve())
    .then(() =>
      Promise.race([
        handOver(r, event.from, event.to, given),
        new Promise<"lost">((done) => {
          timer = setTimeout(() => {
            given.up = true;
            done("lost");
          }, limit);
        }),
      ]),
    )
    .catch(() => "lost" as const)
    .finally(() => clearTimeout(timer))
    .then((session) => {
      for (const l of listeners) l({ ...event, session });
    });
  r.handover = handover;
  void handover.finally(() => {
    if (r.handover === handover) r.handover = null;
  });
}

const storageKey = (name: ProjectName) => `sb-spillway-${name}-auth`;

function storageFor(r: Resolver, name: ProjectName): AuthStorage | null {
  if (r.storages[name] === undefined) r.storages[name] = authStorage(r.options.clientOptions?.auth);
  return r.storages[name];
}

// Gives the session signed in on `from`'s client to `to`'s: the new project accepts the
// access token (same JWT secret) and finds its session and refresh token (carried). Then
// `from`'s client is signed out on this device alone: kept, it would come back signed in
// at a failback after the user signed out on `to`, and its auto-refresh would spend
// refresh tokens `to` has rotated since (GoTrue takes that for a stolen token and ends
// the session).
async function handOver(r: Resolver, from: ProjectName | null, to: ProjectName, given: { up: boolean }): Promise<"kept" | "lost" | "none"> {
  try {
    // A sign-out (or refresh) the old client sent during the switch is held and then sent
    // to the new active: its answer says what is left to hand over.
    if (from) await Promise.allSettled([...r.authInFlight[from]]);
    if (given.up) return "lost";
    const session = from && r.clients[from] ? r.sessions[from] : null;
    if (!session) {
      await signOutHere(r, to, false);
      return "none";
    }
    const client = clientFor(r, to);
    const { error } = await client.auth.setSession({ access_token: session.access_token, refresh_token: session.refresh_token });
    if (!error && r.refreshStopped.delete(to) && r.options.clientOptions?.auth?.autoRefreshToken !== false)
      await client.auth.startAutoRefresh();
    return error ? "lost" : "kept";
  } finally {
    if (from) await signOutHere(r, from, true);
  }
}

// Drops `name`'s session without a request. With `persistSession: false` supabase-js keeps
// the session where Spillway cannot reach it: the client is let go instead (its
// auto-refresh stopped), and the next one made for `name` starts signed out.
async function signOutHere(r: Resolver, name: ProjectName, stopRefresh: boolean): Promise<void> {
  const client = r.clients[name];
  const held = r.sessions[name];
  r.sessions[name] = null;
  const storage = storageFor(r, name);
  if (storage) await forgetSession(storage, r.options.clientOptions?.auth?.userStorage, storageKey(name));
  if (!client || !(stopRefresh || (!storage && held))) return;
  await client.auth.stopAutoRefresh();
  if (storage) r.refreshStopped.add(name);
  else delete r.clients[name];
}

/** How often a held write asks again whether the switch has been published. */
const HOLD_POLL_MS = 150;

// Requests are built for project `origin`; with `follow` each goes to the project active at
// the time. The fence refuses a write before it runs, so a request refused by it changed
// nothing and may be sent again: while the switch is under way it is held, then sent to the
// project published as active. Other failures are not retried: the call may have taken effect.
function routedFetch(r: Resolver, origin: ProjectName, follow: boolean): typeof fetch {
  const base = r.options.fetch ?? fetch;
  return async (input, init) => {
    const request = new Request(input, init);
    const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.clone().arrayBuffer();
    const sendTo = (name: ProjectName) => (name === origin ? base(request.clone()) : base(...rewrite(r, request, body, origin, name)));
    const path = new URL(request.url).pathname;
    const exchange = (async () => {
      const current = follow ? await resolveActive(r, false).catch(() => origin) : origin;
      const dataApi = path.includes("/rest/v1/");
      const read = request.method === "GET" || request.method === "HEAD";
      const response = dataApi ? await holdUnsent(r, current, sendTo, read) : await sendTo(current);
      if (response.ok) return response;
      if (dataApi) return await holdWrite(r, response, current, sendTo, (e) => e?.code === FENCE_CODE);
      // Storage refuses an upload or delete on a fenced project with the fence's message (its
      // row in storage.objects was refused: nothing was stored); a 5xx is held like Auth's.
      if (path.includes("/storage/v1/object") && request.method !== "GET" && request.method !== "HEAD") {
        const fenced = (e: FenceAnswer | null) => FENCE_MESSAGE.test(e?.message ?? "");
        if (fenced(await answerOf(response))) return await holdWrite(r, response, current, sendTo, fenced);
        if (response.status >= 500) return await holdAuth(r, response, current, sendTo);
      }
      // GoTrue answers a database error (the fence's among them) with 500; a gateway's 502 or
      // 504 may come after the request took effect, and is never resent.
      if (path.includes("/auth/v1/") && response.status === 500) return await holdAuth(r, response, current, sendTo);
      return response;
    })();
    if (follow || !r.options.keepSession || !path.includes("/auth/v1/")) return await exchange;
    // The handover waits for these: what the old client holds is known once they are answered.
    const noted = exchange.then(async (answer) => {
      const session = await sessionAfter(request, answer);
      if (session !== undefined) r.sessions[origin] = session;
      return answer;
    });
    const inFlight = r.authInFlight[origin];
    inFlight.add(noted);
    const done = () => inFlight.delete(noted);
    noted.then(done, done);
    return await noted;
  };
}

/** Connection errors that leave a request unsent: it never reached the server. */
const UNSENT_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "UND_ERR_CONNECT_TIMEOUT"]);
/** PostgREST's codes for "could not reach the database": the request did not run. */
const NO_DATABASE_CODES = new Set(["PGRST000", "PGRST001", "PGRST002"]);

// Whether a failed fetch never reached the server. Node names the cause; a browser or Deno
// says only "Failed to fetch" or "connection closed" (a TypeError), also when the connection
// broke after the server took the request: that proves nothing, so only a read is sent again.
function unsentError(e: unknown, read: boolean): boolean {
  if ((e as Error | null)?.name === "AbortError") return false;
  const cause = (e as { cause?: { code?: string; errors?: { code?: string }[] } } | null)?.cause;
  const code = cause?.code ?? cause?.errors?.[0]?.code;
  return code ? UNSENT_CODES.has(code) : read && e instanceof TypeError;
}

async function unsentResponse(response: Response): Promise<boolean> {
  if (response.status !== 503) return false;
  const body = (await response
    .clone()
    .json()
    .catch(() => null)) as { code?: string } | null;
  return NO_DATABASE_CODES.has(body?.code ?? "");
}

// A Data API request the active project could not take never ran: while another project
// may be published as active (a failover once the active stays down), it is held, asked
// again, and sent to the project that answers as active with the highest epoch. Past
// `switchWaitMs` it fails with `ActiveProjectUnreachable` (or the Data API's own 503).
async function holdUnsent(
  r: Resolver,
  first: ProjectName,
  sendTo: (name: ProjectName) => Promise<Response>,
  read: boolean,
): Promise<Response> {
  const wait = r.options.switchWaitMs ?? 10_000;
  const deadline = Date.now() + wait;
  let current = first;
  for (;;) {
    let response: Response | null = null;
    try {
      response = await sendTo(current);
      if (!(await unsentResponse(response))) return response;
    } catch (e) {
      if (!unsentError(e, read)) throw e;
    }
    if (Date.now() >= deadline) {
      if (response) return response;
      throw new ActiveProjectUnreachable(
        `${current}, the active project, could not be reached for ${wait} ms and no other project was published as active meanwhile; the request was not sent`,
      );
    }
    await response?.body?.cancel();
    await new Promise((done) => setTimeout(done, Math.min(HOLD_POLL_MS, Math.max(0, deadline - Date.now()))));
    current = await resolveActive(r, true).catch(() => current);
  }
}

/** How Storage words the fence's refusal (its answer has no SQLSTATE). */
const FENCE_MESSAGE = /spillway: project \S+ is fenced/;

type FenceAnswer = { code?: string; message?: string };

const answerOf = async (response: Response) =>
  (await response
    .clone()
    .json()
    .catch(() => null)) as FenceAnswer | null;

// A Data API or Storage call refused by the fence is sent again, to the project the fence
// names or the look-up publishes, until it is no longer refused (or `switchWaitMs`).
async function holdWrite(
  r: Resolver,
  first: Response,
  refusedBy: ProjectName,
  sendTo: (name: ProjectName) => Promise<Response>,
  fenced: (answer: FenceAnswer | null) => boolean,
): Promise<Response> {
  const deadline = Date.now() + (r.options.switchWaitMs ?? 10_000);
  let current = refusedBy;
  let response = first;
  for (;;) {
    const error = await answerOf(response);
    if (!fenced(error)) return response;
    r.suspectedUntil = Math.max(r.suspectedUntil, deadline);
    const named = adoptNamed(r, current, error?.message ?? "");
    if (Date.now() >= deadline) return response;
    if (!named) await new Promise((done) => setTimeout(done, Math.min(HOLD_POLL_MS, deadline - Date.now())));
    current = named ?? (await resolveActive(r, true).catch(() => current));
    response = await sendTo(current);
  }
}

// GoTrue answers an Auth request whose database write the fence refused with a 500 that
// does not say why. Such a request changed nothing, so once a newer epoch publishes another
// project as active it is sent there (sign-in, sign-up, refresh and sign-out are safe to
// send there). A 500 from a project nobody switches away from is answered after `switchWaitMs`.
async function holdAuth(
  r: Resolver,
  first: Response,
  refusedBy: ProjectName,
  sendTo: (name: ProjectName) => Promise<Response>,
): Promise<Response> {
  const deadline = Date.now() + (r.options.switchWaitMs ?? 10_000);
  while (Date.now() < deadline) {
    await new Promise((done) => setTimeout(done, Math.min(HOLD_POLL_MS, deadline - Date.now())));
    const active = await resolveActive(r, true).catch(() => refusedBy);
    if (active !== refusedBy) {
      await first.body?.cancel();
      return await sendTo(active);
    }
  }
  return first;
}

// The fence names the new active project once it is published: trust that (a higher epoch
// than known) without waiting for the next look-up.
function adoptNamed(r: Resolver, refusedBy: ProjectName, message: string): ProjectName | null {
  const named = /the active project is (primary|secondary) \(epoch (\d+)\)/.exec(message);
  if (!named || named[1] === refusedBy) return null;
  const epoch = Number(named[2]);
  if (r.active && epoch <= r.active.epoch) return r.active.name === refusedBy ? null : r.active.name;
  const previous = r.active;
  r.active = { name: named[1] as ProjectName, epoch, at: Date.now() };
  switched(r, { from: previous?.name ?? refusedBy, to: r.active.name, epoch });
  for (const f of r.followers) f(r.active.name);
  return r.active.name;
}

// The same request for another project: its URL, its anon key where the request carried
// the origin's, and the caller's own session token otherwise.
function rewrite(
  r: Resolver,
  request: Request,
  body: ArrayBuffer | undefined,
  origin: ProjectName,
  name: ProjectName,
): [string, RequestInit] {
  const from = r.options.projects[origin];
  const to = r.options.projects[name];
  const fromBase = from.url.replace(/\/+$/, "");
  const url = request.url.startsWith(fromBase) ? to.url.replace(/\/+$/, "") + request.url.slice(fromBase.length) : request.url;
  const headers = new Headers(request.headers);
  if (headers.get("apikey") === from.anonKey) headers.set("apikey", to.anonKey);
  if (headers.get("Authorization") === `Bearer ${from.anonKey}`) headers.set("Authorization", `Bearer ${to.anonKey}`);
  return [url, { method: request.method, headers, body }];
}
