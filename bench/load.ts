/** Latency figures of one endpoint under load. */
export interface LoadResult {
  requests: number;
  errors: number;
  p50: number;
  p99: number;
}

/**
 * `clients` concurrent loops calling `url` for `seconds` (loopback only), each waiting for
 * its answer before the next call.
 *
 * @example
 * const r = await load("http://127.0.0.1:8787/spillway/active", {}, 200, 30);
 */
export async function load(url: string, headers: Record<string, string>, clients: number, seconds: number): Promise<LoadResult> {
  const until = Date.now() + seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  const loop = async () => {
    while (Date.now() < until) {
      const started = performance.now();
      try {
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        if (!res.ok) errors += 1;
      } catch {
        errors += 1;
      }
      latencies.push(performance.now() - started);
    }
  };
  await Promise.all(Array.from({ length: clients }, loop));
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { requests: latencies.length, errors, p50: at(0.5), p99: at(0.99) };
}
