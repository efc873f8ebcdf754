// Full backups killed mid-table at random moments, and money moved during backups: the
// standby always holds one complete copy.
//
// Mutation it catches (run on purpose, then reverted): runs left by a killed process never
// marked failed (functions/runs.ts, failInterrupted doing nothing) fails "the standby always
// holds a complete earlier copy, and the next backup completes" (killed runs are marked
// interrupted).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { loadFixture } from "../support/fixture.ts";
import { killBackupsAtRandom } from "../support/kills.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";
import { moveMoney } from "../support/writers.ts";

let pair: TestPair;
let t: TestApp;
const TOTAL = 100 * 1000;

before(async () => {
  pair = await startTestPair();
  await loadFixture(pair);
  // A heavier table, so that a kill lands in the middle of a copy.
  for (const server of [pair.primary, pair.secondary]) {
    const sql = postgres(server.url, { max: 1, onnotice: () => {} });
    await sql`create table public.bulk (id bigint primary key, body text not null, n integer not null)`;
    await sql`create index bulk_n_idx on public.bulk (n)`;
    await sql.end();
  }
  await pair.primary.admin`insert into public.bulk select g, repeat(md5(g::text), 8), g % 1000 from generate_series(1, 100000) g`;
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function backup(): Promise<any> {
  const res = await t.request("/spillway/force-backup", { method: "POST", body: JSON.stringify({ mode: "full", verify: true }) });
  const body = JSON.parse(await res.text());
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.run;
}

describe("a full backup killed at random moments", () => {
  test("the standby always holds a complete earlier copy, and the next backup completes", async () => {
    await backup();
    const kills = await killBackupsAtRandom(pair, {
      rounds: 4,
      where: "mid-table",
      jitterMs: 200,
      change: async (round) => {
        await pair.primary.admin`update public.bulk set n = n + 1 where id % 10 = ${round}`;
        await pair.primary.admin`insert into public.accounts (owner, balance) values (${`round ${round}`}, 0)`;
      },
    });
    assert.equal(kills, 4);
    const last = await backup();
    assert.equal(last.status, "succeeded");
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    const [interrupted] = await pair.secondary.admin`select count(*)::int as n from spillway.runs where error like 'interrupted%'`;
    assert.ok(interrupted!.n >= 1, "killed runs are marked interrupted");
  });
});

describe("a workload moving money during backups", () => {
  test("the standby's total always equals the constant", async () => {
    await pair.primary.admin`delete from public.accounts`;
    await pair.primary.admin`insert into public.accounts (owner, balance) select 'acct ' || g, 1000 from generate_series(1, 100) g`;
    const ids = (await pair.primary.admin`select id from public.accounts`).map((r) => Number(r.id));
    const movers = moveMoney(pair.urls.primary, ids);
    let transfers = 0;
    try {
      for (let i = 0; i < 4; i++) {
        await backup();
        const [sum] = await pair.secondary.admin`select sum(balance)::int8 as total, count(*)::int as n from public.accounts`;
        assert.equal(Number(sum!.total), TOTAL);
        assert.equal(sum!.n, 100);
      }
    } finally {
      transfers = await movers.stop();
    }
    assert.ok(transfers > 50, `only ${transfers} transfers ran`);
  });
});
