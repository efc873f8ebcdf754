import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { createSpillwayClient } from "../../client/index.ts";
import { connectProject } from "../../functions/project.ts";
import { tick } from "../../functions/tick.ts";
import { call, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";

// A failover whose old active's changes cannot be listed when it answers again: they are
// kept, and nothing is written to it until an operator acknowledges the failover.
type Name = "primary" | "secondary";
let pair: TestPair;
let t: TestApp;
let apis: Record<Name, Awaited<ReturnType<typeof startDataApi>>>;
const JWT_SECRETS = { primary: "the-primary-projects-jwt-secret-0123456789", secondary: "the-secondary-projects-jwt-secret-0123456789" };

before(async () => {
  pair = await startTestPair();
  await applyToBoth(
    pair,
    "create table public.items (id text primary key, writer integer not null); grant select, insert on public.items to anon",
  );
  t = await testApp(pair);
  apis = {
    primary: await startDataApi(pair.urls.primary, JWT_SECRETS.primary),
    secondary: await startDataApi(pair.urls.secondary, JWT_SECRETS.secondary),
  };
  const patched = await call(t, "PATCH", "/config", { failover: { afterSeconds: 2, maxLagSeconds: 30 }, maxRetainedBytes: 1048576 });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
});
after(async () => {
  await apis?.primary.close();
  await apis?.secondary.close();
  await t?.close();
  await pair?.destroy();
});

const ctx = () => ({ projects: t.projects, events: t.events });

// The app, unchanged: the drop-in client over both projects' Data API (STAND-IN for PostgREST).
const supabase = () =>
  createSpillwayClient({
    projects: {
      primary: { url: apis.primary.url, anonKey: apis.primary.anonKey },
      secondary: { url: apis.secondary.url, anonKey: apis.secondary.anonKey },
    },
    cacheTtlMs: 300,
  });

async function writeOn(name: Name, id: string): Promise<{ ok: boolean; code?: string }> {
  const sql = postgres(pair.urls[name], { max: 1, onnotice: () => {} });
  try {
    await sql`insert into public.items (id, writer) values (${id}, 99)`;
    return { ok: true };
  } catch (e) {
    return { ok: false, code: (e as { code?: string }).code };
  } finally {
    await sql.end();
  }
}

const ids = async (name: Name) => new Set((await pair[name].admin`select id from public.items`).map((r) => r.id as string));
// What the old active's public.items held, copied aside there.
const keptIds = async () =>
  new Set((await pair.primary.admin`select id from spillway_divergent_2.public__items`).map((r) => r.id as string));

describe("a failover whose old active's changes cannot be listed", () => {
  test("the retention job keeps the old active's slot; with the slot gone anyway its writes are kept aside and it is not backed up to until acknowledged", async () => {
    assert.equal((await tick(ctx())).run?.kind, "full");
    assert.deepEqual(await writeOn("primary", "carried-1"), { ok: true });
    assert.equal((await tick(ctx())).run?.kind, "incremental");
    assert.deepEqual(await writeOn("primary", "late-1"), { ok: true }); // acknowledged, never carried
    await pair.primary.stop();
    let failed: Awaited<ReturnType<typeof tick>> | undefined;
    for (let n = 0; n < 30 && !failed?.switch; n++) {
      failed = await tick(ctx());
      if (!failed.switch) await new Promise((done) => setTimeout(done, 400));
    }
    assert.deepEqual([failed?.switch?.to, failed?.switch?.epoch], ["secondary", 2]);

    // Back, unfenced until a tick reaches it: an app still connected there writes, and more
    // WAL than maxRetainedBytes piles up behind its slot.
    await pair.primary.restart();
    assert.deepEqual(await writeOn("primary", "returned-1"), { ok: true });
    await pair.primary.admin`select pg_catalog.pg_logical_emit_message(false, 'filler', repeat('x', 2000000))`;
    const [failover] = await pair.secondary.admin`select slot from spillway.failover where epoch = 2`;
    const slot = failover?.slot as string;
    // The database's own retention job (pg_cron runs this function) keeps the slot the listing needs.
    const [job] = await pair.primary.admin`select spillway.guard_retention() as dropped`;
    assert.deepEqual(job?.dropped, []);
    assert.equal((await pair.primary.admin`select 1 from pg_replication_slots where slot_name = ${slot}`).length, 1);

    // An operator's backup before any tick reached it again is refused: it would overwrite them.
    const forced = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(forced.status, 409, JSON.stringify(forced.body));
    assert.equal(forced.body.error.code, "FAILOVER_UNRESOLVED");
    assert.ok((await ids("primary")).has("returned-1"));

    // The slot is gone anyway (dropped by hand, or invalidated by the server).
    await pair.primary.admin`select pg_drop_replication_slot(${slot})`;
    const back = await tick(ctx());
    assert.equal(back.run, undefined, "nothing is backed up to the old active");
    assert.match(back.error ?? "", /failed away from \(epoch 2\).*slot .* is gone/);
    assert.equal((await writeOn("primary", "after-tick")).code, "SPWFN", "the old active is fenced");
    const [record] = await pair.secondary.admin`select resolved_at, note from spillway.failover where epoch = 2`;
    assert.equal(record?.resolved_at, null, "not resolved: its changes were not listed");
    assert.match(record?.note ?? "", /slot .* is gone/);
    for (const id of ["late-1", "returned-1"]) {
      assert.ok((await ids("primary")).has(id), `${id} is still on the old active`);
      assert.ok((await keptIds()).has(id), `${id} is copied aside`);
    }
    const status = await call(t, "GET", "/status");
    const reason = status.body.health.reasons.find((r: { code: string }) => r.code === "failover_unresolved");
    assert.match(reason?.message ?? "", /POST \/failover\/ack \{"epoch": 2\}/);
    const told = await pair.secondary.admin`select count(*)::int as n from spillway.events where kind = 'failover.divergent'`;
    assert.equal((await tick(ctx())).run, undefined, "still nothing is backed up to it");
    const toldAgain = await pair.secondary.admin`select count(*)::int as n from spillway.events where kind = 'failover.divergent'`;
    assert.deepEqual([told[0]?.n, toldAgain[0]?.n], [1, 1], "told once");

    // The operator compared by hand and acknowledges: the next tick backs the old active up.
    const bad = await call(t, "POST", "/failover/ack", { epoch: "two" });
    assert.deepEqual([bad.status, bad.body.error.code, Object.keys(bad.body.error.details)], [400, "INVALID_BODY", ["epoch"]]);
    assert.equal((await call(t, "POST", "/failover/ack", { epoch: 7 })).status, 404);
    const ack = await call(t, "POST", "/failover/ack", { epoch: 2 });
    assert.equal(ack.status, 200, JSON.stringify(ack.body));
    const resumed = await tick(ctx());
    assert.deepEqual([resumed.run?.kind, resumed.run?.target, resumed.run?.status], ["full", "primary", "succeeded"]);
    const [done] = await pair.secondary.admin`select resolved_at from spillway.failover where epoch = 2`;
    assert.ok(done?.resolved_at);
    assert.ok((await keptIds()).has("returned-1"), "the copy aside outlives the backup");
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
    assert.equal((await supabase().from("items").insert({ id: "after-ack", writer: 1 })).error, null);
    assert.ok((await ids("secondary")).has("after-ack"));
  });

  test("no failover while only Spillway's login to the active is refused (a rotated password): apps still write there", async () => {
    // Secondary is the active (epoch 2); Spillway's own connection to it is refused at login.
    const wrong = new URL(pair.urls.secondary);
    wrong.password = "rotated";
    const refused = {
      projects: { primary: t.projects.primary, secondary: connectProject("secondary", wrong.toString(), { connectTimeout: 2 }) },
      events: t.events,
    };
    try {
      for (let n = 0; n < 6; n++) {
        const r = await tick(refused);
        assert.equal(r.switch, undefined, `tick ${n} failed over: ${r.reason}`);
        await new Promise((done) => setTimeout(done, 500));
      }
    } finally {
      await refused.projects.secondary.sql.end({ timeout: 1 });
    }
    const [state] = await pair.primary.admin`select active, epoch::int, fenced from spillway.state`;
    assert.deepEqual([state?.active, state?.epoch, state?.fenced], ["secondary", 2, true]);
    assert.equal((await supabase().from("items").insert({ id: "login-refused", writer: 1 })).error, null);
    assert.ok((await ids("secondary")).has("login-refused"));
    await tick(ctx());
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });
});
