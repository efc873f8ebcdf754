// An app writing through createSpillwayClient() and the Data API (the PostgREST STAND-IN
// of the tests, on the real databases): each insert's latency, as the app waits for it.
import { createSpillwayClient } from "../client/index.ts";
import { startDataApi } from "../test/support/postgrest.ts";

// Each project's JWT secret, which its Data API stand-in verifies tokens with.
const JWT_SECRETS = { primary: "the-primary-projects-jwt-secret-0123456789", secondary: "the-secondary-projects-jwt-secret-0123456789" };

/** One acknowledged or failed write: when it was sent and how long the app waited. */
export interface TimedWrite {
  startedAt: number;
  ms: number;
  ok: boolean;
}

/**
 * Starts `loops` writers inserting `public.events` rows through one drop-in client until
 * `stop()`, which answers every write's timing.
 *
 * @example
 * const app = await appWrites({ primary: url1, secondary: url2 }, 2);
 * const writes = await app.stop();
 */
export async function appWrites(dbUrls: { primary: string; secondary: string }, loops: number): Promise<{ stop(): Promise<TimedWrite[]> }> {
  const apis = {
    primary: await startDataApi(dbUrls.primary, JWT_SECRETS.primary),
    secondary: await startDataApi(dbUrls.secondary, JWT_SECRETS.secondary),
  };
  const client = createSpillwayClient({
    projects: {
      primary: { url: apis.primary.url, anonKey: apis.primary.anonKey },
      secondary: { url: apis.secondary.url, anonKey: apis.secondary.anonKey },
    },
    cacheTtlMs: 1000,
  });
  const writes: TimedWrite[] = [];
  let stopped = false;
  const loop = async () => {
    while (!stopped) {
      const startedAt = performance.now();
      const { error } = await client.from("events").insert({ user_id: 1, kind: "app", payload: {}, at: new Date().toISOString() });
      writes.push({ startedAt, ms: performance.now() - startedAt, ok: error === null });
    }
  };
  const running = Array.from({ length: loops }, loop);
  return {
    async stop() {
      stopped = true;
      await Promise.all(running);
      await Promise.all([apis.primary.close(), apis.secondary.close()]);
      return writes;
    },
  };
}

/**
 * The `q` quantile (0–1) of `values`, or null when there are none.
 *
 * @example
 * quantile([5, 1, 3], 0.5) // 3
 */
export function quantile(values: number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
