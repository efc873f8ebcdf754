// The Edge entry under real Deno, as the bench drives it: backups through its HTTP API,
// timed the way a user waits for them, with the Deno process's CPU time.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { freePort } from "../cli/server.ts";
import { type Child, run } from "../test/support/process.ts";

const root = fileURLToPath(new URL("../", import.meta.url));
const TOKEN = "bench-edge-admin-token-0123456789";

/** A running Edge entry. */
export interface Edge {
  /** Runs `POST /force-backup` and reports the time the caller waited and the CPU Deno spent. */
  backup(
    body: Record<string, unknown>,
  ): Promise<{ seconds: number; cpuSeconds: number; run: { kind: string; strategy: string; bytes: number } }>;
  stop(): Promise<void>;
}

/**
 * Starts `supabase/functions/spillway/index.ts` under the `deno` npm package's binary, as
 * the Edge runtime runs it, against the two projects.
 *
 * @example
 * const edge = await startEdge({ primary: a.url, secondary: b.url });
 * const { seconds, cpuSeconds } = await edge.backup({ mode: "full" });
 */
export async function startEdge(urls: { primary: string; secondary: string }): Promise<Edge> {
  const port = await freePort();
  const deno: Child = run(
    `${root}node_modules/.bin/deno`,
    [
      "run",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--config",
      "supabase/functions/spillway/deno.json",
      "supabase/functions/spillway/index.ts",
    ],
    {
      SPILLWAY_PRIMARY_DB_URL: urls.primary,
      SPILLWAY_SECONDARY_DB_URL: urls.secondary,
      SPILLWAY_ADMIN_TOKEN: TOKEN,
      PORT: String(port),
      NO_COLOR: "1",
    },
    root,
  );
  await deno.waitFor(/Listening on/, 180_000);
  const ticks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());
  const cpu = () => processCpuSeconds(deno.proc.pid!, ticks);
  return {
    async backup(body) {
      const cpuBefore = cpu();
      const started = performance.now();
      const res = await fetch(`http://127.0.0.1:${port}/spillway/force-backup`, {
        method: "POST",
        headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = (await res.json()) as { run?: { kind: string; strategy: string; bytes: number; status: string } };
      const seconds = (performance.now() - started) / 1000;
      if (res.status !== 200 || answer.run?.status !== "succeeded")
        throw new Error(`force-backup answered ${res.status}: ${JSON.stringify(answer)}`);
      return { seconds, cpuSeconds: cpu() - cpuBefore, run: answer.run };
    },
    async stop() {
      deno.proc.kill("SIGTERM");
      await deno.exited;
    },
  };
}

/**
 * A process's user and system CPU time so far, from `/proc/<pid>/stat` (Linux).
 *
 * @example
 * processCpuSeconds(process.pid, 100)
 */
export function processCpuSeconds(pid: number, ticksPerSecond: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces), from the third: utime and stime are the 14th and 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}
