import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { freePort } from "../../cli/server.ts";
import { type Child, run } from "./process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** The Supabase Edge Function's limits (free plan), as the spec states them. */
export const EDGE_LIMITS = { memoryMb: 256, wallClockSeconds: 150, cpuSeconds: 2 };

/** One request to the entry: its answer, the caller's wait and the CPU Deno spent on it. */
export interface EdgeAnswer {
  status: number;
  body: any;
  seconds: number;
  cpuSeconds: number;
}

/** A running Edge entry. */
export interface EdgeEntry {
  base: string;
  deno: Child;
  /**
   * Sends a request and waits for its answer at most the Edge Function's wall clock (150 s):
   * a request that needs longer fails, as the runtime would end it. Measures the CPU time the
   * Deno process spent meanwhile (requests are sent one at a time).
   */
  request(path: string, init?: RequestInit): Promise<EdgeAnswer>;
  /** The Deno process's peak resident memory so far, in MB. */
  peakRssMb(): number;
  stop(): Promise<void>;
}

/**
 * Starts `supabase/functions/spillway/index.ts` under the `deno` npm package's binary with the
 * Edge Function's memory cap (V8's old space at 256 MB: past it the isolate dies, as the
 * runtime ends a function over its memory), against the two projects.
 *
 * @example
 * const edge = await startEdgeEntry({ primary: a.url, secondary: b.url }, { SPILLWAY_ADMIN_TOKEN: token });
 * const { status, cpuSeconds } = await edge.request("/spillway/status", { headers });
 */
export async function startEdgeEntry(urls: { primary: string; secondary: string }, env: Record<string, string>): Promise<EdgeEntry> {
  const port = await freePort();
  const deno = run(
    `${root}node_modules/.bin/deno`,
    [
      "run",
      `--v8-flags=--max-old-space-size=${EDGE_LIMITS.memoryMb}`,
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
      PORT: String(port),
      NO_COLOR: "1",
      ...env,
    },
    root,
  );
  await deno.waitFor(/Listening on/, 180_000);
  const ticks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());
  const cpu = () => processCpuSeconds(deno.proc.pid!, ticks);
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    deno,
    async request(path, init = {}) {
      const cpuBefore = cpu();
      const started = performance.now();
      let res: Response;
      let text: string;
      try {
        res = await fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(EDGE_LIMITS.wallClockSeconds * 1000) });
        text = await res.text();
      } catch (e) {
        if ((e as Error).name === "TimeoutError")
          throw new Error(`${path} took longer than the Edge Function's ${EDGE_LIMITS.wallClockSeconds} s wall clock`);
        throw e;
      }
      const seconds = (performance.now() - started) / 1000;
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // Not JSON: the text as it came.
      }
      return { status: res.status, body, seconds, cpuSeconds: cpu() - cpuBefore };
    },
    peakRssMb() {
      const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${deno.proc.pid}/status`, "utf8"));
      return Number(hwm?.[1] ?? 0) / 1024;
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
