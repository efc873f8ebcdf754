import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CRON_TOKEN, type TestApp, testApp } from "../support/app.ts";
import { startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function json(res: Response): Promise<any> {
  return JSON.parse(await res.text());
}

describe("public endpoints", () => {
  test("GET /health", async () => {
    const res = await t.request("/spillway/health", { token: null });
    assert.equal(res.status, 200);
    assert.deepEqual(await json(res), { ok: true });
  });

  test("GET /active names the active project and epoch, nothing else", async () => {
    const res = await t.request("/spillway/active", { token: null });
    assert.equal(res.status, 200);
    const body = await json(res);
    assert.deepEqual(Object.keys(body).sort(), ["active", "epoch", "since"]);
    assert.equal(body.active, "primary");
    assert.equal(body.epoch, 1);
  });

  test("the highest epoch wins when the copies disagree", async () => {
    await pair.secondary.admin`update spillway.state set active = 'secondary', epoch = 7`;
    // /active reuses one reading for 250 ms.
    await new Promise((r) => setTimeout(r, 300));
    try {
      const body = await json(await t.request("/spillway/active", { token: null }));
      assert.equal(body.active, "secondary");
      assert.equal(body.epoch, 7);
    } finally {
      await pair.secondary.admin`update spillway.state set active = 'primary', epoch = 1`;
      await new Promise((r) => setTimeout(r, 300));
    }
  });

  test("CORS answers a preflight from any origin by default", async () => {
    const res = await t.request("/spillway/status", {
      method: "OPTIONS",
      token: null,
      headers: {
        Origin: "https://dashboard.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
      },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.match(res.headers.get("access-control-allow-headers") ?? "", /authorization/i);
  });
});

describe("admin endpoints", () => {
  for (const [method, path] of [
    ["GET", "/status"],
    ["GET", "/config"],
    ["PATCH", "/config"],
    ["GET", "/logs"],
    ["POST", "/tick"],
  ] as const) {
    test(`${method} ${path} without a token or with a wrong one: 401`, async () => {
      for (const token of [null, "wrong-token-0123456789", ""]) {
        const res = await t.request(`/spillway${path}`, { method, token, body: method === "GET" ? undefined : "{}" });
        assert.equal(res.status, 401, `${method} ${path} with ${token}`);
        assert.equal((await json(res)).error.code, "UNAUTHORIZED");
      }
    });
  }

  test("the cron token may tick and nothing else", async () => {
    assert.equal((await t.request("/spillway/tick", { method: "POST", token: CRON_TOKEN })).status, 200);
    assert.equal((await t.request("/spillway/status", { token: CRON_TOKEN })).status, 401);
    assert.equal((await t.request("/spillway/config", { token: CRON_TOKEN })).status, 401);
  });

  test("GET /status: callers asking at once share one reading; a later caller gets a new one", async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, async () => await json(await t.request("/spillway/status"))));
    const measured = new Set(answers.map((a) => a.projects.primary.measuredAt));
    assert.equal(measured.size, 1, `20 callers at once caused ${measured.size} readings`);
    await new Promise((r) => setTimeout(r, 5));
    const later = await json(await t.request("/spillway/status"));
    assert.notEqual(later.projects.primary.measuredAt, answers[0].projects.primary.measuredAt);
  });

  test("GET /status shows both projects reachable with usage figures", async () => {
    const res = await t.request("/spillway/status");
    assert.equal(res.status, 200);
    const s = await json(res);
    assert.equal(s.active, "primary");
    assert.equal(s.standby, "secondary");
    assert.equal(s.epoch, 1);
    assert.equal(s.phase, "normal");
    assert.deepEqual(s.thresholds, { backup: 0.85, switch: 0.9 });
    for (const name of ["primary", "secondary"]) {
      const p = s.projects[name];
      assert.equal(p.reachable, true);
      assert.equal(p.error, null);
      assert.ok(p.usedBytes > 1_000_000, `${name} usedBytes ${p.usedBytes}`);
      assert.equal(p.quotaBytes, 524288000);
      assert.ok(Math.abs(p.usage - p.usedBytes / p.quotaBytes) < 1e-12);
      assert.equal(p.readOnly, false);
      assert.ok(Date.parse(p.measuredAt) > 0);
    }
    assert.equal(s.projects.primary.role, "active");
    assert.equal(s.projects.secondary.role, "standby");
    assert.equal(s.lastBackup, null);
  });

  test("GET /status reports a database set read-only", async () => {
    await pair.primary.admin`alter database postgres set default_transaction_read_only = on`;
    try {
      const s = await json(await t.request("/spillway/status"));
      assert.equal(s.projects.primary.readOnly, true);
      assert.equal(s.projects.secondary.readOnly, false);
    } finally {
      await pair.primary.admin`alter database postgres reset default_transaction_read_only`;
    }
  });

  test("a tick stores a usage sample in each project", async () => {
    const count = async () => Number((await pair.primary.admin`select count(*) from spillway.usage_samples`)[0]!.count);
    const before = await count();
    const res = await t.request("/spillway/tick", { method: "POST" });
    assert.equal(res.status, 200);
    const body = await json(res);
    assert.equal(body.action, "none");
    assert.ok(body.usage.primary > 0 && body.usage.secondary > 0);
    assert.equal(await count(), before + 1);
  });

  test("GET /config shows settings and where the projects are, never a password", async () => {
    const res = await t.request("/spillway/config");
    const text = await res.text();
    const body = JSON.parse(text);
    assert.equal(body.settings.backupThreshold, 0.85);
    assert.equal(body.settings.schemas, null);
    assert.deepEqual(body.projects.primary, { host: "127.0.0.1", database: "postgres" });
    assert.ok(!text.includes(pair.primary.password) && !text.includes(pair.secondary.password));
  });
});

describe("PATCH /config", () => {
  const stored = async () => (await pair.primary.admin`select data, version from spillway.settings`)[0]!;

  test("a valid change is stored in both projects and logged", async () => {
    const res = await t.request("/spillway/config", {
      method: "PATCH",
      body: JSON.stringify({ backupThreshold: 0.8, autoBackup: true, quotaBytes: { primary: 524288000, secondary: 1073741824 } }),
    });
    assert.equal(res.status, 200);
    assert.equal((await json(res)).settings.backupThreshold, 0.8);
    for (const server of [pair.primary, pair.secondary]) {
      const [row] = await server.admin`select data from spillway.settings`;
      assert.equal(row!.data.backupThreshold, 0.8);
      assert.equal(row!.data.quotaBytes.secondary, 1073741824);
      assert.equal(row!.data.quotaBytes.primary, 524288000);
    }
    const status = await json(await t.request("/spillway/status"));
    assert.equal(status.thresholds.backup, 0.8);
    assert.equal(status.projects.secondary.quotaBytes, 1073741824);
    const logs = await json(await t.request("/spillway/logs?limit=5"));
    assert.equal(logs.events[0].kind, "config.changed");
    // Only what changed is told, though the form sends every field.
    assert.equal(logs.events[0].message, "settings changed: backupThreshold 0.85 → 0.8, quotaBytes.secondary 524288000 → 1073741824");
    await t.request("/spillway/config", {
      method: "PATCH",
      body: JSON.stringify({ backupThreshold: 0.85, quotaBytes: { secondary: 524288000 } }),
    });
  });

  const bad: [string, string, string[]][] = [
    ["malformed JSON", '{"backupThreshold": ', ["body"]],
    ["an unknown field", JSON.stringify({ backupTreshold: 0.5 }), ["backupTreshold"]],
    ["a threshold above 1", JSON.stringify({ switchThreshold: 1.2 }), ["switchThreshold"]],
    ["a threshold of 0", JSON.stringify({ backupThreshold: 0 }), ["backupThreshold"]],
    ["a switch threshold below the backup threshold", JSON.stringify({ switchThreshold: 0.8 }), ["backupThreshold", "switchThreshold"]],
    [
      "several bad fields",
      JSON.stringify({ backupThreshold: "high", autoSwitch: 1, strategy: "x" }),
      ["autoSwitch", "backupThreshold", "strategy"],
    ],
  ];
  for (const [what, body, fields] of bad) {
    test(`${what}: 400 INVALID_CONFIG naming each field, nothing stored`, async () => {
      const before = await stored();
      const res = await t.request("/spillway/config", { method: "PATCH", body, headers: { "Content-Type": "application/json" } });
      assert.equal(res.status, 400);
      const error = (await json(res)).error;
      assert.equal(error.code, "INVALID_CONFIG");
      assert.deepEqual(Object.keys(error.details).sort(), fields);
      for (const f of fields) assert.match(error.message, new RegExp(f));
      assert.deepEqual(await stored(), before);
    });
  }

  test("an oversized body is refused with 413", async () => {
    const res = await t.request("/spillway/config", { method: "PATCH", body: JSON.stringify({ schemas: Array(20000).fill("public") }) });
    assert.equal(res.status, 413);
    assert.equal((await json(res)).error.code, "PAYLOAD_TOO_LARGE");
  });
});

describe("GET /logs", () => {
  test("newest first, filtered by level and time, limited", async () => {
    await t.events.record("info", "test.first", "first");
    await new Promise((r) => setTimeout(r, 5));
    await t.events.record("warn", "test.second", "second", { project: "secondary" });
    const all = (await json(await t.request("/spillway/logs?limit=2"))).events;
    assert.deepEqual(
      all.map((e: any) => e.kind),
      ["test.second", "test.first"],
    );
    assert.deepEqual(Object.keys(all[0]).sort(), ["at", "data", "id", "kind", "level", "message", "project"]);
    const warns = (await json(await t.request("/spillway/logs?level=warn"))).events;
    assert.ok(warns.length >= 1 && warns.every((e: any) => e.level === "warn"));
    const older = (await json(await t.request(`/spillway/logs?before=${encodeURIComponent(all[0].at)}&limit=1`))).events;
    assert.equal(older[0].kind, "test.first");
  });

  test("bad query values: 400 naming the field", async () => {
    for (const [q, field] of [
      ["limit=0", "limit"],
      ["limit=abc", "limit"],
      ["level=debug", "level"],
      ["before=yesterday", "before"],
      ["colour=red", "colour"],
    ]) {
      const res = await t.request(`/spillway/logs?${q}`);
      assert.equal(res.status, 400, q);
      const error = (await json(res)).error;
      assert.equal(error.code, "INVALID_QUERY");
      assert.ok(field! in error.details, q);
    }
  });
});

describe("one project down", () => {
  test("/status answers 200 with reachable: false and the error; /active still answers", async () => {
    await pair.secondary.stop();
    {
      const res = await t.request("/spillway/status");
      assert.equal(res.status, 200);
      const s = await json(res);
      assert.equal(s.projects.primary.reachable, true);
      assert.equal(s.projects.secondary.reachable, false);
      assert.equal(typeof s.projects.secondary.error, "string");
      assert.ok(s.projects.secondary.error.length > 0);
      assert.equal((await t.request("/spillway/active", { token: null })).status, 200);
      assert.equal((await t.request("/spillway/logs")).status, 200);
      const tick = await json(await t.request("/spillway/tick", { method: "POST" }));
      assert.equal(tick.usage.secondary, null);
    }
  });

  test("no response, event or log line carried a database password", async () => {
    const logs = await t.request("/spillway/logs?limit=500");
    const text = (await logs.text()) + JSON.stringify(t.sunk);
    for (const secret of [pair.primary.password, pair.secondary.password]) assert.ok(!text.includes(secret));
  });
});
