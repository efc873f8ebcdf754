import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { expireLease } from "./app.ts";
import { fingerprint } from "./compare.ts";
import type { TestPair } from "./postgres.ts";
import { run } from "./process.ts";

const root = fileURLToPath(new URL("../../", import.meta.url));

/**
 * Kills a backup at a random moment, `rounds` times: each round changes the active
 * (`change(round)`), starts `test/support/backup-child.ts` (with `env`), and kills its process
 * group within `maxDelayMs`. After every kill the standby must hold a copy it held before or
 * the one that round began, never anything in between. Answers how many kills were made.
 *
 * @example
 * const kills = await killBackupsAtRandom(pair, { rounds: 5, maxDelayMs: 2300, change: (r) => addRows(pair) });
 */
export async function killBackupsAtRandom(
  pair: TestPair,
  options: {
    rounds: number;
    maxDelayMs: number;
    change: (round: number) => Promise<unknown>;
    env?: Record<string, string>;
  },
): Promise<number> {
  const published = new Set([JSON.stringify(await fingerprint(pair.secondary.admin))]);
  let kills = 0;
  for (let round = 0; round < options.rounds; round++) {
    await options.change(round);
    const expected = JSON.stringify(await fingerprint(pair.primary.admin));
    const child = run(
      process.execPath,
      ["--import", "tsx", "test/support/backup-child.ts"],
      { PRIMARY_URL: pair.urls.primary, SECONDARY_URL: pair.urls.secondary, ...options.env },
      root,
    );
    await new Promise((r) => setTimeout(r, 300 + Math.random() * (options.maxDelayMs - 300)));
    child.signalGroup("SIGKILL");
    await child.exited;
    kills += 1;
    const now = JSON.stringify(await fingerprint(pair.secondary.admin));
    assert.ok(published.has(now) || now === expected, `round ${round}: the standby holds neither an earlier copy nor the new one`);
    published.add(expected);
    await expireLease(pair);
  }
  return kills;
}
