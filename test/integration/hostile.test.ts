import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { freePort, type RunningServer, startServer } from "../../cli/server.ts";
import { ADMIN_TOKEN, CRON_TOKEN } from "../support/app.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let server: RunningServer;
let port: number;

before(async () => {
  pair = await startTestPair();
  port = await freePort();
  server = await startServer({
    dbUrls: pair.urls,
    adminToken: ADMIN_TOKEN,
    cronToken: CRON_TOKEN,
    corsOrigins: ["*"],
    port,
    dataDir: `${pair.primary.dir}/../data-dir`,
    tickSeconds: 3600,
  });
});
after(async () => {
  await server?.close();
  await pair?.destroy();
});

// A raw request: the path goes out exactly as written (fetch would normalise "..").
function raw(
  method: string,
  path: string,
  body?: string | Buffer,
  token: string | null = ADMIN_TOKEN,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), "Content-Type": "application/json" },
      },
      (res) => {
        let text = "";
        res.on("data", (c) => {
          text += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function seeded(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}

const STRINGS = [
  "",
  "'; drop table spillway.state; --",
  '" or 1=1 --',
  "ünïcödé ✓ 🚀",
  "\u0000",
  "a".repeat(5000),
  "../../etc/passwd",
  "<script>alert(1)</script>",
  "NaN",
  "1e309",
];
const VALUES: unknown[] = [null, true, false, 0, -1, 1.5, 1e308, -0, [], {}, [1, "a"], { nested: { deep: [null] } }, ...STRINGS];
const FIELDS = [
  "backupThreshold",
  "switchThreshold",
  "quotaBytes",
  "autoBackup",
  "autoSwitch",
  "strategy",
  "schemas",
  "budgetSeconds",
  "maxRetainedBytes",
  "mode",
  "verify",
  "to",
  "force",
  "__proto__",
  "constructor",
  "'; select 1; --",
];

describe("hostile input to every endpoint", () => {
  test("random and malformed bodies: only 2xx/4xx, never a 5xx, never a setting changed by a rejected request", async () => {
    const settings = async () => (await pair.primary.admin`select data, version from spillway.settings`)[0];
    const random = seeded(42);
    const pick = <T>(list: T[]) => list[Math.floor(random() * list.length)]!;
    const bodies: string[] = [
      "{",
      "}",
      "[",
      "null",
      "true",
      "1",
      '"text"',
      '{"a":}',
      "{'single': 1}",
      "\u0000\u0001",
      '{"backupThreshold": 0.8,}',
      JSON.stringify(STRINGS),
      '{"__proto__": {"backupThreshold": 0.1}}',
    ];
    for (let i = 0; i < 150; i++) {
      const body: Record<string, unknown> = {};
      const n = 1 + Math.floor(random() * 3);
      for (let k = 0; k < n; k++) body[pick(FIELDS)] = pick(VALUES);
      bodies.push(JSON.stringify(body));
    }
    // GETs take no body: each is asked once below; the bodies go to the endpoints that read one.
    const endpoints: [string, string][] = [
      ["PATCH", "/spillway/config"],
      ["POST", "/spillway/force-switch"],
      ["POST", "/spillway/force-backup"],
      ["POST", "/spillway/verify"],
      ["POST", "/spillway/tick"],
    ];
    const answered = (method: string, path: string, body: string, res: { status: number; body: string }) => {
      assert.ok(res.status < 500, `${method} ${path} ${body.slice(0, 80)} → ${res.status} ${res.body.slice(0, 200)}`);
      const parsed = JSON.parse(res.body);
      if (res.status >= 400) {
        assert.match(parsed.error.code, /^[A-Z_]+$/);
        assert.equal(typeof parsed.error.message, "string");
        assert.ok(!res.body.includes("    at "), "no stack trace");
      }
    };
    let rejected = 0;
    for (const [i, body] of bodies.entries()) {
      for (const [method, path] of endpoints) {
        // /tick and /verify read no body: each does its whole work per request, so they get
        // the malformed bodies and a few random ones.
        if ((path === "/spillway/tick" || path === "/spillway/verify") && i >= 20) continue;
        const was = method === "PATCH" ? await settings() : null;
        const res = await raw(method, path, body);
        answered(method, path, body, res);
        if (res.status >= 400 && was) {
          rejected += 1;
          assert.deepEqual(await settings(), was, `a rejected PATCH changed the settings: ${body}`);
        }
      }
    }
    for (const path of ["/spillway/logs", "/spillway/status", "/spillway/config", "/spillway/active", "/spillway/health"])
      answered("GET", path, "", await raw("GET", path, undefined));
    assert.ok(rejected > 100, `only ${rejected} PATCHes were rejected`);
  });

  test("query strings: bad values are 400, SQL-looking ones are only text", async () => {
    for (const [q, field] of [
      ["limit=-1", "limit"],
      ["limit=1e9", "limit"],
      ["limit=%27%3B", "limit"],
      ["level=%27%20or%201%3D1", "level"],
      ["before=2020-13-45", "before"],
      ["before=%00", "before"],
      ["limit=5&limit=6", "limit"],
      ["x=%ZZ", "x"],
    ] as const) {
      const res = await raw("GET", `/spillway/logs?${q}`);
      assert.equal(res.status, 400, `${q} → ${res.status} ${res.body}`);
      const { error } = JSON.parse(res.body);
      assert.equal(error.code, "INVALID_QUERY", q);
      assert.match(error.message, new RegExp(field), `${q}: the message names ${field}`);
      assert.ok(!res.body.includes("    at "), "no stack trace");
    }
    // The same parameters with good values are answered.
    const good = await raw("GET", "/spillway/logs?limit=5&level=info&before=2099-01-01T00:00:00Z");
    assert.equal(good.status, 200, good.body);
    assert.ok(Array.isArray(JSON.parse(good.body).events));
    const [state] = await pair.primary.admin`select count(*)::int as n from spillway.state`;
    assert.equal(state!.n, 1);
  });

  test("an oversized body is refused whatever the endpoint", async () => {
    const big = Buffer.alloc(70 * 1024, "a");
    for (const [method, path] of [
      ["PATCH", "/spillway/config"],
      ["POST", "/spillway/force-backup"],
      ["POST", "/spillway/tick"],
    ] as const) {
      const res = await raw(method, path, big);
      assert.equal(res.status, 413, `${method} ${path}`);
      assert.equal(JSON.parse(res.body).error.code, "PAYLOAD_TOO_LARGE");
    }
  });

  test("path traversal on the widget files serves nothing outside widget/", async () => {
    assert.equal((await raw("GET", "/", undefined, null)).status, 200);
    assert.equal((await raw("GET", "/spillway-widget.js", undefined, null)).status, 200);
    for (const path of [
      "/../package.json",
      "/%2e%2e/package.json",
      "/..%2fpackage.json",
      "/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
      "/widget/../../package.json",
      "/....//package.json",
      "/index.html%00.js",
      "/.%2e/cli/main.ts",
      "//etc/passwd",
      "/%5c..%5cpackage.json",
      "/secrets.json",
      "/.spillway/secrets.json",
    ]) {
      const res = await raw("GET", path, undefined, null);
      assert.ok(res.status === 404 || res.status === 400, `${path} → ${res.status}`);
      assert.ok(!res.body.includes('"name": "spillway"') && !res.body.includes("root:x:0"), `${path} leaked a file`);
    }
  });

  test("wrong tokens of every shape: 401, never a 5xx", async () => {
    for (const token of ["x", ADMIN_TOKEN.slice(0, -1), `${ADMIN_TOKEN}x`, ADMIN_TOKEN.toUpperCase(), "ü".repeat(30), CRON_TOKEN]) {
      const res = await raw("GET", "/spillway/status", undefined, token);
      assert.equal(res.status, 401);
    }
  });
});
