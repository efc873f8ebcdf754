// Runs every test file under test/ with Node's test runner (TypeScript through tsx), or
// those whose path contains one of the arguments. Ends with `N passed, N failed` (and
// `, N skipped`) counting tests, as test/reporter.mjs counts them (a cancelled test is a
// failed one, a file without tests fails); exits 1 when any failed, 2 when no file matches.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const suites = ["unit", "integration", "e2e"];
const only = process.argv.slice(2);
const files = suites
  .flatMap((suite) =>
    readdirSync(join("test", suite))
      .filter((f) => f.endsWith(".test.ts"))
      .sort()
      .map((f) => join("test", suite, f)),
  )
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error(`no test file under test/unit, test/integration or test/e2e matches ${only.map((o) => JSON.stringify(o)).join(" or ")}`);
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), "spillway-tests-"));
const countsFile = join(dir, "counts.json");
const result = spawnSync(
  process.execPath,
  [
    "--experimental-websocket",
    "--import",
    "tsx",
    "--test",
    "--test-concurrency=2",
    "--test-timeout=300000",
    "--test-reporter=spec",
    "--test-reporter-destination=stdout",
    `--test-reporter=${join(import.meta.dirname, "reporter.mjs")}`,
    `--test-reporter-destination=${countsFile}`,
    ...files,
  ],
  { stdio: "inherit" },
);
let counts;
try {
  counts = JSON.parse(readFileSync(countsFile, "utf8"));
} catch {
  counts = { passed: 0, failed: 1, skipped: 0, empty: [] };
  console.error("the test runner stopped before it reported its results");
}
rmSync(dir, { recursive: true, force: true });
const slowest = Object.entries(counts.seconds ?? {})
  .sort((a, b) => b[1] - a[1])
  .slice(0, 8);
if (files.length > 1 && slowest.length > 0)
  console.log(`slowest files: ${slowest.map(([file, s]) => `${file.replace(/^.*\/test\//, "")} ${s} s`).join(", ")}`);
for (const file of counts.empty) console.error(`${file}: no test ran in this file`);
console.log(`${counts.passed} passed, ${counts.failed} failed${counts.skipped ? `, ${counts.skipped} skipped` : ""}`);
process.exit(counts.failed > 0 || result.status !== 0 ? 1 : 0);
