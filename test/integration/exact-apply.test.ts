// An incremental run leaves the standby holding exactly the active's rows: rows without a
// key are found by their stored values (for types without `=`, or whose `=` is not
// identity), a transaction's changes are written in the active's order under a unique
// constraint whatever plan the standby picks, and a transaction larger than what the
// apply holds at once comes through whole.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { readCatalog } from "../../functions/backup/catalog.ts";
import { forceBackup, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

const SCHEMA = `
create extension if not exists citext;
create table public.ledger (who citext, amount numeric, note text, flag boolean, code character(4));
create table public.docs (body json, spot point, page xml, tags jsonb);
create table public.board (id int primary key, pos int not null unique, title text);
create table public.readings (id bigint primary key, v int not null, station text);
create table public.profiles (id int primary key, handle text not null unique, active boolean, prefs jsonb, seen timestamptz, blob bytea);
create table public.posts (id int primary key, slug text not null, published boolean, meta jsonb, deleted_at timestamptz);
create unique index posts_live_slug on public.posts (slug) where deleted_at is null;
create table public.members (id int primary key, email text not null, verified boolean, joined timestamptz);
create unique index members_email on public.members (lower(email));
create table public.samples (at timestamptz primary key, label text not null unique, v int);
create table public.tags (id int primary key, name text, color text);
create function public.tag_code(public.tags) returns text language sql immutable as 'select $1.name';
create unique index tags_code on public.tags (public.tag_code(tags));
`;

// A statement moving every row of `table` one place along its unique `column` to `next`,
// one row at a time in `order`, each into the value the row before gave up.
function shiftDown(table: string, column: string, order: string, next: string): string {
  return `do $$
    declare r record;
    begin
      for r in select ctid as at from public.${table} ${order} loop
        update public.${table} set ${column} = ${next} where ctid = r.at;
      end loop;
    end $$`;
}

describe("exact apply", () => {
  let pair: TestPair;
  let t: TestApp;
  before(async () => {
    pair = await startTestPair();
    await applyToBoth(pair, SCHEMA);
    const a = pair.primary.admin;
    await a`insert into public.ledger values ('Ann', 1.0, 'x', true, 'ab'), ('ann', 1.00, 'x', true, 'ab'), ('ANN', 1, 'x', true, 'ab'),
      ('dup', 2, 'same', false, 'cd'), ('dup', 2, 'same', false, 'cd')`;
    await a`insert into public.docs values ('{"a": 1}', '(1,2)', '<a/>', '{"k": 1.0}'), ('{"a":1}', '(1,2)', '<a/>', '{"k": 1.00}'),
      ('[1]', '(0,0)', '<b/>', null), ('[1]', '(0,0)', '<b/>', null)`;
    await a`insert into public.board values (1, 1, 'first')`;
    await a`insert into public.profiles values (1, 'h1', true, '{"theme": "dark"}', '2026-01-02 03:04:05.123456+00', '\\x0102')`;
    await a`insert into public.posts values (1, 's1', true, '{"tags": ["a"]}', null)`;
    await a`insert into public.members values (1, 'M1@example.com', true, '2026-01-02 03:04:05.000001+00')`;
    await a`insert into public.samples values ('2026-01-02 03:04:05.123456+00', 'l1', 1)`;
    t = await testApp(pair);
    assert.equal((await forceBackup(t, "full")).kind, "full");
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  async function sameRowsAndAppWrites(write: string) {
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
    assert.equal((await pair.primary.admin.unsafe(write)).count, 1, "the app keeps writing on the active");
  }

  test("rows without a key are matched by their exact stored values; of identical rows, one is changed", async () => {
    const a = pair.primary.admin;
    // 1.00 is `=` to 1.0 and 1, 'ann' to 'Ann' (citext): only the row holding it changes.
    await a`update public.ledger set note = 'changed' where amount::text = '1.00'`;
    await a`delete from public.ledger where who::text = 'ANN'`;
    await a`update public.ledger set note = 'one of two' where ctid = (select ctid from public.ledger where who::text = 'dup' limit 1)`;
    // json, point and xml have no `=`.
    await a`delete from public.docs where body::text = '{"a":1}'`;
    await a`update public.docs set spot = '(3,4)' where ctid = (select ctid from public.docs where page::text = '<b/>' limit 1)`;
    const run = await forceBackup(t, "incremental");
    assert.equal(run.rows, 5);
    await sameRowsAndAppWrites(`insert into public.docs values ('{}', '(5,5)', '<c/>', '{}')`);
  });

  test("a transaction's changes are applied in the active's order under a unique constraint, whatever the standby's plan", async () => {
    const a = pair.primary.admin;
    // The board grew from the one row of the full copy: the standby's statistics still say one.
    await a`insert into public.board select g, g, 'card ' || g from generate_series(2, 41) g`;
    await forceBackup(t, "incremental");
    // Every card moves down one place, in the only order the unique positions allow.
    await a.unsafe(`do $$
      declare r record;
      begin
        for r in select id from public.board order by pos desc loop
          update public.board set pos = pos + 1 where id = r.id;
        end loop;
      end $$`);
    const run = await forceBackup(t, "incremental");
    assert.equal(run.rows, 41);
    await sameRowsAndAppWrites(`insert into public.board values (42, 1, 'new first')`);
  });

  test("a unique index's columns are those its key, expressions and predicate read (all when it reads the whole row)", async () => {
    const unique = new Map((await readCatalog(pair.secondary.admin, ["public"])).tables.map((x) => [x.name, [...x.uniqueColumns].sort()]));
    assert.deepEqual(unique.get("board"), ["pos"]);
    assert.deepEqual(unique.get("posts"), ["deleted_at", "slug"]);
    assert.deepEqual(unique.get("members"), ["email"]);
    assert.deepEqual(unique.get("tags"), ["color", "id", "name"]);
    assert.deepEqual(unique.get("readings"), []);
  });

  test("rows written one at a time keep every value as the active holds it, whatever its type and however the table is unique", async () => {
    const a = pair.primary.admin;
    // The tables grew from the one row of the full copy: the standby's statistics still say one.
    await a`insert into public.profiles select g, 'h' || g, g % 2 = 0, pg_catalog.jsonb_build_object('n', g, 'on', g % 3 = 0),
      '2026-01-02 03:04:05.123456+00'::timestamptz + g * interval '1.000001 s', pg_catalog.decode(pg_catalog.lpad(g::text, 4, '0'), 'hex')
      from generate_series(2, 30) g`;
    // Deleted posts keep slugs a live post holds: the partial index does not look at them.
    await a`insert into public.posts select g, 's' || (g % 31), g % 2 = 0, pg_catalog.jsonb_build_object('v', g * 1.5),
      case when g > 30 then '2026-02-03 04:05:06.654321+00'::timestamptz end from generate_series(2, 40) g`;
    await a`insert into public.members select g, 'M' || g || '@example.com', g % 2 = 1, '2026-01-02 03:04:05.000001+00'::timestamptz + g * interval '1 microsecond'
      from generate_series(2, 30) g`;
    await a`insert into public.samples select '2026-01-02 03:04:05.123456+00'::timestamptz + g * interval '1.000001 s', 'l' || g, g from generate_series(2, 30) g`;
    await forceBackup(t, "incremental");
    await a.begin(async (tx) => {
      // Other columns first (each row keeps its unique values), then the unique ones, one
      // row at a time in the only order the unique values allow.
      await tx`update public.profiles set active = not active, prefs = prefs || '{"seen": true}', seen = seen + interval '1 microsecond', blob = blob || '\\xff'::bytea`;
      await tx.unsafe(shiftDown("profiles", "handle", "order by id desc", "'h' || (id + 1)"));
      await tx`update public.posts set published = not published, meta = meta || '{"edited": "2026-03-04T05:06:07.123456Z"}'`;
      await tx.unsafe(shiftDown("posts", "slug", "where deleted_at is null order by id desc", "'s' || (id + 1)"));
      await tx`update public.members set verified = not verified, joined = joined + interval '1 microsecond'`;
      // Lower-case takes what the next row's mixed case still holds under lower(email).
      await tx.unsafe(shiftDown("members", "email", "order by id desc", "'m' || (id + 1) || '@example.com'"));
      await tx`update public.samples set v = v * 10`;
      await tx.unsafe(shiftDown("samples", "label", "order by at desc", "'l' || (v / 10 + 1)"));
    });
    const run = await forceBackup(t, "incremental");
    // Each table's rows updated twice (the deleted posts once).
    assert.equal(run.rows, 30 * 2 + (40 + 30) + 30 * 2 + 30 * 2);
    for (const table of ["profiles", "posts", "members", "samples"]) {
      assert.deepEqual(
        await pair.secondary.admin.unsafe(`select t::text from public.${table} t order by 1`),
        await a.unsafe(`select t::text from public.${table} t order by 1`),
        table,
      );
    }
    await sameRowsAndAppWrites(`insert into public.profiles values (0, 'h1', true, '{}', now(), '\\x00')`);
  });

  test("a transaction larger than the apply holds at once comes through whole", async () => {
    const a = pair.primary.admin;
    await a.begin(async (tx) => {
      await tx`insert into public.readings select g, g, 's' || (g % 7) from generate_series(1, 9000) g`;
      await tx`update public.readings set v = v * 2`;
      await tx`delete from public.readings where id % 3 = 0`;
      await tx`update public.board set pos = pos + 100`;
      await tx`insert into public.ledger select 'bulk', g from generate_series(1, 50) g`;
    });
    const run = await forceBackup(t, "incremental");
    // The card the app added after the last run, then the one transaction: 9 000 rows
    // inserted, updated and a third deleted, the board's 42 cards, 50 ledger rows.
    assert.equal(run.rows, 1 + 9000 + 9000 + 3000 + 42 + 50);
    assert.equal(run.details.transactions, 2);
    await sameRowsAndAppWrites("insert into public.readings values (0, 0, 'after')");
  });
});
