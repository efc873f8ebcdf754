import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { freePort, type RunningServer, startServer } from "../../cli/server.ts";
import { ActiveProjectUnknown, getActiveClient, onSwitch, type SwitchEvent } from "../../client/index.ts";
import { ADMIN_TOKEN, CRON_TOKEN } from "../support/app.ts";
import { signJwt } from "../support/jwt.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";

let pair: TestPair;
let server: RunningServer;
let apis: Record<"primary" | "secondary", Awaited<ReturnType<typeof startDataApi>>>;
// Each project's JWT secret, which its Data API stand-in verifies tokens with.
const JWT_SECRETS = { primary: "the-primary-projects-jwt-secret-0123456789", secondary: "the-secondary-projects-jwt-secret-0123456789" };

before(async () => {
  pair = await startTestPair();
  await applyToBoth(
    pair,
    `create table public.items (id text primary key, writer integer not null); grant select, insert on public.items to anon`,
  );
  server = await startServer({
    dbUrls: pair.urls,
    adminToken: ADMIN_TOKEN,
    cronToken: CRON_TOKEN,
    corsOrigins: ["*"],
    port: await freePort(),
    dataDir: `${pair.primary.dir}/../data-dir`,
    tickSeconds: 3600,
  });
  apis = {
    primary: await startDataApi(pair.urls.primary, JWT_SECRETS.primary),
    secondary: await startDataApi(pair.urls.secondary, JWT_SECRETS.secondary),
  };
});
after(async () => {
  await apis?.primary.close();
  await apis?.secondary.close();
  await server?.close();
  await pair?.destroy();
});

function projects() {
  return {
    primary: { url: apis.primary.url, anonKey: apis.primary.anonKey },
    secondary: { url: apis.secondary.url, anonKey: apis.secondary.anonKey },
  };
}

async function admin(path: string, body: unknown = {}) {
  const res = await fetch(`${server.url}/spillway${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as any;
}

async function ids(name: "primary" | "secondary"): Promise<string[]> {
  return (await pair[name].admin`select id from public.items order by id`).map((r) => r.id as string);
}

describe("the Data API stand-in is as strict as PostgREST", () => {
  test("401 for no key, a key of the other project, an expired or forged one; 200 for the project's own", async () => {
    const now = Math.floor(Date.now() / 1000);
    const read = (key?: string) =>
      fetch(`${apis.primary.url}/rest/v1/items?select=id`, {
        headers: key === undefined ? {} : { apikey: key, Authorization: `Bearer ${key}` },
      });
    const keys: Record<string, string | undefined> = {
      none: undefined,
      "the other project's": apis.secondary.anonKey,
      expired: signJwt(JWT_SECRETS.primary, { role: "anon", iat: now - 7200, exp: now - 3600 }),
      forged: `${apis.primary.anonKey.split(".").slice(0, 2).join(".")}.${Buffer.from("not the signature").toString("base64url")}`,
      "not a JWT": "anon-key-primary",
      "an unknown role": signJwt(JWT_SECRETS.primary, { role: "postgres", exp: now + 60 }),
    };
    for (const [what, key] of Object.entries(keys)) {
      const res = await read(key);
      assert.equal(res.status, 401, `${what}: ${res.status} ${await res.text()}`);
    }
    const expired = await (await read(keys.expired)).json();
    assert.deepEqual(expired, { code: "PGRST303", message: "JWT expired", details: null, hint: null });
    assert.equal((await read(apis.primary.anonKey)).status, 200);
  });

  test("each request runs as the token's role with its claims set, so RLS on the claims applies", async () => {
    await pair.primary.admin.unsafe(`
      create table if not exists public.diary (owner text not null default current_setting('request.jwt.claim.sub', true), body text not null);
      alter table public.diary enable row level security;
      grant select, insert on public.diary to authenticated;
      create policy own on public.diary to authenticated
        using (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'))
        with check (owner = (current_setting('request.jwt.claims', true)::jsonb ->> 'sub'))`);
    const now = Math.floor(Date.now() / 1000);
    const as = (sub: string) => signJwt(JWT_SECRETS.primary, { role: "authenticated", sub, exp: now + 60 });
    const send = (key: string, method: "GET" | "POST", body?: unknown) =>
      fetch(`${apis.primary.url}/rest/v1/diary${method === "GET" ? "?select=owner,body" : ""}`, {
        method,
        headers: { apikey: apis.primary.anonKey, Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    assert.equal((await send(as("ana"), "POST", { body: "ana's" })).status, 201);
    assert.equal((await send(as("bob"), "POST", { body: "bob's" })).status, 201);
    const other = await send(as("bob"), "POST", { owner: "ana", body: "in ana's name" });
    assert.equal(other.status, 403, await other.text());
    assert.deepEqual(await (await send(as("ana"), "GET")).json(), [{ owner: "ana", body: "ana's" }]);
    // The anon key has no grant on the table: PostgREST's 401 for anon.
    assert.equal((await send(apis.primary.anonKey, "GET")).status, 401);
    await pair.primary.admin`drop table public.diary`;
  });
});

describe("through the function's /active (the real local server)", () => {
  test("after a switch, a fenced write is retried once on the new active; later clients point there", async () => {
    const statusUrl = `${server.url}/spillway`;
    const switches: SwitchEvent[] = [];
    const off = onSwitch((e) => switches.push(e));
    const cached = await getActiveClient({ projects: projects(), statusUrl, cacheTtlMs: 60_000, watchMs: 0 });
    const first = await cached.from("items").insert({ id: "before-switch", writer: 1 });
    assert.equal(first.error, null);
    assert.deepEqual(await ids("primary"), ["before-switch"]);

    await admin("/force-backup", { mode: "full" });
    const result = await admin("/force-switch");
    assert.equal(result.switch.to, "secondary");

    // The cached client still points at the primary: its write hits the fence, is retried once, lands on the secondary.
    const again = await getActiveClient({ projects: projects(), statusUrl, cacheTtlMs: 60_000, watchMs: 0 });
    assert.equal(again, cached);
    const write = await again.from("items").insert({ id: "after-switch", writer: 2 });
    assert.equal(write.error, null, JSON.stringify(write.error));
    assert.ok((await ids("secondary")).includes("after-switch"));
    assert.ok(!(await ids("primary")).includes("after-switch"));
    assert.deepEqual(switches, [{ from: "primary", to: "secondary", epoch: 2 }]);

    const next = await getActiveClient({ projects: projects(), statusUrl, cacheTtlMs: 60_000, watchMs: 0 });
    assert.notEqual(next, cached, "the next client is the secondary's");
    assert.equal((await next.from("items").insert({ id: "next", writer: 3 })).error, null);
    assert.ok((await ids("secondary")).includes("next"));
    off();
  });

  test("other errors are not retried", async () => {
    const client = await getActiveClient({ projects: projects(), statusUrl: `${server.url}/spillway`, cacheTtlMs: 0 });
    const dup = await client.from("items").insert({ id: "next", writer: 4 });
    assert.equal(dup.error?.code, "23505");
  });
});

describe("through the Data API (PostgREST stand-in on the real databases)", () => {
  test("the highest epoch wins", async () => {
    // Both copies now say secondary at epoch 2; make the primary's copy claim a stale answer.
    await pair.primary.admin`update public.spillway_active set active = 'primary', epoch = 1`;
    try {
      const client = await getActiveClient({ projects: projects(), cacheTtlMs: 0 });
      const { data } = await client.from("spillway_active").select("active,epoch");
      assert.deepEqual(data, [{ active: "secondary", epoch: 2 }]);
      assert.equal((await client.from("items").insert({ id: "via-data-api", writer: 5 })).error, null);
      assert.ok((await ids("secondary")).includes("via-data-api"));
    } finally {
      await pair.primary.admin`update public.spillway_active set active = 'secondary', epoch = 2`;
    }
  });

  test("one project not answering still resolves; neither gives a clear error, not a hang", async () => {
    const options = { projects: projects(), cacheTtlMs: 0, timeoutMs: 800 };
    apis.primary.hang(true);
    try {
      const client = await getActiveClient(options);
      assert.equal((await client.from("items").insert({ id: "one-down", writer: 6 })).error, null);
      assert.ok((await ids("secondary")).includes("one-down"));
      apis.secondary.hang(true);
      const started = Date.now();
      await assert.rejects(getActiveClient(options), (e: unknown) => {
        assert.ok(e instanceof ActiveProjectUnknown);
        assert.match((e as Error).message, /neither project answered/);
        return true;
      });
      assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    } finally {
      apis.primary.hang(false);
      apis.secondary.hang(false);
    }
  });
});
