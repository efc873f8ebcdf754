// getActiveClient(): a supabase-js client for whichever project Spillway has made active.
// Runs in browsers, Node and Deno: it uses fetch and nothing of Node's.
import { createClient, type SupabaseClient, type SupabaseClientOptions } from "@supabase/supabase-js";

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
  fetch?: typeof fetch;
  /** Passed to `createClient` for both projects (each keeps its own auth storage key). */
  clientOptions?: SupabaseClientOptions<"public">;
}

/** What `onSwitch` callbacks receive. */
export interface SwitchEvent {
  from: ProjectName | null;
  to: ProjectName;
  epoch: number;
}

/** Thrown when neither project (nor the status URL) says which project is active. */
export class ActiveProjectUnknown extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ActiveProjectUnknown";
  }
}

/** The SQLSTATE of Spillway's fence error. */
export const FENCE_CODE = "SPWFN";

interface Resolver {
  options: ActiveClientOptions;
  clients: Partial<Record<ProjectName, SupabaseClient>>;
  active: { name: ProjectName; epoch: number; at: number } | null;
  pending: Promise<ProjectName> | null;
}

const resolvers = new Map<string, Resolver>();
const listeners = new Set<(event: SwitchEvent) => void>();

/**
 * Resolves to a supabase-js client for the active project. The answer is cached for
 * `cacheTtlMs`; a Data API call that fails with Spillway's fence error (SQLSTATE SPWFN)
 * makes it look again at once and retries that one call on the new active project.
 *
 * @example
 * const supabase = await getActiveClient({ projects: { primary: { url, anonKey }, secondary: { url: url2, anonKey: key2 } } });
 * await supabase.from("todos").insert({ title: "milk" });
 */
export async function getActiveClient(options: ActiveClientOptions): Promise<SupabaseClient> {
  const resolver = resolverFor(options);
  const name = await resolveActive(resolver, false);
  return clientFor(resolver, name);
}

/**
 * Calls `callback` whenever the active project changes (sessions do not carry across
 * projects: a good moment to ask users to sign in again). Returns the unsubscribe function.
 *
 * @example
 * const off = onSwitch(({ to, epoch }) => console.log(`now on ${to} (epoch ${epoch})`));
 */
export function onSwitch(callback: (event: SwitchEvent) => void): () => void {
  listeners.add(callback);
  return () => listeners.delete(callback);
}

function resolverFor(options: ActiveClientOptions): Resolver {
  const key = JSON.stringify([options.projects, options.statusUrl ?? null]);
  let r = resolvers.get(key);
  if (!r) {
    r = { options, clients: {}, active: null, pending: null };
    resolvers.set(key, r);
  }
  r.options = options;
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
  if (previous && previous.name !== found.name) {
    for (const l of listeners) l({ from: previous.name, to: found.name, epoch: found.epoch });
  }
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
  const answers = await Promise.all(names.map(async (name) => {
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
  }));
  const best = answers.filter((a): a is { name: ProjectName; epoch: number } => a !== null).sort((a, b) => b.epoch - a.epoch)[0];
  if (!best) throw new ActiveProjectUnknown("neither project answered which one is active (both unreachable?)");
  return best;
}

function clientFor(r: Resolver, name: ProjectName): SupabaseClient {
  const existing = r.clients[name];
  if (existing) return existing;
  const p = r.options.projects[name];
  const userOptions = r.options.clientOptions ?? {};
  const client = createClient(p.url, p.anonKey, {
    ...userOptions,
    auth: { ...userOptions.auth, storageKey: `sb-spillway-${name}-auth` },
    global: { ...userOptions.global, fetch: fencedFetch(r, name) },
  });
  r.clients[name] = client;
  return client;
}

// The fence refuses a write before it runs, so a Data API call refused by it changed
// nothing and may be sent once more, to the project that is active now. Other failures are
// not retried: the call may have taken effect.
function fencedFetch(r: Resolver, name: ProjectName): typeof fetch {
  const base = r.options.fetch ?? fetch;
  return async (input, init) => {
    const request = new Request(input, init);
    const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.clone().arrayBuffer();
    const response = await base(request);
    if (response.ok || !request.url.includes("/rest/v1/")) return response;
    const error = (await response.clone().json().catch(() => null)) as { code?: string; message?: string } | null;
    if (error?.code !== FENCE_CODE) return response;
    // The fence names the project apps must use now; the look-up confirms it otherwise.
    const named = /the active project is (primary|secondary) \(epoch (\d+)\)/.exec(error.message ?? "");
    if (named && named[1] !== name && (!r.active || Number(named[2]) > r.active.epoch)) {
      const previous = r.active;
      r.active = { name: named[1] as ProjectName, epoch: Number(named[2]), at: Date.now() };
      for (const l of listeners) l({ from: previous?.name ?? name, to: r.active.name, epoch: r.active.epoch });
    }
    const now = r.active && r.active.name !== name ? r.active.name : await resolveActive(r, true).catch(() => name);
    if (now === name) return response;
    const target = r.options.projects[now];
    const fromPath = new URL(r.options.projects[name].url).pathname.replace(/\/+$/, "");
    const url = new URL(request.url);
    const retried = target.url.replace(/\/+$/, "") + url.pathname.slice(fromPath.length) + url.search;
    const headers = new Headers(request.headers);
    const session = await clientFor(r, now).auth.getSession().catch(() => null);
    headers.set("apikey", target.anonKey);
    headers.set("Authorization", `Bearer ${session?.data.session?.access_token ?? target.anonKey}`);
    return await base(retried, { method: request.method, headers, body });
  };
}
