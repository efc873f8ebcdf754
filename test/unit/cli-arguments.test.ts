import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { apiTarget, TargetError } from "../../cli/api.ts";
import { parseAssignments } from "../../cli/assignments.ts";

test("config set: KEY=VALUE as JSON where it parses, schemas as a comma list, dotted keys nested", () => {
  assert.deepEqual(
    parseAssignments([
      "switchThreshold=0.92",
      "autoSwitch=false",
      "quotaBytes.primary=600000000",
      "quotaBytes.secondary=7",
      "schemas=public, shop",
    ]),
    { switchThreshold: 0.92, autoSwitch: false, quotaBytes: { primary: 600000000, secondary: 7 }, schemas: ["public", "shop"] },
  );
  assert.deepEqual(parseAssignments(['schemas=["a"]', "strategy=fdw"]), { schemas: ["a"], strategy: "fdw" });
  assert.throws(() => parseAssignments(["switchThreshold"]), /"switchThreshold" is not key=value/);
  assert.throws(() => parseAssignments(["=1"]), /is not key=value/);
});

test("SPILLWAY_URL is honoured over PORT, must be an http(s) URL, and a remote one never gets the local token", () => {
  const dir = mkdtempSync(join(tmpdir(), "spillway-target-"));
  try {
    writeFileSync(join(dir, "secrets.json"), JSON.stringify({ adminToken: "the-local-token" }));
    const base = { SPILLWAY_DATA_DIR: dir, PORT: "9999" };
    assert.deepEqual(apiTarget({ ...base, SPILLWAY_URL: "https://ref.supabase.co/functions/v1/spillway/" }), {
      url: "https://ref.supabase.co/functions/v1/spillway",
      token: null,
    });
    assert.deepEqual(apiTarget({ ...base, SPILLWAY_URL: "http://localhost:8788" }), {
      url: "http://localhost:8788",
      token: "the-local-token",
    });
    assert.deepEqual(apiTarget({ SPILLWAY_DATA_DIR: dir }), { url: "http://localhost:8787", token: "the-local-token" });
    assert.throws(
      () => apiTarget({ SPILLWAY_URL: "localhost:8787" }),
      (e) => e instanceof TargetError && /SPILLWAY_URL must be/.test(e.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
