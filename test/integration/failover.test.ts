import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { createSpillwayClient, getActiveClient } from "../../client/index.ts";
import { publishFailover } from "../../functions/fence.ts";
import { tick } from "../../functions/tick.ts";
import { call, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";

type Name = "primary" | "secondary";
let pair: TestPair;
let t: TestApp;
let apis: Record<Name, Awaited<ReturnType<typeof startDataApi>>>;
let hook: Server;
const alerts: { kind: string; message: string; data: Record<string, unknown> }[] = [];
const JWT_SECRETS = { primary: "the-primary-projects-jwt-secret-0123456789", secondary: "the-secondary-projects-jwt-secret-0123456789" };

before(async () => {
  pair = await startTestPair();
  await applyToBoth(
    pair,
    "create table public.items (id text primary key, writer integer not null); grant select, insert on public.items to anon",
  );
  hook = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      alerts.push(JSON.parse(body).event);
      res.end("ok");
    });
  });
  await new Promise<void>((done) => hook.listen(0, "127.0.0.1", done));
  const webhookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;
  t = await testApp(pair, { alerts: { webhookUrl, secret: null }, delivery: { retryDelaysMs: [50], timeoutMs: 2000 } });
  apis = {
    primary: await startDataApi(pair.urls.primary, JWT_SECRETS.primary),
    secondary: await startDataApi(pair.urls.secondary, JWT_SECRETS.secondary),
  };
  const patched = await call(t, "PATCH", "/config", { failover: { afterSeconds: 2, maxLagSeconds: 30 } });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
});
after(async () => {
  await apis?.primary.close();
  await apis?.secondary.close();
  await t?.close();
  hook?.close();
  await pair?.destroy();
});

// The app, unchanged: the drop-in client, or getActiveClient(), over both projects' Data API (STAND-IN for PostgREST).
const options = (urls = { primary: apis.primary.url, secondary: apis.secondary.url }, switchWaitMs = 20_000) => ({
  projects: {
    primary: { url: urls.primary, anonKey: apis.primary.anonKey },
    secondary: { url: urls.secondary, anonKey: apis.secondary.anonKey },
  },
  cacheTtlMs: 300,
  switchWaitMs,
});
const supabase = () => createSpillwayClient(options());

// Writers, each write's id kept once it was acknowledged: writer 0 through the drop-in
// client, writer 1 through the client getActiveClient() gave it before anything happened.
async function startWriters(prefix: string, count: number) {
  const clients = [supabase(), await getActiveClient(options())];
  const acked: string[] = [];
  let stopped = false;
  const loops = Array.from({ length: count }, async (_, w) => {
    for (let i = 0; !stopped; i++) {
      const id = `${prefix}-${w}-${i}`;
      const { error } = await clients[w]!.from("items").insert({ id, writer: w });
      if (!error) acked.push(id);
      await new Promise((done) => setTimeout(done, 20));
    }
  });
  return {
    acked,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return acked;
    },
  };
}

const ctx = () => ({ projects: t.projects, events: t.events });

// Ticks until one fails over (each a short while apart, as a scheduler would run them).
async function tickUntilFailover() {
  for (let n = 0; n < 30; n++) {
    const r = await tick(ctx());
    if (r.switch) return r;
    await new Promise((done) => setTimeout(done, 400));
  }
  assert.fail("no failover happened");
}

// An app write made straight to a project, as an app still connected there would make it.
async function writeOn(name: Name, id: string): Promise<{ ok: boolean; code?: string; message?: string }> {
  const sql = postgres(pair.urls[name], { max: 1, onnotice: () => {} });
  try {
    await sql`insert into public.items (id, writer) values (${id}, 99)`;
    return { ok: true };
  } catch (e) {
    return { ok: false, code: (e as { code?: string }).code, message: (e as Error).message };
  } finally {
    await sql.end();
  }
}

async function ids(name: Name): Promise<Set<string>> {
  return new Set((await pair[name].admin`select id from public.items`).map((r) => r.id as string));
}

async function divergentKeys(on: Name, epoch: number): Promise<Set<string>> {
  const rows = await pair[on].admin`select key->>'id' as id from spillway.divergent where epoch = ${epoch} and table_name = 'public.items'`;
  return new Set(rows.map((r) => r.id as string));
}

async function waitForAlert(kind: string, after: number) {
  for (let n = 0; n < 50 && !alerts.slice(after).some((a) => a.kind === kind); n++) await new Promise((done) => setTimeout(done, 100));
  const found = alerts.slice(after).find((a) => a.kind === kind);
  assert.ok(found, `no ${kind} alert`);
  return found;
}

describe("failover when the active project is down", () => {
  test("the active is killed during writes through the client: the standby takes over, the old one is fenced when it returns, its divergent writes are listed, and a failback works", async () => {
    // With failover on the standby follows at every tick, in the normal phase too.
    const first = await tick(ctx());
    assert.equal(first.action, "backup");
    assert.equal(first.run?.kind, "full");
    const writers = await startWriters("a", 2);
    await new Promise((done) => setTimeout(done, 300));
    const follow = await tick(ctx());
    assert.deepEqual([follow.phase, follow.action, follow.run?.kind], ["normal", "backup", "incremental"]);
    // Acknowledged by the active after the last tick: never carried.
    assert.deepEqual(await writeOn("primary", "late-1"), { ok: true });
    const alertsBefore = alerts.length;
    await pair.primary.stop();

    const failed = await tickUntilFailover();
    assert.equal(failed.action, "switch");
    assert.deepEqual([failed.switch?.from, failed.switch?.to, failed.switch?.epoch], ["primary", "secondary", 2]);
    const completed = await waitForAlert("failover.completed", alertsBefore);
    assert.match(completed.message, /secondary is the active project \(epoch 2\): primary was unreachable and was not fenced/);
    const [record] = await pair.secondary
      .admin`select carried_lsn::text, carried_until, resolved_at from spillway.failover where epoch = 2`;
    assert.ok(record?.carried_lsn, "the last carried position is recorded");
    assert.equal(completed.data.carriedLsn, record.carried_lsn);
    assert.ok(Date.parse(completed.data.carriedUntil as string) > 0);
    assert.equal(record.resolved_at, null);

    // Writes held while the active was down go to the new active once it is published.
    await new Promise((done) => setTimeout(done, 500));
    const acked = await writers.stop();
    const onSecondary = await ids("secondary");
    for (const w of [0, 1])
      assert.ok(
        acked.some((id) => id.startsWith(`a-${w}-`) && onSecondary.has(id)),
        `writer ${w} writes on the new active`,
      );

    // The old active comes back, unfenced at first: an app still connected there writes.
    await pair.primary.restart();
    assert.deepEqual(await writeOn("primary", "returned-1"), { ok: true });
    const backAlerts = alerts.length;
    const back = await tick(ctx());
    assert.equal(back.error, undefined);
    const refused = await writeOn("primary", "after-first-tick");
    assert.equal(refused.code, "SPWFN", "the old active refuses writes from its first tick back");
    assert.match(refused.message ?? "", /the active project is secondary \(epoch 2\)/);

    const divergent = await divergentKeys("secondary", 2);
    assert.ok(
      divergent.has("late-1") && divergent.has("returned-1"),
      JSON.stringify(await pair.secondary.admin`select * from spillway.divergent`),
    );
    const stillOnSecondary = await ids("secondary");
    for (const id of [...acked, "late-1", "returned-1"]) {
      assert.ok(stillOnSecondary.has(id) || divergent.has(id), `the acknowledged write ${id} is lost`);
    }
    for (const id of divergent) assert.ok(!stillOnSecondary.has(id), `${id} was applied to the new active`);
    const [row] = await pair.secondary.admin`
      select operation, committed_at, project, "row" from spillway.divergent where epoch = 2 and key->>'id' = 'returned-1'`;
    assert.deepEqual([row?.operation, row?.project, row?.row], ["insert", "primary", { id: "returned-1", writer: "99" }]);
    assert.ok(Math.abs(Date.now() - row!.committed_at.getTime()) < 60_000);
    const told = await waitForAlert("failover.divergent", backAlerts);
    assert.match(told.message, new RegExp(`primary answers again and is fenced; ${divergent.size} changes it committed`));

    const status = await call(t, "GET", "/status");
    assert.equal(status.body.divergent.count, divergent.size);
    assert.ok(status.body.divergent.changes.some((c: { key: { id: string } }) => c.key.id === "returned-1"));
    for (const name of ["primary", "secondary"]) assert.ok(Date.parse(status.body.projects[name].lastActivityAt) > Date.now() - 60_000);

    // The tick that fenced it and listed its changes made it a valid standby again (a full backup); then a planned failback.
    assert.deepEqual([back.run?.kind, back.run?.target, back.run?.status], ["full", "primary", "succeeded"]);
    const failback = await call(t, "POST", "/force-switch", { to: "primary" });
    assert.equal(failback.status, 200, JSON.stringify(failback.body));
    assert.deepEqual([failback.body.switch.to, failback.body.switch.epoch], ["primary", 3]);
    // The listed changes stay on secondary, now the standby: /status still shows them.
    assert.equal((await call(t, "GET", "/status")).body.divergent.count, divergent.size);
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
    const { error } = await supabase().from("items").insert({ id: "after-failback", writer: 1 });
    assert.equal(error, null);
    assert.ok((await ids("primary")).has("after-failback"));
  });

  test("the active is killed while a backup runs: what that run carried is not divergent, what came after is", async () => {
    const writers = await startWriters("b", 1);
    await new Promise((done) => setTimeout(done, 300));
    const ackedBefore = await writers.stop();
    // The standby's apply waits on a row the test holds (its key, written and not committed), while the active goes down.
    const lock = await pair.secondary.admin.reserve();
    await lock`begin`;
    await lock`set local spillway.writer = 'load'`;
    await lock`insert into public.items (id, writer) values (${ackedBefore[0]!}, 0)`;
    const running = tick(ctx());
    for (let n = 0; n < 100; n++) {
      const [w] = await pair.secondary.admin`select count(*)::int as n from pg_locks where not granted and locktype = 'transactionid'`;
      if (w!.n > 0) break;
      await new Promise((done) => setTimeout(done, 50));
    }
    assert.deepEqual(await writeOn("primary", "during-backup"), { ok: true });
    await pair.primary.stop();
    await lock`rollback`;
    lock.release();
    const interrupted = await running;
    assert.match(interrupted.error ?? "", /./, "the backup could not finish with the active gone");

    const failed = await tickUntilFailover();
    assert.deepEqual([failed.switch?.to, failed.switch?.epoch], ["secondary", 4]);
    const onSecondary = await ids("secondary");
    assert.ok(
      ackedBefore.every((id) => onSecondary.has(id)),
      "the interrupted run carried the writes before it",
    );

    await pair.primary.restart();
    const back = await tick(ctx());
    assert.equal(back.error, undefined);
    assert.equal((await writeOn("primary", "refused")).code, "SPWFN");
    const divergent = await divergentKeys("secondary", 4);
    assert.deepEqual([...divergent], ["during-backup"]);

    // The same tick backed the old active up again: both hold the same rows, and the app writes on the active.
    assert.deepEqual([back.run?.kind, back.run?.target, back.run?.status], ["full", "primary", "succeeded"]);
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
    const { error } = await supabase().from("items").insert({ id: "after-second-failover", writer: 1 });
    assert.equal(error, null);
    assert.ok((await ids("secondary")).has("after-second-failover"));
  });

  test("a write the active cannot take is held up to switchWaitMs, then fails with a clear error when nothing takes over", async () => {
    // The active (secondary, epoch 4) refuses connections; the primary answers, fenced, naming it.
    // A port nothing listens on: connections to it are refused (port 9 is one fetch refuses to try, with no code).
    const closed = createServer();
    await new Promise<void>((done) => closed.listen(0, "127.0.0.1", done));
    const dead = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise((done) => closed.close(done));
    const opts = options({ primary: apis.primary.url, secondary: dead }, 600);
    for (const client of [createSpillwayClient(opts), await getActiveClient(opts)]) {
      const started = Date.now();
      const { error } = await client.from("items").insert({ id: "never-sent", writer: 1 });
      assert.ok(Date.now() - started >= 600, "held for switchWaitMs");
      assert.match(
        error?.message ?? "",
        /ActiveProjectUnreachable: secondary, the active project, could not be reached for 600 ms and no other project was published as active meanwhile; the request was not sent/,
      );
    }
    assert.ok(!(await ids("primary")).has("never-sent") && !(await ids("secondary")).has("never-sent"));
  });

  test("a write whose connection broke after it was sent (a bare TypeError, as browsers and Deno say) surfaces as an error and is not sent again", async () => {
    let posts = 0;
    const brokenOnce: typeof fetch = async (input, init) => {
      const request = new Request(input, init);
      const response = await fetch(request);
      if (request.method === "POST" && request.url.includes("/rest/v1/items") && ++posts === 1) {
        await response.body?.cancel();
        throw new TypeError("Failed to fetch"); // the answer was lost: the server committed
      }
      return response;
    };
    const client = createSpillwayClient({ ...options(), fetch: brokenOnce });
    const { error } = await client.from("items").insert({ id: "sent-once", writer: 1 });
    assert.match(error?.message ?? "", /Failed to fetch/);
    assert.equal(posts, 1, "not sent again");
    assert.ok((await ids("secondary")).has("sent-once"), "the server had committed it");
    assert.equal((await client.from("items").insert({ id: "sent-next", writer: 1 })).error, null);
    assert.equal(posts, 2);
    await tick(ctx());
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });

  test("a failover whose tick lost its lease publishes nothing", async () => {
    const [before] = await pair.primary.admin`select active, epoch::int from spillway.state`;
    const publishing = publishFailover(t.projects.primary, { epoch: before!.epoch + 1, holder: "tick:expired" }, async () => undefined);
    await assert.rejects(publishing, { code: "BUSY", message: /its lease was lost/ });
    const [after] = await pair.primary.admin`select active, epoch::int from spillway.state`;
    assert.deepEqual(after, before);
  });
});
