// The Edge entry under real Deno, as the bench drives it: backups through its HTTP API,
// timed the way a user waits for them, with the Deno process's CPU time, under the Edge
// Function's memory cap and wall clock (test/support/edge.ts).
import { startEdgeEntry } from "../test/support/edge.ts";

const TOKEN = "bench-edge-admin-token-0123456789";

/** A running Edge entry. */
export interface Edge {
  /**
   * Runs `POST /force-backup` and reports the time the caller waited and the CPU Deno spent;
   * a call past the Edge Function's 150 s wall clock fails.
   */
  backup(
    body: Record<string, unknown>,
  ): Promise<{ seconds: number; cpuSeconds: number; run: { kind: string; strategy: string; bytes: number } }>;
  /** The Deno process's peak resident memory so far, in MB. */
  peakRssMb(): number;
  stop(): Promise<void>;
}

/**
 * Starts `supabase/functions/spillway/index.ts` under the `deno` npm package's binary, as
 * the Edge runtime runs it (256 MB memory cap), against the two projects.
 *
 * @example
 * const edge = await startEdge({ primary: a.url, secondary: b.url });
 * const { seconds, cpuSeconds } = await edge.backup({ mode: "full" });
 */
export async function startEdge(urls: { primary: string; secondary: string }): Promise<Edge> {
  const entry = await startEdgeEntry(urls, { SPILLWAY_ADMIN_TOKEN: TOKEN });
  return {
    async backup(body) {
      const answer = await entry.request("/spillway/force-backup", {
        method: "POST",
        headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const run = answer.body?.run as { kind: string; strategy: string; bytes: number; status: string } | undefined;
      if (answer.status !== 200 || run?.status !== "succeeded")
        throw new Error(`force-backup answered ${answer.status}: ${JSON.stringify(answer.body)}`);
      return { seconds: answer.seconds, cpuSeconds: answer.cpuSeconds, run };
    },
    peakRssMb: () => entry.peakRssMb(),
    stop: () => entry.stop(),
  };
}
