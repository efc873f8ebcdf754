import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const exec = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "spillway-bundle-"));
after(() => rmSync(dir, { recursive: true, force: true }));

// `supabase functions deploy spillway` bundles the entry with Deno, the import map of its
// deno.json and its lock file, from this repository (the entry imports ../../../functions/*).
test("the Edge Function's whole module graph bundles from its entry with its deno.json and lock file", async () => {
  const out = join(dir, "spillway.js");
  await exec(
    join(root, "node_modules/.bin/deno"),
    [
      "bundle",
      "--quiet",
      "--config",
      "supabase/functions/spillway/deno.json",
      "--frozen-lockfile",
      "--platform",
      "deno",
      "supabase/functions/spillway/index.ts",
      "-o",
      out,
    ],
    { cwd: root, env: { ...process.env, NO_COLOR: "1" } },
  );
  const bundle = readFileSync(out, "utf8");
  // Modules from every corner of the graph are in it, and nothing is left to resolve at deploy.
  for (const marker of ["CONFIRM_REQUIRED", "TARGET_UNFIT", "spillway_active", "pgoutput"]) assert.ok(bundle.includes(marker), marker);
  assert.deepEqual(bundle.match(/^\s*import\s[^;]*from\s*["'](npm:|\.\.?\/)[^"']*["']/gm) ?? [], []);

  // Every npm: specifier is pinned to the version package.json (and so the tests) use.
  const { imports } = JSON.parse(readFileSync(join(root, "supabase/functions/spillway/deno.json"), "utf8")) as {
    imports: Record<string, string>;
  };
  const { dependencies } = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { dependencies: Record<string, string> };
  for (const [name, specifier] of Object.entries(imports)) {
    const m = /^npm:(@?[^@/]+(?:\/[^@/]+)?)@([^/]+)/.exec(specifier);
    assert.ok(m, `${name}: ${specifier} is not a pinned npm: specifier`);
    assert.equal(m[2], dependencies[m[1]!], `${name}: ${specifier} against package.json's ${dependencies[m[1]!]}`);
  }
});
