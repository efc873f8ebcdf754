// Node's test runner reporter that counts tests for test/run.mjs: it writes one JSON line,
// {passed, failed, skipped, empty}, to its destination when the run ends. A test cancelled
// by its parent (a failed `before`, a file that stopped) counts as failed; a suite whose
// own hook failed counts as one failure when none of its tests did; a file that ran no test
// counts as failed and is named in `empty`. `seconds` holds each file's span from its first
// event to its last, as the reporter saw them: where the suite's time goes.

/**
 * @example
 * node --test --test-reporter=spec --test-reporter-destination=stdout \
 *   --test-reporter=./test/reporter.mjs --test-reporter-destination=counts.json a.test.ts
 */
export default async function* countTests(source) {
  const counts = { passed: 0, failed: 0, skipped: 0, empty: [], seconds: {} };
  const span = new Map(); // file -> [first, last] event time
  const tests = new Map(); // file -> tests that ran in it
  const failedLeaves = new Map(); // file -> failed tests in it
  const brokenSuites = []; // suites whose own hook failed: [file, name]
  for await (const event of source) {
    const at = event.data?.file;
    // Files wait in a queue (two run at once): the span starts when one of its tests does.
    if (at && (span.has(at) || event.type === "test:start")) {
      const seen = span.get(at) ?? [Date.now(), 0];
      seen[1] = Date.now();
      span.set(at, seen);
    }
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const { name, file, details, skip, todo } = event.data;
    if (file && name === file) {
      // Node's entry for a whole file: it ran no test of its own (empty or crashed at load).
      if (event.type === "test:fail") counts.failed++;
      else {
        counts.failed++;
        counts.empty.push(file);
      }
      continue;
    }
    if (details?.type === "suite") {
      if (event.type === "test:fail" && details.error?.failureType !== "subtestsFailed") brokenSuites.push([file, name]);
      continue;
    }
    tests.set(file, (tests.get(file) ?? 0) + 1);
    if (event.type === "test:fail") {
      counts.failed++;
      failedLeaves.set(file, (failedLeaves.get(file) ?? 0) + 1);
    } else if (skip !== undefined || todo !== undefined) counts.skipped++;
    else counts.passed++;
  }
  for (const [file, [first, last]] of span) counts.seconds[file] = Math.round((last - first) / 1000);
  for (const [file] of brokenSuites) if (!failedLeaves.get(file)) counts.failed++;
  yield `${JSON.stringify(counts)}\n`;
}
