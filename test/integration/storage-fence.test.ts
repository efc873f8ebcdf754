// Storage is fenced with the tables: an upload or delete on the fenced old active is refused,
// and the drop-in client holds it and sends it to the new active. With STAND-INS for the
// Storage API (test/support/storage.ts: rows written as supabase_storage_admin, bytes in its
// own store) and PostgREST (test/support/postgrest.ts), which cannot run here.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createClient } from "@supabase/supabase-js";
import { createSpillwayClient } from "../../client/index.ts";
import { call, forceBackup, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";
import { installStorage, startStorageApi } from "../support/storage.ts";

type Name = "primary" | "secondary";
// Each project's anon key, signed by its Data API stand-in.
const ANON = { primary: "", secondary: "" };
const JWT_SECRETS = { primary: "the-primary-projects-jwt-secret-0123456789", secondary: "the-secondary-projects-jwt-secret-0123456789" };
const SERVICE = { primary: "service-key-primary", secondary: "service-key-secondary" };

describe("Storage is fenced with the rest", () => {
  let pair: TestPair;
  let t: TestApp;
  const fronts: Array<{ close(): Promise<void> }> = [];
  const storage = {} as Record<Name, Awaited<ReturnType<typeof startStorageApi>>>;
  const projects = {} as Record<Name, { url: string; anonKey: string }>;

  before(async () => {
    pair = await startTestPair();
    await Promise.all([installStorage(pair.primary), installStorage(pair.secondary)]);
    await applyToBoth(pair, "create table public.notes (id text primary key); grant select, insert on public.notes to anon");
    const apis = {} as Record<Name, { url: string; serviceKey: string }>;
    for (const name of ["primary", "secondary"] as const) {
      const data = await startDataApi(pair.urls[name], JWT_SECRETS[name]);
      ANON[name] = data.anonKey;
      storage[name] = await startStorageApi(pair[name], { anonKey: ANON[name], serviceKey: SERVICE[name], next: data.url });
      fronts.push(storage[name], data);
      projects[name] = { url: storage[name].url, anonKey: ANON[name] };
      apis[name] = { url: storage[name].url, serviceKey: SERVICE[name] };
      // The app's setup: a bucket and one object in each project.
      const admin = createClient(storage[name].url, SERVICE[name]).storage;
      assert.equal((await admin.createBucket("avatars", { public: true })).error, null);
      assert.equal((await admin.from("avatars").upload("shared.png", new Blob(["shared"]))).error, null);
    }
    t = await testApp(pair, { storage: apis });
    await forceBackup(t, "full");
  });
  after(async () => {
    for (const f of fronts) await f.close();
    await t?.close();
    await pair?.destroy();
  });

  const names = async (on: Name) =>
    (await pair[on].admin`select name from storage.objects where bucket_id = 'avatars' order by name`).map((r) => r.name as string);

  test("an upload or delete on the fenced old active is refused, held by the client and sent to the new active", async () => {
    // Two apps that last looked before the switch (and do not watch): they still send to the primary.
    const uploader = createSpillwayClient({ projects, cacheTtlMs: 60_000, watchMs: 0 });
    const remover = createSpillwayClient({ projects, cacheTtlMs: 60_001, watchMs: 0 });
    assert.equal((await uploader.from("notes").insert({ id: "before" })).error, null);
    assert.equal((await remover.from("notes").select("id")).error, null);

    const r = await call(t, "POST", "/force-switch", { to: "secondary" });
    assert.equal(r.status, 200, JSON.stringify(r.body));

    // Straight to the fenced old active: refused, nothing stored there.
    const direct = await createClient(projects.primary.url, ANON.primary)
      .storage.from("avatars")
      .upload("lost.png", new Blob(["x"]));
    assert.match(direct.error?.message ?? "", /spillway: project primary is fenced; the active project is secondary/);
    assert.equal(storage.primary.bytes.has("avatars/lost.png"), false);

    const up = await uploader.storage.from("avatars").upload("after.png", new Blob(["after-switch"]), { contentType: "image/png" });
    assert.equal(up.error, null, JSON.stringify(up.error));
    const gone = await remover.storage.from("avatars").remove(["shared.png"]);
    assert.equal(gone.error, null, JSON.stringify(gone.error));
    assert.deepEqual(await names("primary"), ["shared.png"], "the fenced old active kept what it had, and nothing more");
    assert.deepEqual(await names("secondary"), ["after.png"]);
    assert.equal(storage.secondary.bytes.get("avatars/after.png")?.toString(), "after-switch");
    const { data } = await uploader.storage.from("avatars").download("after.png");
    assert.equal(await data?.text(), "after-switch");

    // A failback: the app keeps working, unchanged, and the projects hold the same rows.
    const back = await call(t, "POST", "/force-switch", { to: "primary" });
    assert.equal(back.status, 200, JSON.stringify(back.body));
    assert.equal((await uploader.storage.from("avatars").upload("failback.png", new Blob(["fb"]))).error, null);
    // The failback's catch-up carried Storage back: the primary now holds what the secondary held.
    assert.deepEqual(await names("primary"), ["after.png", "failback.png"]);
    assert.equal((await uploader.from("notes").insert({ id: "after-failback" })).error, null);
    await forceBackup(t, "auto");
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });

  test("buckets and objects follow the database: carried with every backup (only what changed), checked by /verify, in step at a switch", async () => {
    const app = createSpillwayClient({ projects });
    const admin = createClient(projects.primary.url, SERVICE.primary).storage;
    assert.equal((await admin.createBucket("docs", { public: false, fileSizeLimit: 1000 })).error, null);
    assert.equal((await app.storage.from("docs").upload("a.txt", new Blob(["alpha"]), { contentType: "text/plain" })).error, null);
    assert.equal((await app.storage.from("avatars").upload("sub/b.png", new Blob(["bee"]))).error, null);
    const carried = () => t.sunk.filter((e) => e.kind === "storage.carried").map((e) => e.data);

    await forceBackup(t, "auto");
    const [bucket] = await pair.secondary.admin`select public, file_size_limit from storage.buckets where id = 'docs'`;
    assert.deepEqual({ ...bucket }, { public: false, file_size_limit: "1000" });
    assert.deepEqual(await names("secondary"), await names("primary"));
    assert.equal(storage.secondary.bytes.get("docs/a.txt")?.toString(), "alpha");
    assert.equal(storage.secondary.bytes.get("avatars/sub/b.png")?.toString(), "bee");
    const verified = await call(t, "POST", "/verify");
    assert.equal(verified.body.verify.storage.equal, true, JSON.stringify(verified.body.verify));
    assert.equal(verified.body.verify.ok, true);

    // An object the standby's store fails is named, and copied by the next run; the others are copied.
    storage.secondary.refused.add("docs/e.txt");
    for (const n of ["e.txt", "f.txt"]) assert.equal((await app.storage.from("docs").upload(n, new Blob([n]))).error, null);
    await forceBackup(t, "auto");
    const incomplete = t.sunk.filter((e) => e.kind === "storage.incomplete").at(-1);
    assert.deepEqual(incomplete?.data?.failed, ["docs/e.txt"]);
    assert.equal(storage.secondary.bytes.get("docs/f.txt")?.toString(), "f.txt");
    storage.secondary.refused.clear();
    await forceBackup(t, "auto");
    assert.equal(storage.secondary.bytes.get("docs/e.txt")?.toString(), "e.txt");

    // Only what changed since: one overwrite and one delete.
    const before = carried().length;
    await forceBackup(t, "auto");
    assert.equal(carried().length, before, "a backup with nothing changed in Storage copies nothing");
    assert.equal((await app.storage.from("docs").upload("a.txt", new Blob(["alpha-2"]), { upsert: true })).error, null);
    assert.equal((await app.storage.from("avatars").remove(["sub/b.png"])).error, null);
    assert.equal((await call(t, "POST", "/verify")).body.verify.storage.equal, false, "/verify sees the objects differ");
    await forceBackup(t, "auto");
    assert.deepEqual({ copied: carried().at(-1)?.copied, deleted: carried().at(-1)?.deleted }, { copied: 1, deleted: 1 });
    assert.equal(storage.secondary.bytes.get("avatars/sub/b.png"), undefined);

    // At the switch the objects are in step: the app reads its file on the new active.
    const upload = app.storage.from("docs").upload("c.txt", new Blob(["gamma"]));
    assert.equal((await upload).error, null);
    const r = await call(t, "POST", "/force-switch", { to: "secondary" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await names("secondary"), await names("primary"));
    assert.equal(await (await app.storage.from("docs").download("c.txt")).data?.text(), "gamma");
    assert.equal(await (await app.storage.from("docs").download("a.txt")).data?.text(), "alpha-2");

    const status = await call(t, "GET", "/status");
    assert.equal(status.body.storage.carried, true);
    const [count] = await pair.secondary.admin`select count(*)::int as n from storage.objects`;
    assert.equal(status.body.storage.projects.secondary.objects, count!.n);
    assert.equal(status.body.storage.projects.secondary.lastCopied.from, "primary");
    const bare = await testApp(pair);
    try {
      const plain = await call(bare, "GET", "/status");
      assert.equal(plain.body.storage.carried, false);
      assert.match(plain.body.storage.reason, /SPILLWAY_PRIMARY_API_URL/);
    } finally {
      await bare.close();
    }

    // A failback, and the app keeps working; the projects hold the same rows.
    assert.equal((await call(t, "POST", "/force-switch", { to: "primary" })).status, 200);
    assert.equal((await app.storage.from("docs").upload("d.txt", new Blob(["delta"]))).error, null);
    assert.equal((await app.from("notes").insert({ id: "storage-carried" })).error, null);
    await forceBackup(t, "auto");
    assert.deepEqual(await names("secondary"), await names("primary"));
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));

    // /status shows the tables each project publishes to Realtime, and when they differ.
    await pair.primary.admin`create publication supabase_realtime for table public.notes`;
    const { realtime } = (await call(t, "GET", "/status")).body;
    assert.deepEqual(realtime, { projects: { primary: { publishedTables: ["public.notes"] }, secondary: null }, inStep: false });
  });

  test("a switch never publishes while an object is not carried, and a backup never deletes the standby's own objects", async () => {
    // primary is active (the test before failed back).
    const app = createSpillwayClient({ projects });
    assert.equal((await app.storage.from("avatars").upload("keep.png", new Blob(["only-copy"]))).error, null);
    storage.secondary.refused.add("avatars/keep.png");
    const refused = await call(t, "POST", "/force-switch", { to: "secondary" });
    storage.secondary.refused.clear();
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.match(refused.body.error.message, /avatars\/keep\.png/);
    const [state] = await pair.primary.admin`select active, fenced from spillway.state where id`;
    assert.deepEqual({ ...state }, { active: "primary", fenced: false });

    assert.equal((await call(t, "POST", "/force-switch", { to: "secondary" })).status, 200);
    assert.equal(storage.secondary.bytes.get("avatars/keep.png")?.toString(), "only-copy");
    // An object the old active holds of its own (uploaded there while it was active, as
    // before a failover) is kept by the backups the other way, and /verify tells it.
    await pair.primary.admin`alter table storage.objects disable trigger spillway_storage_fence`;
    const own = createClient(projects.primary.url, SERVICE.primary).storage;
    assert.equal((await own.from("avatars").upload("own.png", new Blob(["own"]))).error, null);
    await pair.primary.admin`alter table storage.objects enable trigger spillway_storage_fence`;
    await forceBackup(t, "auto");
    assert.ok((await names("primary")).includes("own.png"), "the old active's own upload was deleted");
    assert.equal((await call(t, "POST", "/verify")).body.verify.storage.equal, false);
    // An object carried and then deleted on the active is still deleted on the standby.
    assert.equal((await app.storage.from("avatars").remove(["keep.png"])).error, null);
    await forceBackup(t, "auto");
    assert.equal((await names("primary")).includes("keep.png"), false);
    await pair.primary.admin`alter table storage.objects disable trigger spillway_storage_fence`;
    assert.equal((await own.from("avatars").remove(["own.png"])).error, null);
    await pair.primary.admin`alter table storage.objects enable trigger spillway_storage_fence`;

    assert.equal((await app.from("notes").insert({ id: "after-storage-switch" })).error, null);
    await forceBackup(t, "auto");
    assert.deepEqual(await names("secondary"), await names("primary"));
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });

  test("/verify compares the objects from the databases when the Storage API variables are unset", async () => {
    const bare = await testApp(pair);
    try {
      // secondary is active (the test before switched to it).
      const admin = createClient(projects.secondary.url, SERVICE.secondary).storage;
      assert.equal((await admin.from("avatars").upload("only-on-active.png", new Blob(["x"]))).error, null);
      const v = (await call(bare, "POST", "/verify")).body.verify;
      assert.equal(v.ok, false, JSON.stringify(v));
      assert.equal(v.storage.equal, false);
      await forceBackup(t, "auto");
      assert.equal((await call(bare, "POST", "/verify")).body.verify.ok, true);
    } finally {
      await bare.close();
    }
  });

  test("a switch is refused while the active's Storage cannot be fenced (no TRIGGER on storage.objects), with an error event", async () => {
    // secondary is active.
    await pair.secondary.admin.unsafe("drop trigger spillway_storage_fence on storage.objects");
    await pair.secondary.admin.unsafe("revoke trigger on storage.objects from postgres");
    try {
      const r = await call(t, "POST", "/force-switch", { to: "primary" });
      assert.equal(r.status, 409, JSON.stringify(r.body));
      assert.equal(r.body.error.code, "STORAGE_NOT_FENCED");
      const event = t.sunk.filter((e) => e.kind === "switch.refused").at(-1);
      assert.equal(event?.level, "error");
      assert.match(event?.message ?? "", /TRIGGER on storage\.objects/);
    } finally {
      await pair.secondary.admin.unsafe("grant trigger on storage.objects to postgres");
    }
    assert.equal((await call(t, "POST", "/force-switch", { to: "primary" })).status, 200);
    const app = createSpillwayClient({ projects });
    assert.equal((await app.from("notes").insert({ id: "after-unfenced-refusal" })).error, null);
    await forceBackup(t, "auto");
    assert.deepEqual(await names("secondary"), await names("primary"));
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });

  test("an object's owner and user metadata are carried, and /verify compares them", async () => {
    // primary is active.
    const admin = createClient(projects.primary.url, SERVICE.primary).storage;
    assert.equal((await admin.from("avatars").upload("owned.png", new Blob(["mine"]))).error, null);
    // What Storage writes for an upload made with a user's token: the JWT's sub.
    const sub = "11111111-1111-1111-1111-111111111111";
    await pair.primary
      .admin`update storage.objects set owner = ${sub}, owner_id = ${sub}, user_metadata = '{"k":"v"}' where name = 'owned.png'`;
    assert.equal((await call(t, "POST", "/verify")).body.verify.storage.equal, false);
    await forceBackup(t, "auto");
    const read = (on: Name) =>
      pair[on].admin`select owner::text, owner_id, user_metadata::text from storage.objects where name = 'owned.png'`.then((r) => ({
        ...r[0],
      }));
    assert.deepEqual(await read("secondary"), { owner: sub, owner_id: sub, user_metadata: '{"k": "v"}' });
    assert.deepEqual(await read("secondary"), await read("primary"));
    assert.equal((await call(t, "POST", "/verify")).body.verify.ok, true);
    const app = createSpillwayClient({ projects });
    assert.equal((await app.from("notes").insert({ id: "after-owner-carried" })).error, null);
    await forceBackup(t, "auto");
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });

  test("after a switch the drop-in client's public and signed URLs name the new active", async () => {
    assert.equal((await call(t, "POST", "/force-switch", { to: "secondary" })).status, 200);
    const app = createSpillwayClient({ projects });
    assert.equal((await app.storage.from("avatars").upload("fresh.png", new Blob(["fresh"]))).error, null);
    const { publicUrl } = app.storage.from("avatars").getPublicUrl("fresh.png").data;
    assert.ok(publicUrl.startsWith(projects.secondary.url), publicUrl);
    const signed = await app.storage.from("avatars").createSignedUrl("fresh.png", 60);
    assert.ok(signed.data?.signedUrl.startsWith(projects.secondary.url) ?? signed.error, JSON.stringify(signed));
    assert.equal((await app.from("notes").insert({ id: "after-urls" })).error, null);
    await forceBackup(t, "auto");
    assert.deepEqual(await names("secondary"), await names("primary"));
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
  });
});
