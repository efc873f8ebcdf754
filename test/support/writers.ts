import postgres, { type Sql } from "postgres";
import type { TestPair } from "./postgres.ts";

/** What the writers saw. */
export interface WriterReport {
  acknowledged: string[];
  fenceErrors: { code: string; message: string }[];
  otherErrors: string[];
}

/**
 * Writers that behave like an app: each finds the active project from the public state row
 * (highest epoch of both), inserts unique ids, and on Spillway's fence error finds the
 * active project again. Every insert that returned is recorded as acknowledged. Writer 0
 * writes as the `authenticated` API role, the others directly as `postgres`.
 *
 * @example
 * const w = startWriters(pair, 3);
 * ...
 * const report = await w.stop();
 */
export function startWriters(pair: TestPair, count: number): { stop(): Promise<WriterReport> } {
  const pools: Record<string, Sql> = {
    primary: postgres(pair.urls.primary, { max: count, onnotice: () => {}, connect_timeout: 2 }),
    secondary: postgres(pair.urls.secondary, { max: count, onnotice: () => {}, connect_timeout: 2 }),
  };
  const report: WriterReport = { acknowledged: [], fenceErrors: [], otherErrors: [] };
  const run = Math.random().toString(36).slice(2, 8);
  let stopped = false;
  const active = async (): Promise<string> => {
    const rows = await Promise.all(
      Object.entries(pools).map(async ([, sql]) => (await sql`select active, epoch from public.spillway_active`.catch(() => []))[0]),
    );
    const best = rows.filter(Boolean).sort((a, b) => Number(b!.epoch) - Number(a!.epoch))[0];
    return best!.active as string;
  };
  const writer = async (n: number) => {
    let target = await active();
    let i = 0;
    while (!stopped) {
      const id = `${run}-w${n}-${i++}`;
      try {
        await pools[target]!.begin(async (tx) => {
          if (n === 0) await tx`set local role authenticated`;
          await tx`insert into public.items (id, writer) values (${id}, ${n})`;
        });
        report.acknowledged.push(id);
      } catch (e) {
        const err = e as { code?: string; message?: string };
        if (err.code === "SPWFN") report.fenceErrors.push({ code: err.code, message: err.message ?? "" });
        else report.otherErrors.push(`${err.code}: ${err.message}`);
        await new Promise((r) => setTimeout(r, 20));
        target = await active().catch(() => target);
      }
    }
  };
  const running = Array.from({ length: count }, (_, n) => writer(n));
  return {
    async stop() {
      stopped = true;
      await Promise.all(running);
      await Promise.all(Object.values(pools).map((p) => p.end()));
      return report;
    },
  };
}

/** The app table the writers use, created on both projects as the app's migration would. */
export const ITEMS_SCHEMA = `
create table if not exists public.items (id text primary key, writer integer not null, at timestamptz not null default now());
grant insert, select on public.items to authenticated;
`;

/**
 * Three movers of money between the `public.accounts` rows `ids` on `url`, 7 at a time, so
 * the total never changes; with `audit`, each move also inserts an `audit_log` row. Rows
 * are locked in id order, as a careful app does, so that movers never deadlock.
 *
 * @example
 * const movers = moveMoney(pair.urls.primary, ids);
 * const transfers = await movers.stop();
 */
export function moveMoney(url: string, ids: number[], options: { audit?: boolean } = {}): { stop(): Promise<number> } {
  return loopUntilStopped(url, 3, async (app) => {
    const [a, b] = [ids[Math.floor(Math.random() * ids.length)]!, ids[Math.floor(Math.random() * ids.length)]!];
    if (a === b) return false;
    await app.begin(async (tx) => {
      await tx`select id from public.accounts where id in (${a}, ${b}) order by id for update`;
      const [row] = await tx`update public.accounts set balance = balance - 7 where id = ${a} and balance >= 7 returning id`;
      if (row) await tx`update public.accounts set balance = balance + 7 where id = ${b}`;
      if (options.audit) await tx`insert into public.audit_log (message) values (${`moved 7 from ${a} to ${b}`})`;
    });
    return true;
  });
}

/**
 * Runs `step` in `loops` concurrent loops on one pool for `url` until `stop()`, which waits
 * for the loops, closes the pool and answers how many steps counted (returned true).
 *
 * @example
 * const inserts = loopUntilStopped(url, 2, async (sql) => (await sql`insert into t default values`, true));
 * const n = await inserts.stop();
 */
export function loopUntilStopped(url: string, loops: number, step: (sql: Sql) => Promise<boolean>): { stop(): Promise<number> } {
  const sql = postgres(url, { max: loops + 1, onnotice: () => {} });
  let stopped = false;
  let counted = 0;
  const loop = async () => {
    while (!stopped) if (await step(sql)) counted += 1;
  };
  const running = Array.from({ length: loops }, loop);
  return {
    async stop() {
      stopped = true;
      await Promise.all(running);
      await sql.end();
      return counted;
    },
  };
}
