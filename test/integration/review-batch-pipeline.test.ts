// Review of the pipelined batch writer: statements sent without waiting, groups of at most
// 2 000 rows. One batch with rows updated in several groups, a unique value traded, a
// GENERATED ALWAYS key changed, a table without a key and a truncate; then a statement that
// fails late in the batch: nothing of it is kept, the position stays, the process lives on.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

const SCHEMA = `
create table public.items (id int generated always as identity primary key, code text not null unique, n int not null);
create table public.log (msg text, v int);
`;

describe("review: pipelined apply", () => {
  let pair: TestPair;
  let t: TestApp;
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  before(async () => {
    process.on("unhandledRejection", onRejection);
    pair = await startTestPair();
    await applyToBoth(pair, SCHEMA);
    t = await testApp(pair);
  });
  after(async () => {
    process.off("unhandledRejection", onRejection);
    await t?.close();
    await pair?.destroy();
  });

  async function backup(mode: string) {
    const res = await t.request("/spillway/force-backup", { method: "POST", body: JSON.stringify({ mode }) });
    return { status: res.status, body: JSON.parse(await res.text()) };
  }

  test("a late failure keeps nothing of the batch; the next run applies it all in order", async () => {
    const a = pair.primary.admin;
    await a`insert into public.items (code, n) select 'c' || g, 0 from generate_series(1, 3000) g`;
    assert.equal((await backup("full")).body.run.kind, "full");

    await a`update public.items set n = n + 1`;
    await a`update public.items set n = n + 10 where id % 2 = 0`;
    await a.begin(async (tx) => {
      await tx`update public.items set code = 'tmp' where id = 1`;
      await tx`update public.items set code = 'c1' where id = 2`;
      await tx`update public.items set code = 'c2' where id = 1`;
    });
    await a`update public.items set id = default where id = 5`;
    await a`insert into public.log (msg, v) select 'm' || g, g from generate_series(1, 2500) g`;
    await a`update public.log set v = -1 where msg = 'm7'`;
    await a`delete from public.log where msg = 'm8'`;
    await a`truncate public.log`;
    await a`insert into public.log (msg, v) select 'after ' || g, g from generate_series(1, 10) g`;
    await a`update public.items set n = n + 100`;
    await a`insert into public.items (code, n) values ('late', 1)`;

    // The standby diverged: the last insert will meet a unique value it already holds.
    await pair.secondary.admin`insert into public.items (id, code, n) overriding system value values (999999, 'late', 0)`;
    const before = await fingerprint(pair.secondary.admin);
    const [position] = await pair.secondary.admin`select applied_lsn::text from spillway.replica`;

    const failed = await backup("incremental");
    assert.notEqual(failed.status, 200, JSON.stringify(failed.body).slice(0, 300));
    assert.match(JSON.stringify(failed.body), /unique|duplicate/i);
    assert.deepEqual(await fingerprint(pair.secondary.admin), before, "nothing of the failed batch was kept");
    const [still] = await pair.secondary.admin`select applied_lsn::text from spillway.replica`;
    assert.equal(still!.applied_lsn, position!.applied_lsn, "the position did not move");

    await pair.secondary.admin`delete from public.items where id = 999999`;
    const ok = await backup("incremental");
    assert.equal(ok.status, 200, JSON.stringify(ok.body).slice(0, 300));
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(a));
    const [identity] = await pair.secondary
      .admin`select attidentity as kind from pg_attribute where attrelid = 'public.items'::regclass and attname = 'id'`;
    assert.equal(identity!.kind, "a");
    assert.deepEqual(rejections, []);
    await a`insert into public.items (code, n) values ('still writable', 1)`;
  });
});
