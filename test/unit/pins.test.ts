// Versions are pinned once, in package.json: the Edge Function's import map must name the
// same versions, so Deno and Node run the same dependencies.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
const deno = JSON.parse(readFileSync(new URL("../../supabase/functions/spillway/deno.json", import.meta.url), "utf8"));

test("every npm: specifier of the Deno import map pins the version package.json pins", () => {
  const pinned: Record<string, string> = { ...pkg.dependencies, ...pkg.devDependencies };
  const entries = Object.entries(deno.imports as Record<string, string>);
  assert.ok(entries.length > 0);
  for (const [key, specifier] of entries) {
    const m = /^npm:((?:@[^/@]+\/)?[^/@]+)@([^/]+)(\/.*)?$/.exec(specifier);
    assert.ok(m, `${key}: ${specifier} is not an npm: specifier with a version`);
    assert.equal(m[2], pinned[m[1]!], `${key}: deno.json pins ${m[1]}@${m[2]}, package.json ${pinned[m[1]!] ?? "nothing"}`);
  }
});
