// Realtime channels that follow the active project. realtime-js opens its socket through
// the transport it is given; this one opens it to the project active at the time, and at a
// switch closes it, so that realtime-js reconnects (at once) and rejoins every channel
// with its own callbacks, filters and token, now on the new active.
import type { SupabaseClientOptions } from "@supabase/supabase-js";

type RealtimeOptions = NonNullable<SupabaseClientOptions<"public">["realtime"]>;
type Transport = NonNullable<RealtimeOptions["transport"]>;
type ProjectName = "primary" | "secondary";

/** What `followingRealtime` needs to know. */
export interface FollowOptions {
  projects: Record<ProjectName, { url: string; anonKey: string }>;
  /** The project the supabase-js client was made for: its URL and key are the ones rewritten. */
  origin: ProjectName;
  /** The project active now, as last looked up. */
  current(): ProjectName;
  /** The app's own Realtime options (its transport and reconnect back-off are kept). */
  options?: RealtimeOptions;
}

/** realtime-js's own back-off when the app gives none. */
const RECONNECT_MS = [1_000, 2_000, 5_000, 10_000];

/**
 * Realtime options for a supabase-js client made for `origin`, whose socket goes to the
 * active project, and `follow`, to be called with the active project after every look-up:
 * a socket open on another project is closed and reopened at once on the active one, and
 * realtime-js rejoins its channels there. The anon key in the socket's URL and in the
 * channels' join (as their token when nobody is signed in) is the active project's; a
 * signed-in user's token is sent as it is. What the client tracked in presence is tracked
 * again on the new active once the channel has rejoined.
 *
 * @example
 * const rt = followingRealtime({ projects, origin: "primary", current: () => active, options: {} });
 * const client = createClient(url, key, { realtime: rt.options });
 * rt.follow("secondary");
 */
export function followingRealtime(f: FollowOptions): { options: RealtimeOptions; follow: (name: ProjectName) => void } {
  const sockets = new Set<{ ws: WebSocket; on: ProjectName }>();
  // The last presence each channel tracked (its push's payload), by topic.
  const tracked = new Map<string, unknown>();
  let moving = false;
  const base = f.options?.transport;
  const backOff = f.options?.reconnectAfterMs ?? ((tries: number) => RECONNECT_MS[tries - 1] ?? 10_000);
  let refs = 0;

  function open(this: unknown, url: string, protocols?: string | string[]): WebSocket {
    const Socket = (base ?? (globalThis as { WebSocket?: Transport }).WebSocket) as unknown as typeof WebSocket | undefined;
    if (!Socket) throw new Error("no WebSocket here: pass clientOptions.realtime.transport (on Node 20, the ws package)");
    const on = f.current();
    const ws = new Socket(retarget(f, url, on), protocols);
    const entry = { ws, on };
    sockets.add(entry);
    ws.addEventListener("close", () => sockets.delete(entry));
    const send = ws.send.bind(ws);
    // Joins sent on this socket, by ref, whose topic tracked presence on an earlier socket.
    const rejoins = new Map<string, { topic: string; joinRef: string }>();
    ws.send = (data) => {
      const message = frame(data) as [string | null, string | null, string, string, Record<string, unknown>] | null;
      if (!message) return send(data);
      const [joinRef, ref, topic, event, payload] = message;
      if (event === "phx_join" && ref && tracked.has(topic)) rejoins.set(ref, { topic, joinRef: joinRef ?? ref });
      if (event === "presence" && payload?.event === "track") tracked.set(topic, payload);
      if (event === "presence" && payload?.event === "untrack") tracked.delete(topic);
      if (event === "phx_leave") tracked.delete(topic);
      const token = payload?.access_token;
      if (typeof token === "string" && token === f.projects[f.origin].anonKey) {
        message[4] = { ...payload, access_token: f.projects[on].anonKey };
        return send(JSON.stringify(message));
      }
      return send(data);
    };
    ws.addEventListener("message", (event: MessageEvent) => {
      const reply = rejoins.size === 0 ? null : frame(event.data);
      if (!reply) return;
      const [, ref, topic, kind, payload] = reply as [unknown, string | null, string, string, { status?: string }];
      const rejoin = ref ? rejoins.get(ref) : undefined;
      if (kind !== "phx_reply" || !rejoin || rejoin.topic !== topic) return;
      rejoins.delete(ref!);
      const presence = tracked.get(topic);
      if (payload?.status === "ok" && presence && ws.readyState === ws.OPEN)
        send(JSON.stringify([rejoin.joinRef, `spillway-${++refs}`, topic, "presence", presence]));
    });
    return ws;
  }

  return {
    options: {
      ...f.options,
      transport: open as unknown as Transport,
      // After a move the socket is reopened at once; otherwise realtime-js's (or the app's) back-off.
      reconnectAfterMs: (tries: number) => {
        if (!moving) return backOff(tries);
        moving = false;
        return 0;
      },
    },
    follow(name) {
      for (const s of sockets) {
        if (s.on === name) continue;
        sockets.delete(s);
        moving = true;
        s.ws.close();
      }
    },
  };
}

// The socket URL realtime-js built for `origin`, for project `to`: its host and its apikey.
function retarget(f: FollowOptions, url: string, to: ProjectName): string {
  const from = wsBase(f.projects[f.origin].url);
  const target = new URL(url.startsWith(from) ? wsBase(f.projects[to].url) + url.slice(from.length) : url);
  if (target.searchParams.get("apikey") === f.projects[f.origin].anonKey) target.searchParams.set("apikey", f.projects[to].anonKey);
  return target.toString();
}

const wsBase = (httpUrl: string) => httpUrl.replace(/\/+$/, "").replace(/^http/, "ws");

// A frame of realtime-js's protocol 2.0.0 (a JSON array); null for anything else (1.0.0's
// JSON objects, binary frames), which goes through untouched.
function frame(data: unknown): unknown[] | null {
  if (typeof data !== "string" || !data.startsWith("[")) return null;
  try {
    const parsed: unknown = JSON.parse(data);
    return Array.isArray(parsed) ? parsed : null;
  } catch {
    return null;
  }
}
