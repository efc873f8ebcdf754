import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { type TestApp, testApp } from "../support/app.ts";
import { fingerprint, sequencePositions } from "../support/compare.ts";
import { loadFixture } from "../support/fixture.ts";
import { type PgBouncer, startPgBouncer } from "../support/pgbouncer.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";

// What postgres_fdw sets on each connection it opens. Through a transaction pooler these
// stay on the server connection after the session that set them has gone.
const FDW_LEFTOVERS =
  "set search_path = pg_catalog; set timezone = 'UTC'; set datestyle = 'ISO'; set intervalstyle = 'postgres'; set extra_float_digits = 3";

/** Leaves `FDW_LEFTOVERS` on each of a transaction pooler's `size` server connections. */
async function leaveSessionSettings(url: string, size: number): Promise<void> {
  const clients = Array.from({ length: size }, () => postgres(url, { max: 1, prepare: false, onnotice: () => {} }));
  let arrived = 0;
  let release!: () => void;
  const together = new Promise<void>((r) => {
    release = r;
  });
  try {
    // Each client holds its transaction until all have begun: each has a server connection of its own.
    await Promise.all(
      clients.map((c) =>
        c.begin(async (tx) => {
          await tx.unsafe(FDW_LEFTOVERS);
          if (++arrived === size) release();
          await together;
        }),
      ),
    );
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}

for (const mode of ["transaction", "session"] as const) {
  describe(`through PgBouncer in ${mode} mode, with the primary made read-only`, () => {
    // Transaction mode: few server connections, so clients share them (and their leftovers).
    const poolSize = mode === "transaction" ? 2 : 10;
    let pair: TestPair;
    let bouncers: PgBouncer[] = [];
    let urls: TestPair["urls"];
    let t: TestApp;

    before(async () => {
      pair = await startTestPair();
      await loadFixture(pair);
      // What Supabase does to a free project over its quota.
      await pair.primary.admin`alter database postgres set default_transaction_read_only = on`;
      bouncers = await Promise.all([startPgBouncer(pair.primary, mode, poolSize), startPgBouncer(pair.secondary, mode, poolSize)]);
      urls = { primary: bouncers[0]!.url, secondary: bouncers[1]!.url };
      if (mode === "transaction") {
        await leaveSessionSettings(urls.primary, poolSize);
        const probe = postgres(urls.primary, { max: 1, prepare: false, onnotice: () => {} });
        const [path] = await probe<{ search_path: string }[]>`show search_path`;
        await probe.end();
        assert.equal(path!.search_path, "pg_catalog", "the pooled server connections carry another session's search_path");
      }
      // postgres_fdw keeps session settings: behind a transaction pooler, the link goes direct.
      t = await testApp(pair, { urls, fdwUrls: mode === "transaction" ? pair.urls : undefined });
    });
    after(async () => {
      await t?.close();
      await Promise.all(bouncers.map((b) => b.stop()));
      await pair?.destroy();
    });

    const post = async (path: string, body: unknown) => {
      const res = await t.request(`/spillway${path}`, { method: path === "/config" ? "PATCH" : "POST", body: JSON.stringify(body) });
      return { status: res.status, body: JSON.parse(await res.text()) };
    };
    const equalSides = async (sequences = true) => {
      assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
      if (sequences) assert.deepEqual(await sequencePositions(pair.secondary.admin), await sequencePositions(pair.primary.admin));
    };

    test("full backups with copy and with fdw, verified, leave both sides equal", async () => {
      for (const strategy of ["copy", "fdw"] as const) {
        assert.equal((await post("/config", { strategy })).status, 200);
        const r = await post("/force-backup", { mode: "full", verify: true });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.run.status, "succeeded");
        assert.equal(r.body.run.strategy, strategy);
        await equalSides();
      }
    });

    test("an incremental backup carries what changed on the active since", async () => {
      await pair.primary.admin.begin("read write", async (tx) => {
        await tx`insert into public.accounts (owner, balance) select 'late ' || g, 7 from generate_series(1, 20) g`;
        await tx`update public.employees set mood = 'sad' where id % 3 = 0`;
        await tx`delete from public.assignments where hours < 2`;
        // A table without a primary key: rows are found by all their values (jsonb and
        // microsecond timestamps among them).
        await tx`insert into public.audit_log (message, payload) values ('late', '{"k": [1, 2]}')`;
        await tx`update public.audit_log set message = 'edited' where message = 'event 3'`;
        await tx`delete from public.audit_log where message = 'event 7'`;
      });
      const r = await post("/force-backup", { mode: "incremental" });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.run.kind, "incremental");
      assert.ok(r.body.run.rows > 0);
      await equalSides(false);
    });

    test("verify finds the two projects equal", async () => {
      const r = await post("/verify", {});
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.verify.ok, true, JSON.stringify(r.body.verify.mismatches));
    });

    test("a switch and a switch back; the app keeps writing on the active", async () => {
      const away = await post("/force-switch", { to: "secondary" });
      assert.equal(away.status, 200, JSON.stringify(away.body));
      assert.deepEqual([away.body.switch.to, away.body.switch.epoch], ["secondary", 2]);
      // The app writes through the pooler to the new active, ids from its identity default.
      const app = postgres(urls.secondary, { max: 1, prepare: false, onnotice: () => {} });
      try {
        const [row] = await app<{ id: string }[]>`insert into public.projects (lead_id, title) values (1, 'after the switch') returning id`;
        assert.ok(Number(row!.id) > 0);
      } finally {
        await app.end();
      }
      const back = await post("/force-switch", { to: "primary" });
      assert.equal(back.status, 200, JSON.stringify(back.body));
      assert.deepEqual([back.body.switch.to, back.body.switch.epoch], ["primary", 3]);
      // Sequence positions are compared after full backups: catch-ups (incremental) leave them.
      await equalSides(false);
      const [carried] = await pair.primary.admin`select count(*)::int as n from public.projects where title = 'after the switch'`;
      assert.equal(carried!.n, 1);
      const [state] = await pair.primary.admin`select active, epoch::int from public.spillway_active`;
      assert.deepEqual({ ...state }, { active: "primary", epoch: 3 });
    });
  });
}
