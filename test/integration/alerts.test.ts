import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { call, testApp } from "../support/app.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { ITEMS_SCHEMA } from "../support/writers.ts";

const SECRET = "alert-signing-secret-0123456789";
// A webhook URL carries its secret in the path, as Slack's and Discord's do.
const HOOK_PATH = "/hooks/T000-s3cr3t-path-token";

interface Received {
  body: string;
  signature: string | undefined;
}

/** A real HTTP receiver whose answer to each request the test chooses. */
async function receiver(answer: (req: IncomingMessage, res: ServerResponse, n: number) => void) {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({ body: Buffer.concat(chunks).toString("utf8"), signature: req.headers["x-spillway-signature"] as string | undefined });
      answer(req, res, received.length);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${HOOK_PATH}`;
  return {
    url,
    received,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let pair: TestPair;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(pair, ITEMS_SCHEMA);
  await pair.primary.admin`insert into public.items (id, writer) select 'item ' || g, 0 from generate_series(1, 50) g`;
});
after(async () => {
  await pair?.destroy();
});

async function waitFor(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("alerts to a webhook", () => {
  test("a backup's outcome is delivered, signed, in a body Slack and Discord take; /config shows only the host", async () => {
    const hook = await receiver((_req, res) => res.end("ok"));
    const t = await testApp(pair, { alerts: { webhookUrl: hook.url, secret: SECRET } });
    try {
      assert.equal((await call(t, "POST", "/force-backup", { mode: "full" })).status, 200);
      await t.alerts!.idle();
      const kinds = hook.received.map((r) => JSON.parse(r.body).event.kind);
      assert.deepEqual(kinds, ["backup.succeeded"], "backup.started is not an alert; the outcome is");
      const [alert] = hook.received;
      const body = JSON.parse(alert!.body);
      assert.equal(body.text, body.content);
      assert.match(body.text, /^\[spillway\] INFO full backup to secondary finished: \d+ tables, \d+ rows/);
      assert.doesNotMatch(body.text, /\n/);
      assert.equal(body.event.project, "secondary");
      const expected = `sha256=${createHmac("sha256", SECRET).update(alert!.body).digest("hex")}`;
      assert.equal(alert!.signature, expected);

      const config = await call(t, "GET", "/config");
      assert.deepEqual(config.body.alerts, { webhookHost: new URL(hook.url).host, signed: true });
      assert.ok(!JSON.stringify(config.body).includes("s3cr3t"), "the webhook's path never appears");
    } finally {
      await t.close();
      await hook.close();
    }
  });

  test("an alert answered 500 is retried and delivered; one never accepted becomes an alert.failed event without the URL", async () => {
    const flaky = await receiver((_req, res, n) => {
      res.statusCode = n === 1 ? 500 : 200;
      res.end();
    });
    const t = await testApp(pair, { alerts: { webhookUrl: flaky.url, secret: null }, delivery: { retryDelaysMs: [50, 100, 200] } });
    try {
      await t.events.record("warn", "policy.phase", "primary moved from normal to backup: test");
      await t.alerts!.idle();
      assert.equal(flaky.received.length, 2, "one 500, then delivered");
      assert.equal(flaky.received[0]!.body, flaky.received[1]!.body);
      assert.equal(flaky.received[0]!.signature, undefined, "unsigned without a secret");
      assert.ok(!t.sunk.some((e) => e.kind === "alert.failed"));
    } finally {
      await t.close();
      await flaky.close();
    }

    const broken = await receiver((_req, res) => {
      res.statusCode = 503;
      res.end();
    });
    const t2 = await testApp(pair, { alerts: { webhookUrl: broken.url, secret: null }, delivery: { retryDelaysMs: [20, 40] } });
    try {
      await t2.events.record("error", "backup.failed", "full backup to secondary failed: test");
      await t2.alerts!.idle();
      assert.equal(broken.received.length, 3, "three attempts in all");
      const failed = t2.sunk.filter((e) => e.kind === "alert.failed");
      assert.equal(failed.length, 1, "recorded once, and not posted itself");
      assert.match(failed[0]!.message, /backup\.failed .*3 attempt\(s\).*503/);
      const [stored] = await pair.primary.admin`select message, data from spillway.events where kind = 'alert.failed'`;
      assert.ok(stored, "the failure is in the events log");
      assert.ok(!JSON.stringify(stored).includes("s3cr3t") && !JSON.stringify(stored).includes(String(new URL(broken.url).port)));
    } finally {
      await t2.close();
      await broken.close();
    }
  });

  test("a hanging webhook does not slow a switch; the switch's outcome is queued for it", async () => {
    const hanging = await receiver(() => {
      /* never answers */
    });
    const t = await testApp(pair, { alerts: { webhookUrl: hanging.url, secret: SECRET }, delivery: { timeoutMs: 120_000 } });
    try {
      await call(t, "POST", "/force-backup", { mode: "full" });
      await waitFor(() => hanging.received.length === 1, "the backup's alert to reach the hanging webhook");
      const started = Date.now();
      const sw = await call(t, "POST", "/force-switch", {});
      const elapsed = Date.now() - started;
      assert.equal(sw.status, 200, JSON.stringify(sw.body));
      assert.ok(elapsed < 10_000, `the switch took ${elapsed} ms`);
      assert.ok(t.sunk.some((e) => e.kind === "switch.completed"));
      assert.equal(hanging.received.length, 1, "the next alert waits behind the hanging one, off the switch's path");
      const back = await call(t, "POST", "/force-switch", { to: "primary" });
      assert.equal(back.status, 200, JSON.stringify(back.body));
    } finally {
      await t.close();
      await hanging.close();
    }
  });

  test("a project unreachable for more than one tick is alerted once, and again when it is back; health entering degraded once", async () => {
    const hook = await receiver((_req, res) => res.end());
    const t = await testApp(pair, { alerts: { webhookUrl: hook.url, secret: null } });
    const kinds = () => hook.received.map((r) => JSON.parse(r.body).event.kind as string).filter((k) => k.startsWith("project."));
    const health = () => hook.received.map((r) => JSON.parse(r.body)).filter((b) => b.event.kind === "health.changed");
    try {
      await call(t, "POST", "/tick");
      await pair.secondary.stop();
      await call(t, "POST", "/tick");
      await t.alerts!.idle();
      assert.deepEqual(kinds(), [], "one tick may be a blip");
      await call(t, "POST", "/tick");
      await call(t, "POST", "/tick");
      await t.alerts!.idle();
      assert.deepEqual(kinds(), ["project.unreachable"], "told once, not every tick");
      const down = JSON.parse(hook.received.find((r) => r.body.includes("project.unreachable"))!.body);
      assert.match(down.text, /secondary has been unreachable for 2 ticks in a row/);
      assert.deepEqual(
        health().map((b) => b.event.data.state),
        ["degraded"],
        "on entering degraded, once over three ticks",
      );
      assert.match(health()[0].text, /^\[spillway\] WARN health is degraded \(was ok\): secondary \(standby\) cannot be reached/);
      await pair.secondary.restart();
      await call(t, "POST", "/tick");
      await t.alerts!.idle();
      assert.deepEqual(kinds(), ["project.unreachable", "project.reachable"]);
      assert.equal(health().length, 1, "back to ok is an event, not an alert");
      assert.ok(t.sunk.some((e) => e.kind === "health.changed" && e.data.state === "ok"));
    } finally {
      await t.close();
      await hook.close();
    }
  });
});
