import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError, loadConfig } from "../../functions/config.ts";

const A = "postgres://postgres:pw@db.a.supabase.co:5432/postgres";
const B = "postgres://postgres:pw@db.b.supabase.co:5432/postgres";

test("defaults: embedded mode, port 8787, CORS open", () => {
  const c = loadConfig({});
  assert.equal(c.dbUrls, null);
  assert.equal(c.port, 8787);
  assert.deepEqual(c.corsOrigins, ["*"]);
  assert.equal(c.dataDir, ".spillway");
});

test("both URLs are read together", () => {
  const c = loadConfig({
    SPILLWAY_PRIMARY_DB_URL: A,
    SPILLWAY_SECONDARY_DB_URL: B,
    SPILLWAY_CORS_ORIGINS: "https://a.example, https://b.example",
  });
  assert.deepEqual(c.dbUrls, { primary: A, secondary: B });
  assert.deepEqual(c.corsOrigins, ["https://a.example", "https://b.example"]);
});

test("every problem is reported at once, one line each, naming its variable", () => {
  try {
    loadConfig({
      SPILLWAY_PRIMARY_DB_URL: "mysql://x",
      PORT: "99999",
      SPILLWAY_ADMIN_TOKEN: "short",
      SPILLWAY_CORS_ORIGINS: "not an origin",
    });
    assert.fail("expected a ConfigError");
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    const text = e.problems.join("\n");
    for (const name of ["SPILLWAY_PRIMARY_DB_URL", "PORT", "SPILLWAY_ADMIN_TOKEN", "SPILLWAY_CORS_ORIGINS"])
      assert.match(text, new RegExp(name));
    assert.match(text, /must be set together/);
    assert.ok(e.problems.length >= 5);
  }
});

test("the same database twice is refused", () => {
  assert.throws(() => loadConfig({ SPILLWAY_PRIMARY_DB_URL: A, SPILLWAY_SECONDARY_DB_URL: A.replace(":5432", "") }), /same database/);
});

test("the cron token may not be the admin token", () => {
  assert.throws(() => loadConfig({ SPILLWAY_ADMIN_TOKEN: "x".repeat(20), SPILLWAY_CRON_TOKEN: "x".repeat(20) }), /must differ/);
});

test("alerts: the webhook URL and its secret are read together; problems never quote the URL", () => {
  const url = "https://hooks.slack.com/services/T0/B0/s3cr3t";
  assert.deepEqual(loadConfig({ SPILLWAY_ALERT_WEBHOOK_URL: url }).alerts, { webhookUrl: url, secret: null });
  assert.equal(loadConfig({}).alerts, null);
  try {
    loadConfig({ SPILLWAY_ALERT_WEBHOOK_URL: "ftp://s3cr3t@x", SPILLWAY_ALERT_SECRET: "short" });
    assert.fail("expected a ConfigError");
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /SPILLWAY_ALERT_WEBHOOK_URL must be an http/);
    assert.match(e.message, /SPILLWAY_ALERT_SECRET must be at least/);
    assert.doesNotMatch(e.message, /s3cr3t/);
  }
  assert.throws(() => loadConfig({ SPILLWAY_ALERT_SECRET: "x".repeat(20) }), /SPILLWAY_ALERT_WEBHOOK_URL is not/);
});

test("the fdw link's URLs are optional, per project, and checked", () => {
  const session = "postgres://postgres.ref:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres";
  assert.deepEqual(loadConfig({ SPILLWAY_PRIMARY_DB_URL: A, SPILLWAY_SECONDARY_DB_URL: B }).fdwUrls, {});
  assert.deepEqual(loadConfig({ SPILLWAY_PRIMARY_DB_URL: A, SPILLWAY_SECONDARY_DB_URL: B, SPILLWAY_PRIMARY_FDW_URL: session }).fdwUrls, {
    primary: session,
  });
  assert.throws(() => loadConfig({ SPILLWAY_SECONDARY_FDW_URL: "https://x" }), /SPILLWAY_SECONDARY_FDW_URL must be a postgres/);
});

test("Storage's API variables come all four together; the keys never appear in a problem", () => {
  assert.equal(loadConfig({}).storageApis, null);
  const both = {
    SPILLWAY_PRIMARY_API_URL: "https://a.supabase.co",
    SPILLWAY_PRIMARY_SERVICE_KEY: "secret-key-a",
    SPILLWAY_SECONDARY_API_URL: "https://b.supabase.co",
    SPILLWAY_SECONDARY_SERVICE_KEY: "secret-key-b",
  };
  assert.deepEqual(loadConfig(both).storageApis, {
    primary: { url: "https://a.supabase.co", serviceKey: "secret-key-a" },
    secondary: { url: "https://b.supabase.co", serviceKey: "secret-key-b" },
  });
  assert.throws(
    () => loadConfig({ ...both, SPILLWAY_SECONDARY_SERVICE_KEY: "", SPILLWAY_PRIMARY_API_URL: "ftp://a" }),
    (e: unknown) => {
      const text = (e as ConfigError).problems.join("\n");
      assert.match(text, /SPILLWAY_SECONDARY_SERVICE_KEY must be set too/);
      assert.doesNotMatch(text, /secret-key/);
      return true;
    },
  );
});

test("two projects behind one pooler host and port are told apart by the tenant in the user name", () => {
  const pooler = (ref: string) => `postgres://postgres.${ref}:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres`;
  const c = loadConfig({ SPILLWAY_PRIMARY_DB_URL: pooler("abcdefgh"), SPILLWAY_SECONDARY_DB_URL: pooler("ijklmnop") });
  assert.deepEqual(c.dbUrls, { primary: pooler("abcdefgh"), secondary: pooler("ijklmnop") });
  assert.throws(
    () =>
      loadConfig({ SPILLWAY_PRIMARY_DB_URL: pooler("abcdefgh"), SPILLWAY_SECONDARY_DB_URL: pooler("abcdefgh").replace(":pw@", ":other@") }),
    /same database/,
  );
});

test("a URL that does not parse names its variable, beside the other problems, and missing tokens are reported before any connection", () => {
  try {
    loadConfig(
      { SPILLWAY_PRIMARY_DB_URL: "postgres://user:%zz@host/db", SPILLWAY_SECONDARY_DB_URL: "postgres://[nope", PORT: "x" },
      "start",
    );
    assert.fail("expected a ConfigError");
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    assert.deepEqual(
      e.problems.map((p) => p.split(" ")[0]),
      ["SPILLWAY_PRIMARY_DB_URL", "SPILLWAY_SECONDARY_DB_URL", "SPILLWAY_ADMIN_TOKEN", "PORT"],
    );
    assert.ok(!e.problems.join("\n").includes("%zz"), "never the URL itself");
  }
  assert.throws(
    () => loadConfig({ SPILLWAY_PRIMARY_DB_URL: A, SPILLWAY_SECONDARY_DB_URL: B }, "function"),
    /SPILLWAY_ADMIN_TOKEN must be set/,
  );
  assert.throws(
    () => loadConfig({ SPILLWAY_ADMIN_TOKEN: "x".repeat(20) }, "init"),
    (e: ConfigError) =>
      e.problems.some((p) => /SPILLWAY_CRON_TOKEN must be set/.test(p)) && e.problems.some((p) => /DB_URL .*must be set/.test(p)),
  );
  assert.equal(loadConfig({}, "start").dbUrls, null, "embedded mode needs no token");
});
