// Auth continuity, with a STAND-IN for Supabase Auth (test/support/gotrue.ts): GoTrue cannot
// run here, so its tables and writes are emulated as its own role.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import postgres from "postgres";
import { switchOver } from "../../functions/switchover.ts";
import { call, expireLease, stageUntilPublished, type TestApp, testApp } from "../support/app.ts";
import { fingerprint } from "../support/compare.ts";
import { APP_SCHEMA, authFingerprint, deleteUser, enrolFactor, installAuth, signIn, signUp, updateUser } from "../support/gotrue.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { run } from "../support/process.ts";

async function setUp(): Promise<{ pair: TestPair; t: TestApp }> {
  const pair = await startTestPair();
  await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
  await applyToBoth(pair, APP_SCHEMA);
  return { pair, t: await testApp(pair) };
}

// The app's writes, on the project it finds active (highest epoch), as `postgres`.
async function addNote(pair: TestPair, owner: string, body: string): Promise<void> {
  const urls = [pair.urls.primary, pair.urls.secondary];
  const states = await Promise.all(
    urls.map(async (url) => {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        const [row] = await sql`select active, epoch from public.spillway_active`;
        return row!;
      } finally {
        await sql.end();
      }
    }),
  );
  const active = states.sort((a, b) => Number(b.epoch) - Number(a.epoch))[0]!.active as "primary" | "secondary";
  const sql = postgres(pair.urls[active], { max: 1, onnotice: () => {} });
  try {
    await sql.begin("isolation level repeatable read", (tx) => tx`insert into public.notes (owner, body) values (${owner}, ${body})`);
  } finally {
    await sql.end();
  }
}

async function assertSame(pair: TestPair, message: string): Promise<void> {
  assert.deepEqual(
    await authFingerprint(pair.secondary.admin),
    await authFingerprint(pair.primary.admin),
    `${message}: Auth's users differ`,
  );
  assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin), `${message}: the app's tables differ`);
}

// Rows of the app that point at a user its project does not have, and users with more than one profile.
async function orphans(sql: postgres.Sql): Promise<{ profiles: number; notes: number; usersWithoutProfile: number }> {
  const [row] = await sql`
    select (select count(*)::int from public.profiles p where not exists (select 1 from auth.users u where u.id = p.id)) as profiles,
      (select count(*)::int from public.notes n where not exists (select 1 from auth.users u where u.id = n.owner)) as notes,
      (select count(*)::int from auth.users u where not exists (select 1 from public.profiles p where p.id = u.id)) as "usersWithoutProfile"`;
  return row as never;
}

describe("a switched app keeps its users", () => {
  let pair: TestPair;
  let t: TestApp;
  const ids: Record<string, string> = {};
  before(async () => {
    ({ pair, t } = await setUp());
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  test("a full backup carries users, identities and factors; app triggers stay quiet; sessions stay behind", async () => {
    for (const name of ["alice", "bob", "carol"])
      ids[name] = await signUp(pair.primary, `${name}@example.com`, `pw-${name}`, { username: name });
    await enrolFactor(pair.primary, ids.alice!);
    assert.equal(await signIn(pair.primary, "alice@example.com", "pw-alice"), ids.alice);
    await addNote(pair, ids.carol!, "carol's first note");

    const r = await call(t, "POST", "/force-backup", { mode: "full" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await assertSame(pair, "after the full backup");
    // Each user has exactly its one profile on the standby: handle_new_user did not fire there.
    assert.deepEqual(await orphans(pair.secondary.admin), { profiles: 0, notes: 0, usersWithoutProfile: 0 });
    const [standby] = await pair.secondary
      .admin`select (select count(*)::int from public.profiles) as profiles, (select count(*)::int from auth.sessions) as sessions,
        (select count(*)::int from auth.refresh_tokens) as tokens, (select count(*)::int from auth.mfa_amr_claims) as claims`;
    assert.deepEqual(standby, { profiles: 3, sessions: 0, tokens: 0, claims: 0 });

    const status = await call(t, "GET", "/status");
    assert.equal(status.body.projects.primary.users, 3);
    assert.equal(status.body.projects.secondary.users, 3);
  });

  test("a sign-in the standby does not have yet shows as standby lag", async () => {
    assert.equal((await call(t, "POST", "/force-backup", { mode: "incremental" })).status, 200);
    assert.equal((await call(t, "GET", "/status")).body.standbyLagSeconds, 0);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await signIn(pair.primary, "bob@example.com", "pw-bob"), ids.bob);
    let lag = 0;
    for (let i = 0; i < 30 && lag === 0; i++) {
      await new Promise((r) => setTimeout(r, 200));
      lag = (await call(t, "GET", "/status")).body.standbyLagSeconds;
    }
    assert.ok(lag >= 1, `lag ${lag}`);
  });

  test("an incremental backup carries a new user, changed metadata and password, and a deletion", async () => {
    ids.dave = await signUp(pair.primary, "dave@example.com", "pw-dave", { username: "dave" });
    await updateUser(pair.primary, ids.bob!, { username: "bobby", theme: "dark" }, "pw-bob-2");
    await deleteUser(pair.primary, ids.carol!);
    assert.equal(await signIn(pair.primary, "dave@example.com", "pw-dave"), ids.dave);

    const r = await call(t, "POST", "/force-backup", { mode: "incremental" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.run.kind, "incremental");
    await assertSame(pair, "after the incremental backup");
    assert.deepEqual(await orphans(pair.secondary.admin), { profiles: 0, notes: 0, usersWithoutProfile: 0 });
    // What the active captured is gone from it once streamed.
    const [log] = await pair.primary.admin`select count(*)::int as n from spillway.auth_changes`;
    assert.equal(log!.n, 0);
  });

  test("the switch carries the last changes: every user signs in on the new active with the same password and id", async () => {
    ids.erin = await signUp(pair.primary, "erin@example.com", "pw-erin", { username: "erin" });
    assert.equal(await signIn(pair.primary, "bob@example.com", "pw-bob-2"), ids.bob);
    await updateUser(pair.primary, ids.dave!, { username: "dave", plan: "pro" });
    await addNote(pair, ids.erin!, "erin's note");

    const r = await call(t, "POST", "/force-switch", { to: "secondary" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await assertSame(pair, "after the switch");

    assert.equal(await signIn(pair.secondary, "alice@example.com", "pw-alice"), ids.alice);
    assert.equal(await signIn(pair.secondary, "bob@example.com", "pw-bob-2"), ids.bob);
    assert.equal(await signIn(pair.secondary, "bob@example.com", "pw-bob"), null, "bob's old password");
    assert.equal(await signIn(pair.secondary, "dave@example.com", "pw-dave"), ids.dave);
    assert.equal(await signIn(pair.secondary, "erin@example.com", "pw-erin"), ids.erin);
    assert.equal(await signIn(pair.secondary, "carol@example.com", "pw-carol"), null, "carol was deleted");
    const [identities] = await pair.secondary
      .admin`select count(*)::int as n from auth.identities where user_id = any(${Object.values(ids)}::uuid[])`;
    assert.equal(identities!.n, 4);
    assert.deepEqual(await orphans(pair.secondary.admin), { profiles: 0, notes: 0, usersWithoutProfile: 0 });
  });

  test("the old active refuses a sign-up and a sign-in with the fence error; the app keeps signing users up on the new active", async () => {
    await assert.rejects(signUp(pair.primary, "late@example.com", "pw-late"), (e: { code?: string; message?: string }) => {
      assert.equal(e.code, "SPWFN");
      assert.match(e.message ?? "", /active project is secondary/);
      return true;
    });
    // A sign-in touches no app table: the fence on Auth's own tables refuses it.
    await assert.rejects(signIn(pair.primary, "alice@example.com", "pw-alice"), { code: "SPWFN" });
    ids.frank = await signUp(pair.secondary, "frank@example.com", "pw-frank", { username: "frank" });
    await addNote(pair, ids.frank, "frank's note");
    const [profile] = await pair.secondary.admin`select username from public.profiles where id = ${ids.frank}`;
    assert.equal(profile?.username, "frank");
  });

  test("backups the other way build on the switch: an incremental one carries the new active's sign-ups", async () => {
    const r = await call(t, "POST", "/force-backup", { mode: "incremental" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await assertSame(pair, "after the incremental backup to the old active");
    const [frank] = await pair.primary.admin`select count(*)::int as n from auth.users where id = ${ids.frank!}`;
    assert.equal(frank!.n, 1);
    // The sessions the old active issued while it was active are gone: a failback does not revive them.
    const [left] = await pair.primary.admin`
      select (select count(*)::int from auth.sessions) as sessions, (select count(*)::int from auth.refresh_tokens) as tokens,
        (select count(*)::int from auth.mfa_amr_claims) as claims`;
    assert.deepEqual(left, { sessions: 0, tokens: 0, claims: 0 });
  });

  test("a full backup the other way through the fdw link carries them back", async () => {
    assert.equal((await call(t, "PATCH", "/config", { strategy: "fdw" })).status, 200);
    try {
      const r = await call(t, "POST", "/force-backup", { mode: "full" });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await assertSame(pair, "after the fdw full backup");
      const same = await call(t, "POST", "/verify");
      assert.equal(same.body.verify.ok, true, JSON.stringify(same.body));
      assert.ok(same.body.verify.tables.some((x: { table: string }) => x.table === "auth.users"));
      // A user changed on the standby behind Spillway's back: verify names Auth's table.
      await pair.primary.admin.begin(async (tx) => {
        await tx`set local session_replication_role = replica`;
        await tx`update auth.users set raw_user_meta_data = '{"username": "mallory"}' where id = ${ids.alice!}`;
      });
      const differs = await call(t, "POST", "/verify");
      assert.equal(differs.body.verify.ok, false);
      assert.deepEqual(
        differs.body.verify.mismatches.map((m: string) => m.split(":")[0]),
        ["auth.users"],
      );
      await assert.rejects(
        signIn(pair.primary, "frank@example.com", "pw-frank"),
        { code: "SPWFN" },
        "the old active stays fenced for sign-ins",
      );
    } finally {
      await call(t, "PATCH", "/config", { strategy: "copy" });
    }
  });

  test("GoTrue upgraded on the active first: app backups go on, users are carried on the columns both have with a warning naming the column; Auth alone is refused where the standby could not hold them", async () => {
    // The active is the secondary since the switch; its GoTrue adds a column to users.
    await pair.secondary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter table auth.users add column nickname text`;
    });
    const dora = await signUp(pair.secondary, "dora@example.com", "pw-dora", { username: "dora" });
    await pair.secondary.admin`update auth.users set nickname = 'D' where id = ${dora}`;
    await addNote(pair, dora, "dora's first note");
    const shared = async (sql: postgres.Sql) =>
      (await sql`select id, email, encrypted_password, raw_user_meta_data from auth.users order by id`).map((r) => ({ ...r }));
    for (const mode of ["full", "incremental"]) {
      if (mode === "incremental") {
        const gus = await signUp(pair.secondary, "gus@example.com", "pw-gus", { username: "gus" });
        await pair.secondary.admin`update auth.users set nickname = 'G' where id = ${gus}`;
      }
      const r = await call(t, "POST", "/force-backup", { mode });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(await shared(pair.primary.admin), await shared(pair.secondary.admin), `users after the ${mode} backup`);
      assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin), `app rows after the ${mode} backup`);
    }
    const skew = t.sunk.filter((e) => e.kind === "backup.auth_skew");
    assert.ok(
      skew.some((e) => e.level === "warn" && e.message.includes("auth.users.nickname exists only on the active")),
      JSON.stringify(skew),
    );

    // The standby's GoTrue requires a column the active's lacks: users cannot be held there.
    await pair.primary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter table auth.users add column tenant text not null default 'one'`;
      await tx`alter table auth.users alter column tenant drop default`;
    });
    const hal = await signUp(pair.secondary, "hal@example.com", "pw-hal", { username: "hal" });
    await addNote(pair, hal, "hal's first note");
    const r = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const refused = t.sunk.filter((e) => e.kind === "backup.auth_refused");
    assert.ok(
      refused.some((e) => e.message.includes("auth.users.tenant is NOT NULL without a default on the standby")),
      JSON.stringify(refused),
    );
    assert.equal((await pair.primary.admin`select count(*)::int as n from auth.users where id = ${hal}`)[0]!.n, 0);
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin), "app rows with Auth refused");
    // The app keeps writing on the active, and the next backup carries it.
    await addNote(pair, dora, "dora's second note");
    assert.equal((await call(t, "POST", "/force-backup", { mode: "auto" })).status, 200);
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin), "app rows after the app wrote again");
  });

  test("a backup that carries the app but not Auth's users says so: in its answer's warning, in the run's details, and as /status health auth_not_carried", async () => {
    // Still the state above: the standby (primary) requires auth.users.tenant, the active (secondary) lacks it.
    const r = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.run.status, "succeeded");
    assert.match(r.body.warning, /Auth's users were not carried .*auth\.users\.tenant is NOT NULL without a default on the standby/);
    assert.ok(
      r.body.run.details.authNotCarried.some((m: string) => m.includes("auth.users.tenant")),
      JSON.stringify(r.body.run.details),
    );
    const health = (await call(t, "GET", "/status")).body.health;
    const reason = health.reasons.find((x: { code: string }) => x.code === "auth_not_carried");
    assert.ok(reason, JSON.stringify(health));
    assert.match(reason.message, /not Auth's users: .*auth\.users\.tenant.*Upgrade GoTrue on primary to match secondary/);
    assert.notEqual(health.state, "ok");
  });

  test("with Auth refused no switch goes ahead, forced or from a tick: 409 naming the difference and the project to migrate, nothing fenced, the active keeps writing; once both Auths match, a backup and the switch carry every user", async () => {
    // Still the state above: the standby (primary) requires auth.users.tenant, the active (secondary) lacks it.
    const [{ id: hal }] = (await pair.secondary.admin`select id from auth.users where email = 'hal@example.com'`) as unknown as [
      { id: string },
    ];
    const ida = await signUp(pair.secondary, "ida@example.com", "pw-ida", { username: "ida" });
    await addNote(pair, ida, "ida's note");
    assert.equal((await call(t, "POST", "/force-backup", { mode: "auto" })).status, 200);
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin), "app rows carried with Auth refused");
    assert.equal((await orphans(pair.primary.admin)).notes > 0, true, "the standby holds notes of users it lacks");

    const seen = t.sunk.length;
    const forced = await call(t, "POST", "/force-switch", { to: "primary", force: true });
    assert.equal(forced.status, 409, JSON.stringify(forced.body));
    assert.equal(forced.body.error.code, "TARGET_UNFIT");
    assert.match(forced.body.error.message, /auth\.users\.tenant is NOT NULL without a default on the standby and missing on the active/);
    assert.match(forced.body.error.message, /migrate secondary's Auth \(GoTrue\) so that it has auth\.users\.tenant as primary's does/);
    assert.deepEqual(
      t.sunk.slice(seen).map((e) => e.kind),
      ["switch.refused"],
      "refused before anything started or was fenced",
    );
    // A tick at the switch threshold is refused the same way.
    const { quotaBytes } = (await call(t, "GET", "/config")).body.settings;
    assert.equal((await call(t, "PATCH", "/config", { quotaBytes: { secondary: 1, primary: 1e12 }, confirm: true })).status, 200);
    try {
      const ticked = await call(t, "POST", "/tick");
      assert.equal(ticked.body.action, "switch", JSON.stringify(ticked.body));
      assert.match(
        ticked.body.error ?? "",
        /switch to primary refused: primary's Auth cannot hold secondary's users \(auth\.users\.tenant/,
      );
    } finally {
      assert.equal((await call(t, "PATCH", "/config", { quotaBytes })).status, 200);
    }
    // The active is neither fenced nor switched: the app and GoTrue keep writing there.
    assert.equal((await call(t, "GET", "/status")).body.active, "secondary");
    const joy = await signUp(pair.secondary, "joy@example.com", "pw-joy", { username: "joy" });
    await addNote(pair, joy, "joy's note");
    assert.equal(await signIn(pair.secondary, "ida@example.com", "pw-ida"), ida);

    // GoTrue migrated on both: the same Auth tables (the default is GoTrue's own, as it fills the column).
    await pair.secondary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter table auth.users add column tenant text not null default 'one'`;
    });
    await pair.primary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter table auth.users alter column tenant set default 'one'`;
      await tx`alter table auth.users add column nickname text`;
    });
    assert.equal((await call(t, "POST", "/force-backup", { mode: "auto" })).status, 200);
    const switched = await call(t, "POST", "/force-switch", { to: "primary" });
    assert.equal(switched.status, 200, JSON.stringify(switched.body));
    const users = async (sql: postgres.Sql) =>
      (await sql`select id, email, encrypted_password, raw_user_meta_data, nickname, tenant from auth.users order by id`).map((r) => ({
        ...r,
      }));
    assert.deepEqual(await users(pair.primary.admin), await users(pair.secondary.admin), "users after the switch");
    assert.deepEqual(
      await authFingerprint(pair.primary.admin, ["identities", "mfa_factors"]),
      await authFingerprint(pair.secondary.admin, ["identities", "mfa_factors"]),
    );
    assert.deepEqual(await orphans(pair.primary.admin), { profiles: 0, notes: 0, usersWithoutProfile: 0 });
    assert.deepEqual(await fingerprint(pair.primary.admin), await fingerprint(pair.secondary.admin), "app rows after the switch");
    for (const [email, id] of [
      ["hal@example.com", hal],
      ["ida@example.com", ida],
      ["joy@example.com", joy],
    ] as const)
      assert.equal(await signIn(pair.primary, email, `pw-${email.split("@")[0]}`), id, email);
    const kim = await signUp(pair.primary, "kim@example.com", "pw-kim", { username: "kim" });
    await addNote(pair, kim, "kim's note on the new active");
    const [note] = await pair.primary.admin`select count(*)::int as n from public.notes where owner = ${kim}`;
    assert.equal(note!.n, 1);
  });

  test("GoTrue migrated on the target while the switch catches up: behind the fence its copy of Auth falls out of step, and the switch is rolled back with the active unfenced", async () => {
    // The active is the primary since the switch above; the standby's GoTrue gains a required column just before the fence.
    const seen = t.sunk.length;
    await assert.rejects(
      switchOver(
        {
          projects: t.projects,
          events: t.events,
          hooks: {
            async step(name) {
              if (name !== "pre-caught-up") return;
              await pair.secondary.admin.begin(async (tx) => {
                await tx`set local role supabase_auth_admin`;
                await tx`alter table auth.users add column region text not null default 'eu'`;
                await tx`alter table auth.users alter column region drop default`;
              });
              await signUp(pair.primary, "lea@example.com", "pw-lea", { username: "lea" });
            },
          },
        },
        { to: "secondary", force: false },
      ),
      (e: { code?: string; status?: number; message?: string }) => {
        assert.equal(e.code, "TARGET_UNFIT");
        assert.equal(e.status, 409);
        assert.match(e.message ?? "", /its copy of primary's Auth fell out of step/);
        return true;
      },
    );
    const kinds = t.sunk.slice(seen).map((e) => e.kind);
    assert.ok(kinds.includes("switch.fenced") && kinds.includes("switch.failed"), kinds.join(", "));
    assert.equal((await call(t, "GET", "/status")).body.active, "primary");
    const lea = (await pair.secondary.admin`select count(*)::int as n from auth.users where email = 'lea@example.com'`)[0]!.n;
    assert.equal(lea, 0, "the standby never got lea, and is not the active");
    const max = await signUp(pair.primary, "max@example.com", "pw-max", { username: "max" });
    await addNote(pair, max, "max's note, after the rolled-back switch");

    // The active's GoTrue catches up: the next backup carries every user.
    await pair.primary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter table auth.users add column region text not null default 'eu'`;
    });
    await pair.secondary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter table auth.users alter column region set default 'eu'`;
    });
    assert.equal((await call(t, "POST", "/force-backup", { mode: "auto" })).status, 200);
    const users = async (sql: postgres.Sql) =>
      (await sql`select id, email, encrypted_password, raw_user_meta_data, nickname, tenant, region from auth.users order by id`).map(
        (r) => ({
          ...r,
        }),
      );
    assert.deepEqual(await users(pair.secondary.admin), await users(pair.primary.admin), "users after the backup");
    assert.deepEqual(await orphans(pair.secondary.admin), { profiles: 0, notes: 0, usersWithoutProfile: 0 });
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin), "app rows after the backup");
    await addNote(pair, max, "max's second note");
  });

  test("GoTrue adds an enum label on the active first: Auth alone is refused naming the label, the app's rows are carried; once the standby has it, the factor is carried", async () => {
    // The active is the primary; its GoTrue adds a factor type.
    await pair.primary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter type auth.factor_type add value 'sms'`;
    });
    const [user] = await pair.primary.admin`select id from auth.users where email = 'kim@example.com'`;
    const factor = "00000000-0000-4000-8000-00000000005a";
    await pair.primary.admin`insert into auth.mfa_factors (id, user_id, factor_type, status, created_at, updated_at)
      values (${factor}, ${user!.id}, 'sms', 'verified', now(), now())`;
    await addNote(pair, user!.id, "kim's note with an sms factor");
    const r = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.body.warning ?? "", /auth\.factor_type: label 'sms' exists only on the active/, JSON.stringify(r.body));
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin), "app rows with Auth refused");
    const carried = async () => (await pair.secondary.admin`select count(*)::int as n from auth.mfa_factors where id = ${factor}`)[0]!.n;
    assert.equal(await carried(), 0);

    await pair.secondary.admin.begin(async (tx) => {
      await tx`set local role supabase_auth_admin`;
      await tx`alter type auth.factor_type add value 'sms'`;
    });
    const again = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal(again.body.warning, undefined, JSON.stringify(again.body));
    assert.equal(await carried(), 1);
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin), "app rows after Auth is carried");
    await addNote(pair, user!.id, "kim's note after the factor was carried");
  });
});

describe("a full backup staged over several calls", () => {
  let pair: TestPair;
  let t: TestApp;
  before(async () => {
    ({ pair, t } = await setUp());
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  test("carries the users of its snapshot and those that came while it was staged", async () => {
    const ana = await signUp(pair.primary, "ana@example.com", "pw-ana", { username: "ana" });
    const gone = await signUp(pair.primary, "gone@example.com", "pw-gone", { username: "gone" });
    const calls = await stageUntilPublished(t, async () => {
      await signUp(pair.primary, "ben@example.com", "pw-ben", { username: "ben" });
      await updateUser(pair.primary, ana, { username: "ana" }, "pw-ana-2");
      await deleteUser(pair.primary, gone);
      // Nothing is published before the last call.
      const [standby] = await pair.secondary.admin`select count(*)::int as n from auth.users`;
      assert.equal(standby!.n, 0);
    });
    assert.ok(calls > 1);
    await assertSame(pair, "after the staged backup");
    assert.equal(await signIn(pair.secondary, "ana@example.com", "pw-ana-2"), ana);
    assert.deepEqual(await orphans(pair.secondary.admin), { profiles: 0, notes: 0, usersWithoutProfile: 0 });
    const [left] = await pair.secondary
      .admin`select count(*)::int as n from pg_tables where schemaname = 'spillway' and tablename like 'auth_stage_%' and tablename <> 'auth_stage_changes'`;
    assert.equal(left!.n, 0);
  });
});

describe("backups killed at random moments while users sign up, change and leave", () => {
  let pair: TestPair;
  let t: TestApp;
  before(async () => {
    ({ pair, t } = await setUp());
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  test("after every kill each user on the standby has its profile and each profile its user; then the copies are equal", async () => {
    for (let i = 0; i < 5; i++) await signUp(pair.primary, `first${i}@example.com`, "pw", { username: `first${i}` });
    assert.equal((await call(t, "POST", "/force-backup", { mode: "full" })).status, 200);
    let stopped = false;
    let n = 0;
    const live: string[] = [];
    const churn = (async () => {
      while (!stopped) {
        live.push(await signUp(pair.primary, `user${n}@example.com`, `pw-${n}`, { username: `user${n}` }));
        if (n % 4 === 1) await updateUser(pair.primary, live.at(-1)!, { username: `renamed${n}` });
        if (n % 3 === 2) await deleteUser(pair.primary, live.shift()!);
        n += 1;
      }
    })();
    try {
      for (let round = 0; round < 6; round++) {
        // Incremental backups, and every third round a full one.
        const child = run(
          process.execPath,
          ["--import", "tsx", `test/support/${round % 3 === 2 ? "backup" : "incremental"}-child.ts`],
          { PRIMARY_URL: pair.urls.primary, SECONDARY_URL: pair.urls.secondary },
          new URL("../../", import.meta.url).pathname,
        );
        await new Promise((r) => setTimeout(r, 400 + Math.random() * 1200));
        child.signalGroup("SIGKILL");
        await child.exited;
        assert.deepEqual(await orphans(pair.secondary.admin), { profiles: 0, notes: 0, usersWithoutProfile: 0 }, `round ${round}`);
        await expireLease(pair);
      }
    } finally {
      stopped = true;
      await churn;
    }
    assert.ok(n > 10, `only ${n} sign-ups ran`);
    const last = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(last.status, 200, JSON.stringify(last.body));
    await assertSame(pair, "after the last backup");
  });
});

describe("auth: false", () => {
  let pair: TestPair;
  let t: TestApp;
  before(async () => {
    ({ pair, t } = await setUp());
  });
  after(async () => {
    await t?.close();
    await pair?.destroy();
  });

  test("nothing of Auth is touched: no trigger, no copy, no fence, no count", async () => {
    const patched = await call(t, "PATCH", "/config", { auth: false });
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    assert.equal(patched.body.settings.auth, false);
    assert.equal((await call(t, "PATCH", "/config", { auth: "no" })).body.error.details.auth, "must be true or false");

    await signUp(pair.primary, "solo@example.com", "pw-solo");
    assert.equal((await call(t, "POST", "/force-backup", { mode: "full" })).status, 200);
    await signUp(pair.primary, "duo@example.com", "pw-duo");
    const inc = await call(t, "POST", "/force-backup", { mode: "auto" });
    assert.equal(inc.body.run.kind, "incremental");
    assert.equal((await call(t, "POST", "/force-switch", { to: "secondary" })).status, 200);

    for (const s of [pair.primary, pair.secondary]) {
      const [row] = await s.admin`
        select (select count(*)::int from pg_trigger g join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = 'auth' and g.tgname like 'spillway%') as triggers,
               (select count(*)::int from spillway.auth_changes) as captured`;
      assert.deepEqual(row, { triggers: 0, captured: 0 });
    }
    const [standby] = await pair.secondary.admin`select count(*)::int as n from auth.users`;
    assert.equal(standby!.n, 0);
    const status = await call(t, "GET", "/status");
    assert.equal(status.body.projects.primary.users, null);
    // The app's own tables still came across.
    assert.deepEqual(await fingerprint(pair.secondary.admin), await fingerprint(pair.primary.admin));
  });
});
