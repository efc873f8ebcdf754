import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { loadConfig } from "../../functions/config.ts";
import { call, forceBackup, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { loadFixture } from "../support/fixture.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";
import { type SupavisorStandIn, startSupavisorStandIn } from "../support/supavisor.ts";

// Supabase's shared pooler serves every project of a region on one host and port; the user
// name `postgres.<ref>` says which project. The stand-in for Supavisor routes the same way.
describe("two projects behind one pooler host and port (a stand-in for Supavisor's routing)", () => {
  let pair: TestPair;
  let pooler: SupavisorStandIn;
  let t: TestApp;
  let urls: TestPair["urls"];

  before(async () => {
    pair = await startTestPair();
    await loadFixture(pair);
    pooler = await startSupavisorStandIn({ primaryref: pair.primary, standbyref: pair.secondary });
    const config = loadConfig(
      {
        SPILLWAY_PRIMARY_DB_URL: pooler.url("primaryref"),
        SPILLWAY_SECONDARY_DB_URL: pooler.url("standbyref"),
        SPILLWAY_ADMIN_TOKEN: "x".repeat(20),
      },
      "function",
    );
    urls = config.dbUrls!;
    t = await testApp(pair, { urls });
  });
  after(async () => {
    await t?.close();
    await pooler?.stop();
    await pair?.destroy();
  });

  test("the configuration takes them as two projects, and each URL reaches its own server", async () => {
    assert.equal(new URL(urls.primary).host, new URL(urls.secondary).host);
    const seen = await Promise.all(
      [urls.primary, urls.secondary].map(async (url) => {
        const sql = postgres(url, { max: 1, prepare: false, onnotice: () => {} });
        try {
          const [row] = await sql<{ port: number; user: string }[]>`select current_setting('port')::int as port, current_user as user`;
          return row;
        } finally {
          await sql.end();
        }
      }),
    );
    assert.deepEqual(seen, [
      { port: pair.primary.port, user: "postgres" },
      { port: pair.secondary.port, user: "postgres" },
    ]);
  });

  test("backs up (copy, and fdw whose link goes through the pooler too) and switches through it; the app keeps writing on the active", async () => {
    for (const strategy of ["copy", "fdw"] as const) {
      assert.equal((await call(t, "PATCH", "/config", { strategy })).status, 200);
      const run = await forceBackup(t, "full", { verify: true });
      assert.equal(run.status, "succeeded");
      assert.equal(run.strategy, strategy);
    }
    await pair.primary.admin`insert into public.accounts (owner, balance) select 'late ' || g, 7 from generate_series(1, 10) g`;
    assert.equal((await forceBackup(t, "incremental")).kind, "incremental");
    const sw = await call(t, "POST", "/force-switch", {});
    assert.equal(sw.status, 200, JSON.stringify(sw.body));
    assert.deepEqual([sw.body.switch.to, sw.body.switch.epoch], ["secondary", 2]);
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    const app = postgres(urls.secondary, { max: 1, prepare: false, onnotice: () => {} });
    try {
      await app`insert into public.accounts (owner, balance) values ('after the switch', 1)`;
    } finally {
      await app.end();
    }
    const [row] = await pair.secondary.admin`select count(*)::int as n from public.accounts where owner = 'after the switch'`;
    assert.equal(row!.n, 1);
    assert.ok(pooler.routed.primaryref! > 0 && pooler.routed.standbyref! > 0);
  });
});
