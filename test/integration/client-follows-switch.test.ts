// The drop-in client follows a switch without app traffic: reads reach the new active within
// 2 s of its publish, and Realtime channels (postgres_changes, broadcast, presence) move there
// with their callbacks and the signed-in user's token. With STAND-INS for PostgREST
// (test/support/postgrest.ts), Supabase Auth (test/support/gotrue-api.ts) and Supabase
// Realtime (test/support/realtime.ts, realtime-js's own protocol), which cannot run here.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { RealtimeChannel, SupabaseClient } from "@supabase/supabase-js";
import { createSpillwayClient, getActiveClient, onSwitch } from "../../client/index.ts";
import { followingRealtime } from "../../client/realtime.ts";
import { call, forceBackup, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { installAuth, signUp } from "../support/gotrue.ts";
import { startAuthApi } from "../support/gotrue-api.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";
import { startRealtime } from "../support/realtime.ts";

type Name = "primary" | "secondary";
// Each project's anon key, signed by its Data API stand-in.
const ANON = { primary: "", secondary: "" };
const PUBLISH_TO_DELIVERY_MS = 2_000;
// Both projects share one JWT secret: a signed-in user's token is good on either.
const SECRET = "a-jwt-secret-both-projects-share-0123456789";

describe("the drop-in client follows a switch", () => {
  let pair: TestPair;
  let t: TestApp;
  const fronts: Array<{ close(): Promise<void> }> = [];
  const realtime = {} as Record<Name, Awaited<ReturnType<typeof startRealtime>>>;
  let options: Parameters<typeof createSpillwayClient>[0];

  before(async () => {
    pair = await startTestPair();
    await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
    await applyToBoth(
      pair,
      `create table public.chat (id text primary key, room text not null, at timestamptz not null default clock_timestamp());
       grant select, insert on public.chat to anon, authenticated`,
    );
    await signUp(pair.primary, "ana@example.com", "pw-ana");
    t = await testApp(pair);
    const urls = {} as Record<Name, string>;
    for (const name of ["primary", "secondary"] as const) {
      const data = await startDataApi(pair.urls[name], SECRET);
      ANON[name] = data.anonKey;
      const auth = await startAuthApi(pair[name], { jwtSecret: SECRET, next: data.url });
      realtime[name] = await startRealtime(pair[name], { anonKey: ANON[name], jwtSecret: SECRET, next: auth.url });
      fronts.push(realtime[name], auth, data);
      urls[name] = realtime[name].url;
    }
    options = {
      projects: { primary: { url: urls.primary, anonKey: ANON.primary }, secondary: { url: urls.secondary, anonKey: ANON.secondary } },
    };
    await forceBackup(t, "full");
  });
  after(async () => {
    for (const f of fronts) await f.close();
    await t?.close();
    await pair?.destroy();
  });

  const switchTo = async (to: Name) => {
    const r = await call(t, "POST", "/force-switch", { to });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const [row] = await pair[to].admin`select extract(epoch from since) * 1000 as ms from public.spillway_active`;
    return Number(row!.ms);
  };

  test("a read-only client reads the new active within 2 s of the publish, with no writes", async () => {
    const reader = createSpillwayClient(options);
    const held = await getActiveClient(options);
    const switches: Name[] = [];
    let renewed: SupabaseClient | null = null;
    // The pinned client of getActiveClient is asked for again when the active changes.
    const off = onSwitch(async ({ to }) => {
      switches.push(to);
      renewed = await getActiveClient(options);
    });
    try {
      assert.equal((await reader.from("chat").select("id")).error, null);
      const published = await switchTo("secondary");
      await pair.secondary.admin`insert into public.chat (id, room) values ('only-on-secondary', 'x')`;
      for (;;) {
        const { data } = await reader.from("chat").select("id");
        if (data?.some((r) => r.id === "only-on-secondary")) break;
        assert.ok(Date.now() - published < PUBLISH_TO_DELIVERY_MS, "the reader still reads the old active 2 s after the publish");
        await new Promise((done) => setTimeout(done, 50));
      }
      assert.ok(Date.now() - published < PUBLISH_TO_DELIVERY_MS);
      assert.deepEqual(switches, ["secondary"]);
      assert.notEqual(renewed, held);
      assert.ok((await renewed!.from("chat").select("id")).data?.some((r) => r.id === "only-on-secondary"));
    } finally {
      off();
    }
  });

  test("channels move to the new active with their callbacks: every change from 2 s after the publish, none twice", async () => {
    const app = createSpillwayClient(options);
    const peer = createSpillwayClient(options);
    // Ana is signed in: her channel joins with her token, on each project in turn.
    assert.equal((await app.auth.signInWithPassword({ email: "ana@example.com", password: "pw-ana" })).error, null);
    const changes: string[] = [];
    const broadcasts: string[] = [];
    const subscribed = (channel: RealtimeChannel) =>
      new Promise<void>((done, fail) =>
        channel.subscribe((status, err) => (status === "SUBSCRIBED" ? done() : status === "CLOSED" ? fail(err) : undefined)),
      );
    const mine = app
      .channel("room", { config: { presence: { key: "ana" } } })
      .on("postgres_changes", { event: "INSERT", schema: "public", table: "chat", filter: "room=eq.lobby" }, (p) =>
        changes.push((p.new as { id: string }).id),
      )
      .on("broadcast", { event: "wave" }, ({ payload }) => broadcasts.push(payload.from))
      .on("presence", { event: "sync" }, () => undefined);
    const theirs = peer.channel("room", { config: { presence: { key: "ben" } } }).on("presence", { event: "sync" }, () => undefined);
    await Promise.all([subscribed(mine), subscribed(theirs)]);
    await mine.track({ online: true });
    assert.deepEqual(realtime.secondary.roles("realtime:room"), ["anon", "authenticated"]);

    // The app writes all along, a message every 50 ms, through the drop-in client.
    let n = 0;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        const { error } = await peer.from("chat").insert({ id: `m${++n}`, room: n % 5 === 0 ? "hall" : "lobby" });
        assert.equal(error, null, JSON.stringify(error));
        await new Promise((done) => setTimeout(done, 50));
      }
    })();
    const runTo = async (to: Name) => {
      await forceBackup(t, "auto");
      const published = await switchTo(to);
      await new Promise((done) => setTimeout(done, PUBLISH_TO_DELIVERY_MS + 1_500));
      return published;
    };
    const expectAll = async (on: Name, from: number) => {
      const rows = await pair[on].admin`
        select id from public.chat where room = 'lobby' and at >= to_timestamp(${from / 1000}) order by at`;
      assert.ok(rows.length >= 5, `only ${rows.length} messages written on ${on}`);
      // The last ones may have been committed a moment ago: each gets a few seconds to arrive.
      let missing = rows.map((r) => r.id as string);
      for (const until = Date.now() + 5_000; ; await new Promise((done) => setTimeout(done, 100))) {
        missing = missing.filter((id) => !changes.includes(id));
        if (missing.length === 0 || Date.now() > until) break;
      }
      assert.deepEqual(missing, [], `messages committed on ${on} from 2 s after the publish that never arrived`);
    };

    let again: number;
    try {
      const back = await runTo("primary");
      await expectAll("primary", back + PUBLISH_TO_DELIVERY_MS);
      assert.deepEqual(realtime.primary.roles("realtime:room"), ["anon", "authenticated"]);
      assert.equal(realtime.secondary.members("realtime:room"), 0);
      // Broadcast and presence moved with the channels: the peer sees Ana, Ana hears the peer.
      assert.ok("ana" in theirs.presenceState(), "Ana is present on the new active");
      assert.equal(await theirs.send({ type: "broadcast", event: "wave", payload: { from: "ben" } }), "ok");

      again = await runTo("secondary");
      writing = false;
      await writer;
    } finally {
      writing = false;
    }
    await new Promise((done) => setTimeout(done, 300));
    await expectAll("secondary", again + PUBLISH_TO_DELIVERY_MS);
    assert.equal(new Set(changes).size, changes.length, "a change delivered twice");
    assert.deepEqual(broadcasts, ["ben"]);
    assert.deepEqual(realtime.secondary.roles("realtime:room"), ["anon", "authenticated"]);

    // The two projects hold the same rows, and the app keeps writing on the active.
    await forceBackup(t, "auto");
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
    assert.equal((await app.from("chat").insert({ id: "last", room: "lobby" })).error, null);
    assert.equal((await pair.secondary.admin`select 1 from public.chat where id = 'last'`).length, 1);
    await Promise.all([app.removeAllChannels(), peer.removeAllChannels()]);
  });

  test("frames of realtime-js's protocol 1.0.0 (JSON objects) go through the following socket unchanged", () => {
    const sent: unknown[] = [];
    // A socket that keeps what is sent: the frames' shape is what is checked, not a server.
    class KeepingSocket extends EventTarget {
      OPEN = 1;
      readyState = 1;
      send(data: unknown) {
        sent.push(data);
      }
      close() {}
    }
    const rt = followingRealtime({
      projects: { primary: { url: "http://p.test", anonKey: "a" }, secondary: { url: "http://s.test", anonKey: "b" } },
      origin: "primary",
      current: () => "primary",
      options: { transport: KeepingSocket as never, vsn: "1.0.0" } as never,
    });
    const Transport = rt.options.transport as unknown as new (url: string) => { send(d: string): void; dispatchEvent(e: Event): void };
    const ws = new Transport("ws://p.test/realtime/v1/websocket?apikey=a&vsn=1.0.0");
    const frame = JSON.stringify({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1" });
    ws.send(frame);
    ws.dispatchEvent(
      new MessageEvent("message", { data: JSON.stringify({ topic: "phoenix", event: "phx_reply", payload: {}, ref: "1" }) }),
    );
    assert.deepEqual(sent, [frame]);
  });
});
