import http from "node:http";

/** Latency figures of one endpoint under load. */
export interface LoadResult {
  requests: number;
  errors: number;
  p50: number;
  p99: number;
}

/**
 * `clients` concurrent loops calling `url` for `seconds` (loopback only), each waiting for
 * its answer before the next call, each on a kept-alive connection of its own. It uses
 * node:http rather than fetch: on Node 20 fetch costs the generator several times the CPU,
 * and the generator shares the machine's two cores with the server it measures.
 *
 * @example
 * const r = await load("http://127.0.0.1:8787/spillway/active", {}, 200, 30);
 */
export async function load(url: string, headers: Record<string, string>, clients: number, seconds: number): Promise<LoadResult> {
  const target = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const until = Date.now() + seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  const call = () =>
    new Promise<void>((resolve) => {
      const req = http.request(
        { host: target.hostname, port: target.port, path: target.pathname + target.search, headers, agent },
        (res) => {
          res.on("data", () => {});
          res.on("end", () => {
            if ((res.statusCode ?? 500) >= 400) errors += 1;
            resolve();
          });
        },
      );
      req.on("error", () => {
        errors += 1;
        resolve();
      });
      req.end();
    });
  const loop = async () => {
    while (Date.now() < until) {
      const started = performance.now();
      await call();
      latencies.push(performance.now() - started);
    }
  };
  await Promise.all(Array.from({ length: clients }, loop));
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { requests: latencies.length, errors, p50: at(0.5), p99: at(0.99) };
}
