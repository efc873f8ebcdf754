// Runs every test file under test/ with Node's test runner (TypeScript through tsx).
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
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

const result = spawnSync(
  process.execPath,
  ["--experimental-websocket", "--import", "tsx", "--test", "--test-concurrency=2", "--test-timeout=300000", ...files],
  { stdio: "inherit" },
);
process.exit(result.status ?? 1);
