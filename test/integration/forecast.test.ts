import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type TestApp, testApp } from "../support/app.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";

let pair: TestPair;
let t: TestApp;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, `create table public.notes (id bigint generated always as identity primary key, body text not null)`);
  // Several MB on the primary: what the standby's size jumps by when a backup fills it.
  await pair.primary.admin`insert into public.notes (body) select repeat(md5(g::text), 60) from generate_series(1, 4000) g`;
  t = await testApp(pair);
});
after(async () => {
  await t?.close();
  await pair?.destroy();
});

async function call(method: string, path: string, body?: unknown): Promise<any> {
  const res = await t.request(`/spillway${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = JSON.parse(await res.text());
  assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

// Samples as ticks would have stored them over the last half hour, one a minute.
async function history(name: "primary" | "secondary", bytesAt: (minutesAgo: number) => number): Promise<void> {
  const server = pair[name];
  for (let m = 30; m >= 1; m--) {
    await server.admin`insert into spillway.usage_samples (project, at, used_bytes, quota_bytes)
      values (${name}, now() - make_interval(mins => ${m}), ${Math.round(bytesAt(m))}, 524288000)`;
  }
}

test("after a switch, the new active's forecast leaves out the copy that filled it, and comes from its own growth as soon as it has a minute of samples", async () => {
  // Spillway was installed an hour ago: the primary has been active since.
  for (const server of [pair.primary, pair.secondary]) await server.admin`update spillway.state set since = now() - interval '1 hour'`;
  const [size] = await pair.primary.admin`select pg_database_size('postgres')::int8 as b`;
  const primaryNow = Number(size!.b);
  // The primary grew 1 MB an hour; the standby sat empty at a few MB until the backup.
  await history("primary", (m) => primaryNow - (m * 1024 * 1024) / 60);
  const [small] = await pair.secondary.admin`select pg_database_size('postgres')::int8 as b`;
  await history("secondary", () => Number(small!.b));

  await call("POST", "/tick");
  const before = (await call("GET", "/status")).forecast;
  assert.equal(before.reason, null);
  assert.ok(before.bytesPerHour > 0.5 * 1024 * 1024 && before.bytesPerHour < 2 * 1024 * 1024, `before: ${before.bytesPerHour} B/h`);

  await call("POST", "/force-backup", { mode: "full" });
  await call("POST", "/tick");
  assert.equal((await call("POST", "/force-switch", {})).switch.to, "secondary");
  await call("POST", "/tick");

  const status = await call("GET", "/status");
  assert.equal(status.active, "secondary");
  assert.ok(status.projects.secondary.usedBytes > Number(small!.b) + 2 * 1024 * 1024, "the backup filled the standby");
  assert.equal(status.forecast.bytesPerHour, null, `after: ${status.forecast.bytesPerHour} B/h`);
  assert.equal(status.forecast.backupAt, null);
  assert.match(status.forecast.reason, /^since secondary became active, the samples span \d+ s; a forecast needs 1 min$/);

  // Ninety seconds later: the new active grew 1 MB a minute since it became active.
  const [now] = await pair.secondary.admin`select now() as t`;
  for (const server of [pair.primary, pair.secondary]) {
    await server.admin`update spillway.state set since = ${now!.t}::timestamptz - interval '100 seconds'`;
  }
  const used = status.projects.secondary.usedBytes as number;
  await pair.secondary
    .admin`delete from spillway.usage_samples where project = 'secondary' and at > ${now!.t}::timestamptz - interval '100 seconds'`;
  for (const s of [90, 60, 30, 0]) {
    await pair.secondary.admin`insert into spillway.usage_samples (project, at, used_bytes, quota_bytes)
      values ('secondary', ${now!.t}::timestamptz - make_interval(secs => ${s}), ${used - (s / 60) * 1048576}, 524288000)`;
  }
  const later = (await call("GET", "/status")).forecast;
  assert.equal(later.reason, null);
  assert.equal(later.samples.count, 4);
  assert.equal(later.samples.spanMs, 90_000);
  assert.ok(Math.abs(later.bytesPerHour - 60 * 1048576) < 1024, `${later.bytesPerHour} B/h`);
  assert.ok(later.backupAt !== null);
});
