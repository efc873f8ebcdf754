import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { expireLease } from "./app.ts";
import { fingerprint } from "./compare.ts";
import type { TestPair } from "./postgres.ts";
import { type Child, run } from "./process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/**
 * Where a kill is meant to land, as the standby shows it at the moment of the kill:
 * `inside a run` when a run the child started was still running, `inside a call` when a
 * transaction of the child's was open on the standby, `mid-table` when one of its
 * connections had a table's load (a COPY into it, or an INSERT of its rows) not committed.
 */
export type Landing = "inside a run" | "inside a call" | "mid-table";

/** What of the standby was there before a child started: its runs and Spillway's backends. */
export interface Before {
  runs: string[];
  pids: number[];
}

/**
 * The standby's running runs and Spillway's connections to it, before a child starts, so
 * that what a child did is told from what an earlier killed one left.
 *
 * @example
 * const before = await standbyBefore(pair);
 */
export async function standbyBefore(pair: TestPair): Promise<Before> {
  const runs = await pair.secondary.admin`select id::text from spillway.runs where status = 'running'`;
  const pids = await pair.secondary.admin`select pid from pg_stat_activity where application_name = 'spillway'`;
  return { runs: runs.map((r) => r.id as string), pids: pids.map((r) => r.pid as number) };
}

// Where the child is now, as the standby shows it.
async function seen(pair: TestPair, before: Before): Promise<Set<Landing>> {
  const [row] = await pair.secondary.admin`
    select exists (select 1 from spillway.runs where status = 'running' and id::text <> all(${before.runs}::text[])) as run,
      exists (select 1 from pg_stat_activity where application_name = 'spillway' and pid <> all(${before.pids}::int[])
        and xact_start is not null) as call,
      exists (select 1 from pg_stat_activity where application_name = 'spillway' and pid <> all(${before.pids}::int[])
        and xact_start is not null and query ~* '^\\s*(copy\\s.*from stdin|insert into\\s.*overriding system value)') as load`;
  const landed = new Set<Landing>();
  if (row!.run) landed.add("inside a run");
  if (row!.call) landed.add("inside a call");
  if (row!.load) landed.add("mid-table");
  return landed;
}

/**
 * Waits until the standby shows the child `where` (polling every 10 ms, at most 30 s), then
 * a random time under `jitterMs`, so that the kill comes at a random moment of that work.
 *
 * @example
 * await untilSeen(pair, before, "mid-table", 200);
 */
export async function untilSeen(pair: TestPair, before: Before, where: Landing, jitterMs: number): Promise<void> {
  for (const end = Date.now() + 30_000; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) {
    if ((await seen(pair, before)).has(where)) break;
  }
  await new Promise((r) => setTimeout(r, Math.random() * jitterMs));
}

/**
 * Stops the child's process group (it can neither commit nor begin anything more), reads on
 * the standby where it was, then kills it. Answers where it landed.
 *
 * @example
 * const landed = await killAndSee(pair, child, before);
 * if (landed.has("mid-table")) kills += 1;
 */
export async function killAndSee(pair: TestPair, child: Child, before: Before): Promise<Set<Landing>> {
  child.signalGroup("SIGSTOP");
  const landed = await seen(pair, before);
  child.signalGroup("SIGKILL");
  await child.exited;
  return landed;
}

/**
 * Kills a backup `rounds` times where `where` says: each attempt changes the active
 * (`change(round)`), starts `test/support/backup-child.ts` (with `env`), waits until the
 * standby shows it there and then a random time under `jitterMs`, and kills its process
 * group. A kill that did not land there is made again (at most `rounds * 4` attempts).
 * After every kill the standby must hold a copy it held before or the one that attempt
 * began, never anything in between. Answers how many kills landed there.
 *
 * @example
 * const kills = await killBackupsAtRandom(pair, { rounds: 5, where: "mid-table", jitterMs: 200, change: (r) => addRows(pair) });
 */
export async function killBackupsAtRandom(
  pair: TestPair,
  options: {
    rounds: number;
    where: Landing;
    jitterMs: number;
    change: (round: number) => Promise<unknown>;
    env?: Record<string, string>;
  },
): Promise<number> {
  const published = new Set([JSON.stringify(await fingerprint(pair.secondary.admin))]);
  let kills = 0;
  const missed: string[] = [];
  for (let attempt = 0; kills < options.rounds && attempt < options.rounds * 4; attempt++) {
    await options.change(kills);
    const expected = JSON.stringify(await fingerprint(pair.primary.admin));
    const before = await standbyBefore(pair);
    const child = run(
      process.execPath,
      ["--import", "tsx", "test/support/backup-child.ts"],
      { PRIMARY_URL: pair.urls.primary, SECONDARY_URL: pair.urls.secondary, ...options.env },
      root,
    );
    await untilSeen(pair, before, options.where, options.jitterMs);
    const landed = await killAndSee(pair, child, before);
    if (landed.has(options.where)) kills += 1;
    else missed.push([...landed].join(" and ") || "before it did anything");
    const now = JSON.stringify(await fingerprint(pair.secondary.admin));
    assert.ok(published.has(now) || now === expected, `attempt ${attempt}: the standby holds neither an earlier copy nor the new one`);
    published.add(expected);
    await expireLease(pair);
  }
  assert.equal(kills, options.rounds, `only ${kills} kills landed ${options.where}; the others: ${missed.join("; ")}`);
  return kills;
}
