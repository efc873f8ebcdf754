// The fence during and after a switch, as apps meet it: writes through the client held
// until the new active is published, REPEATABLE READ writers, writes after the target's
// publish failed half-way, replica-mode sessions, tables created later, and partitions in
// other schemas. Data API calls go through the PostgREST STAND-IN (test/support/postgrest.ts).
//
// Mutation it catches (run on purpose, then reverted): the fence guard reading the state row
// without `for share` (supabase/migrations/20261129000500_spillway_fence_gate.sql) fails "a
// REPEATABLE READ transaction whose snapshot predates the fence cannot commit a write after
// it" and "no write fails, none is missing, and after one more backup the projects are equal".

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { createSpillwayClient, getActiveClient } from "../../client/index.ts";
import { type SwitchStep, switchOver } from "../../functions/switchover.ts";
import { type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";

// Each project's JWT secret, which its Data API stand-in verifies tokens with.
const JWT_SECRETS = { primary: "the-primary-projects-jwt-secret-0123456789", secondary: "the-secondary-projects-jwt-secret-0123456789" };

let pair: TestPair;
let t: TestApp;
let apis: Record<"primary" | "secondary", Awaited<ReturnType<typeof startDataApi>>>;

const SCHEMA = `
create table public.notes (id uuid primary key default gen_random_uuid(), body text not null, writer integer not null default 0);
grant select, insert on public.notes to anon;
create table public.readings (at date not null, value integer not null) partition by range (at);
create schema archive;
create table archive.readings_2025 partition of public.readings for values from ('2025-01-01') to ('2026-01-01');
create table public.readings_2026 partition of public.readings for values from ('2026-01-01') to ('2027-01-01');
`;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, SCHEMA);
  await pair.primary.admin`insert into public.readings select date '2025-06-01' + (i % 400), i from generate_series(1, 300) i`;
  t = await testApp(pair);
  apis = {
    primary: await startDataApi(pair.urls.primary, JWT_SECRETS.primary),
    secondary: await startDataApi(pair.urls.secondary, JWT_SECRETS.secondary),
  };
  await post("/force-backup", { mode: "full" });
});
after(async () => {
  await apis?.primary.close();
  await apis?.secondary.close();
  await t?.close();
  await pair?.destroy();
});

async function post(path: string, body: unknown = {}): Promise<any> {
  const res = await t.request(`/spillway${path}`, { method: "POST", body: JSON.stringify(body) });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

function projects() {
  return {
    primary: { url: apis.primary.url, anonKey: apis.primary.anonKey },
    secondary: { url: apis.secondary.url, anonKey: apis.secondary.anonKey },
  };
}

async function state(name: "primary" | "secondary") {
  const [row] = await pair[name].admin`
    select s.active, s.epoch::int as epoch, s.fenced, a.active as public_active, a.epoch::int as public_epoch
    from spillway.state s cross join public.spillway_active a`;
  return { ...row };
}

async function insertDirect(name: "primary" | "secondary", statement: string): Promise<{ code?: string; message?: string } | null> {
  const sql = postgres(pair.urls[name], { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(statement);
    return null;
  } catch (e) {
    return e as { code?: string; message?: string };
  } finally {
    await sql.end();
  }
}

/** A switch run in this process that stops after `pauseAt` until `release()`. */
function pausedSwitch(pauseAt: SwitchStep) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const paused = new Promise<void>((r) => (reached = r));
  const done = switchOver(
    {
      projects: t.projects,
      events: t.events,
      hooks: {
        async step(name) {
          if (name !== pauseAt) return;
          reached();
          await released;
        },
      },
    },
    { force: false },
  );
  return { paused, release, done };
}

describe("while a switch is under way", () => {
  test("the fence says the active is being chosen; a client write is held and lands on the new active once it is published", async () => {
    const held = await getActiveClient({ projects: projects(), cacheTtlMs: 60_000 });
    const impatient = await getActiveClient({ projects: projects(), cacheTtlMs: 60_000, switchWaitMs: 300 });
    const dropIn = createSpillwayClient({ projects: projects(), cacheTtlMs: 60_000 });
    assert.equal((await dropIn.from("notes").insert({ body: "before" })).error, null);

    const sw = pausedSwitch("caught-up");
    await sw.paused;
    try {
      const direct = await insertDirect("primary", "insert into public.notes (body) values ('direct')");
      assert.equal(direct?.code, "SPWFN");
      assert.equal(direct?.message, "spillway: project primary is fenced; the active project is being chosen (epoch unknown)");
      // Nothing names the target before it is published: it is still the fenced standby of epoch 1.
      assert.deepEqual(await state("secondary"), { active: "primary", epoch: 1, fenced: true, public_active: "primary", public_epoch: 1 });

      let settled = false;
      const write = held
        .from("notes")
        .insert({ body: "held" })
        .then((r) => {
          settled = true;
          return r;
        });
      const dropInWrite = dropIn.from("notes").insert({ body: "held-drop-in" });
      const refused = await impatient.from("notes").insert({ body: "impatient" });
      assert.equal(refused.error?.code, "SPWFN", "a switch longer than switchWaitMs surfaces the fence error");
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(settled, false, "the write waits for the switch");
      sw.release();
      assert.equal((await write).error, null);
      assert.equal((await dropInWrite).error, null);
    } finally {
      sw.release();
    }
    const result = await sw.done;
    assert.deepEqual([result.to, result.epoch], ["secondary", 2]);
    const bodies = async (name: "primary" | "secondary") =>
      (await pair[name].admin`select body from public.notes order by body`).map((r) => r.body);
    assert.deepEqual(await bodies("secondary"), ["before", "held", "held-drop-in"]);
    assert.deepEqual(await bodies("primary"), ["before"]);
    assert.deepEqual(await state("primary"), { active: "secondary", epoch: 2, fenced: true, public_active: "secondary", public_epoch: 2 });
  });
});

describe("every write path of the fenced project", () => {
  test("a session in replica mode is refused", async () => {
    const e = await insertDirect("primary", "set session_replication_role = replica; insert into public.notes (body) values ('restore')");
    assert.equal(e?.code, "SPWFN");
  });

  test("a table created after the switch is fenced by the next tick", async () => {
    await applyToBoth(pair, "create table public.later (id bigint generated by default as identity primary key, body text)");
    assert.equal((await t.request("/spillway/tick", { method: "POST" })).status, 200);
    const e = await insertDirect("primary", "insert into public.later (body) values ('late')");
    assert.equal(e?.code, "SPWFN");
    assert.equal(await insertDirect("secondary", "insert into public.later (body) values ('on the active')"), null);
  });

  test("a table created after the switch is fenced at once where the event trigger is installed", async () => {
    // STAND-IN for Supabase's supautils, which lets the postgres role create event triggers:
    // the superuser installs it here.
    const [row] = await pair.primary.admin`select spillway.install_fence_event_trigger() as ok`;
    assert.equal(row!.ok, true);
    await applyToBoth(pair, "create table public.sooner (id bigint generated always as identity primary key, body text)");
    const e = await insertDirect("primary", "insert into public.sooner (body) values ('late')");
    assert.equal(e?.code, "SPWFN");
  });

  test("a leaf partition in a schema that is not replicated is copied and fenced", async () => {
    const count = async (name: "primary" | "secondary") =>
      Number((await pair[name].admin`select count(*)::int as n from archive.readings_2025`)[0]!.n);
    assert.ok((await count("primary")) > 0);
    assert.equal(await count("secondary"), await count("primary"));
    const e = await insertDirect("primary", "insert into archive.readings_2025 values ('2025-02-02', 1)");
    assert.equal(e?.code, "SPWFN");
  });
});

describe("writers that passed the fence check", () => {
  test("a REPEATABLE READ transaction whose snapshot predates the fence cannot commit a write after it", async () => {
    const app = postgres(pair.urls.secondary, { max: 1, onnotice: () => {} });
    let release!: () => void;
    const wait = new Promise<void>((r) => (release = r));
    let snapshotTaken!: () => void;
    const taken = new Promise<void>((r) => (snapshotTaken = r));
    const tx = app
      .begin("isolation level repeatable read", async (sql) => {
        await sql`select count(*) from public.notes`;
        snapshotTaken();
        await wait;
        await sql`insert into public.notes (body) values ('slipped')`;
      })
      .then(
        () => null,
        (e) => e as { code?: string },
      );
    try {
      await taken;
      const r = await post("/force-switch", { to: "primary" });
      assert.equal(r.switch.to, "primary");
    } finally {
      release();
    }
    const outcome = await tx;
    await app.end();
    const onNewActive = await pair.primary.admin`select 1 from public.notes where body = 'slipped'`;
    // The guard's share lock on the state row, changed by the fence since the snapshot, fails it.
    assert.equal(outcome?.code, "40001", `the write after the fence was not refused: ${JSON.stringify(outcome)}`);
    assert.equal(onNewActive.length, 0);
    assert.equal((await pair.secondary.admin`select 1 from public.notes where body = 'slipped'`).length, 0);
  });
});

describe("a failure after the target was published", () => {
  test("completes the switch: the old active stays fenced and names the new one", async () => {
    const result = await switchOver(
      {
        projects: t.projects,
        events: t.events,
        hooks: {
          step(name) {
            if (name === "published-target") throw new Error("injected: the old active's publish fails");
          },
        },
      },
      { force: false },
    );
    assert.deepEqual([result.to, result.epoch], ["secondary", 4]);
    assert.deepEqual(await state("primary"), { active: "secondary", epoch: 4, fenced: true, public_active: "secondary", public_epoch: 4 });
    assert.deepEqual(await state("secondary"), {
      active: "secondary",
      epoch: 4,
      fenced: false,
      public_active: "secondary",
      public_epoch: 4,
    });
    const e = await insertDirect("primary", "insert into public.notes (body) values ('two actives?')");
    assert.equal(e?.message, "spillway: project primary is fenced; the active project is secondary (epoch 4)");
  });
});

describe("app writers across a switch and a failback", () => {
  test("no write fails, none is missing, and after one more backup the projects are equal", async () => {
    const client = createSpillwayClient({ projects: projects(), cacheTtlMs: 200 });
    const acknowledged: string[] = [];
    const failures: string[] = [];
    let stopped = false;
    const writer = async (n: number) => {
      for (let i = 0; !stopped; i++) {
        const { data, error } = await client
          .from("notes")
          .insert({ body: `w${n}-${i}`, writer: n })
          .select("id");
        if (error) failures.push(`${error.code}: ${error.message}`);
        else acknowledged.push((data as { id: string }[])[0]!.id);
      }
    };
    const running = [0, 1, 2, 3].map(writer);
    try {
      for (const to of ["primary", "secondary"]) {
        await new Promise((r) => setTimeout(r, 400));
        assert.equal((await post("/force-switch", { to })).switch.to, to);
      }
      await new Promise((r) => setTimeout(r, 400));
    } finally {
      stopped = true;
      await Promise.all(running);
    }
    assert.deepEqual(failures, []);
    assert.ok(acknowledged.length > 50, `only ${acknowledged.length} writes`);
    const onActive = new Set((await pair.secondary.admin`select id::text from public.notes`).map((r) => r.id as string));
    assert.deepEqual(
      acknowledged.filter((id) => !onActive.has(id)),
      [],
    );
    await post("/force-backup", { mode: "auto" });
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin));
    assert.equal((await client.from("notes").insert({ body: "after" })).error, null);
  });
});
