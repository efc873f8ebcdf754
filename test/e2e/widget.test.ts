import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type { Browser, Page } from "playwright-core";
import { freePort, type RunningServer, startServer } from "../../cli/server.ts";
import { ADMIN_TOKEN, CRON_TOKEN } from "../support/app.ts";
import { launchBrowser, OUTPUT_DIR } from "../support/browser.ts";
import { installAuth, signUp } from "../support/gotrue.ts";
import { applyToBoth, startTestPair, type TestPair } from "../support/postgres.ts";
import { startDataApi } from "../support/postgrest.ts";

// Each project's JWT secret, which its Data API stand-in verifies tokens with.
const JWT_SECRETS = { primary: "the-primary-projects-jwt-secret-0123456789", secondary: "the-secondary-projects-jwt-secret-0123456789" };

const root = fileURLToPath(new URL("../../", import.meta.url));
let pair: TestPair;
let server: RunningServer;
let browser: Browser;

before(async () => {
  pair = await startTestPair();
  await applyToBoth(
    pair,
    `create table public.items (id text primary key, writer integer not null); grant select, insert on public.items to anon`,
  );
  await pair.primary.admin`insert into public.items select 'item-' || g, g from generate_series(1, 500) g`;
  // Supabase Auth's tables, by the stand-in (see test/support/gotrue.ts), with two users on the primary.
  await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
  for (const who of ["ana", "ben"]) await signUp(pair.primary, `${who}@example.com`, `pw-${who}`);
  server = await startServer({
    dbUrls: pair.urls,
    adminToken: ADMIN_TOKEN,
    cronToken: CRON_TOKEN,
    corsOrigins: ["*"],
    port: await freePort(),
    dataDir: `${pair.primary.dir}/../data-dir`,
    tickSeconds: 3600,
  });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.close();
  await pair?.destroy();
});

async function api(method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${server.url}/spillway${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

// Each state at a desktop's width and a phone's, looked at by a person (not committed).
async function shoot(page: Page, state: string) {
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: width === 390 ? 844 : 900 });
    await page.evaluate(() => (document.querySelector("spillway-widget") as any).render());
    await page.screenshot({ path: join(OUTPUT_DIR, `widget-${state}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.evaluate(() => (document.querySelector("spillway-widget") as any).render());
}

const text = async (page: Page, selector: string) => (await page.locator(selector).textContent()) ?? "";

async function connect(page: Page, token: string) {
  await page.goto(`${server.url}/`);
  await page.fill("#token", token);
  assert.equal(await page.inputValue("#api"), `${server.url}/spillway`);
  await page.click("button[type=submit]");
}

describe("the dashboard widget in real Chromium against the real local server", () => {
  let page: Page;
  before(async () => {
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await connect(page, ADMIN_TOKEN);
  });

  test("both projects' figures are shown", async () => {
    for (const name of ["primary", "secondary"]) {
      const card = page.locator(`section.project[data-project=${name}]`);
      await card.locator(".used").waitFor();
      assert.match((await card.locator(".used").textContent()) ?? "", /^\d+(\.\d)? MB of 500\.0 MB$/);
      assert.match((await card.locator(".usage").textContent()) ?? "", /^\d+\.\d %$/);
    }
    assert.equal(await page.locator("section.project[data-project=primary] .role").textContent(), "ACTIVE");
    assert.equal(await page.locator("section.project[data-project=secondary] .role").textContent(), "STANDBY");
    assert.ok(!(await page.content()).includes(ADMIN_TOKEN), "the token is not in the page's URL or markup");
    assert.ok(!page.url().includes(ADMIN_TOKEN));
  });

  test("each project's Auth user count is shown", async () => {
    assert.equal(await page.locator("section.project[data-project=primary] .users").textContent(), "2 users in Auth");
    assert.equal(await page.locator("section.project[data-project=secondary] .users").textContent(), "0 users in Auth");
  });

  test("each project's Storage and Realtime state is shown", async () => {
    // This server is given no Storage API: the card says so rather than saying nothing.
    assert.match(
      (await page.locator("section.project[data-project=primary] .storage").textContent()) ?? "",
      /^Storage not carried: SPILLWAY_PRIMARY_API_URL/,
    );
    assert.equal(await page.locator("section.project[data-project=secondary] .realtime").textContent(), "Realtime: no publication");
  });

  test("health comes first in the header; with no backup yet it says a switch would be refused, and what makes one", async () => {
    assert.equal(await page.locator("header > *").nth(1).getAttribute("id"), "health");
    assert.equal(await text(page, "#health"), "health: degraded");
    assert.match(
      await text(page, "#health-reasons li"),
      /^a switch to secondary would be refused: the standby has no completed backup of the active; a backup \(Force backup\) makes one$/,
    );
    assert.match(await text(page, "#updated"), / · every 30 s$/, "in the normal phase, the page refreshes at its refresh attribute");
  });

  test("Force backup asks to confirm with the standby's usage after it, runs, and the last-backup panel updates", async () => {
    assert.match((await page.locator("#last-backup").textContent()) ?? "", /No backup yet/);
    await page.click("#force-backup");
    await page.locator("dialog#confirm-backup").waitFor();
    assert.match(await text(page, "#backup-after"), /^After it secondary will be at \d+\.\d % of its quota \(\d+\.\d MB of 500\.0 MB\)\.$/);
    await page.click("#confirm-backup-yes");
    await page.locator("#last-backup dd[data-field=status]", { hasText: "succeeded" }).waitFor({ timeout: 30_000 });
    // 500 items, and Auth's two users with their identities.
    assert.equal(await page.locator("#last-backup dd[data-field=rows]").textContent(), "504");
    assert.match((await page.locator("#op-result").textContent()) ?? "", /^Backup succeeded: 504 rows/);
    await page.locator("#health", { hasText: "health: ok" }).waitFor();
    assert.match(
      await text(page, "section.project[data-project=secondary] .after-switch"),
      /^After a switch: \d+\.\d % \(\d+\.\d MB\), \d+\.\d MB below its switch threshold/,
    );
    await shoot(page, "normal");
  });

  test("a bad settings value keeps what was typed and shows the error under its field in the form's words; saves nothing", async () => {
    const [before] = await pair.primary.admin`select data, version from spillway.settings`;
    await page.fill("#set-backup", "150");
    await page.click("#save-settings");
    await page.locator("#set-backup-err", { hasText: "Must be at most 100 %" }).waitFor();
    assert.equal(await page.inputValue("#set-backup"), "150", "the typed value stays");
    assert.equal(await text(page, "#settings-result"), "Not saved: one field needs a change (see below).");
    // Two settings at odds: the error sits under both, with the values as typed.
    await page.fill("#set-backup", "95");
    await page.fill("#set-switch", "90");
    await page.click("#save-settings");
    await page.locator("#set-switch-err", { hasText: "must be below" }).waitFor();
    for (const id of ["#set-backup-err", "#set-switch-err"]) {
      assert.equal(await text(page, id), "The backup threshold (95 %) must be below the switch threshold (90 %)");
    }
    assert.equal(await page.inputValue("#set-backup"), "95");
    assert.doesNotMatch(await text(page, "form.settings"), /Threshold|quotaBytes/, "no internal names");
    const [after] = await pair.primary.admin`select data, version from spillway.settings`;
    assert.deepEqual(after, before);
  });

  test("a quota below the used size is asked about before it is sent with confirm; Cancel saves nothing", async () => {
    // The thresholds as stored: the last test left the form holding what was typed.
    await page.fill("#set-backup", "85");
    await page.fill("#set-switch", "90");
    const [before] = await pair.primary.admin`select data, version from spillway.settings`;
    await page.fill("#set-qp", "1");
    await page.click("#save-settings");
    const dialog = page.locator("dialog#confirm-consequence");
    await dialog.waitFor();
    assert.match((await dialog.textContent()) ?? "", /quotaBytes\.primary \(1048576 bytes\) is below what primary uses now/);
    await page.click("#confirm-consequence-no");
    await page.locator("#settings-result", { hasText: "Cancelled; nothing changed." }).waitFor();
    assert.deepEqual((await pair.primary.admin`select data, version from spillway.settings`)[0], before);
    await page.fill("#set-qp", "1");
    await page.click("#save-settings");
    await page.click("#confirm-consequence-yes");
    await page.locator("#settings-result", { hasText: "Settings saved." }).waitFor();
    const [after] = await pair.primary.admin`select data from spillway.settings`;
    assert.equal(after!.data.quotaBytes.primary, 1048576);
    // Back to 500 MB from the form: a quota above the used size is saved without asking.
    await page.fill("#set-qp", "500");
    await page.click("#save-settings");
    const until = Date.now() + 10_000;
    while ((await pair.primary.admin`select data from spillway.settings`)[0]!.data.quotaBytes.primary !== 524288000) {
      assert.ok(Date.now() < until, "the quota was not saved back");
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  test("in the backup phase the page refreshes itself every 2 s, and says when the threshold was crossed", async () => {
    const status = await api("GET", "/status");
    const quota = Math.floor(status.projects.primary.usedBytes / 0.87);
    await api("PATCH", "/config", { quotaBytes: { primary: quota, secondary: quota * 4 } });
    await api("POST", "/tick");
    await page.click("#refresh");
    await page.locator(".badge", { hasText: "phase: backup" }).waitFor();
    assert.match(await text(page, "#updated"), / · every 2 s$/);
    // No click: the next refresh comes by itself.
    const shown = await text(page, "#updated");
    await page.locator("#updated", { hasNotText: shown }).waitFor({ timeout: 5_000 });
    assert.match(await text(page, "dd[data-field=backup-at]"), /^crossed at /);
    await shoot(page, "backup-phase");
  });

  test("equal quotas: the header says a switch buys nothing and what fixes it; the switch dialog says it would be refused, and forces only once the target's name is typed", async () => {
    const { afterSwitch, projects } = await api("GET", "/status");
    // The standby on the same plan: after a switch it would be over its switch threshold.
    await api("PATCH", "/config", {
      quotaBytes: { primary: projects.primary.quotaBytes, secondary: Math.floor(afterSwitch.usedBytes / 0.93) },
    });
    await api("POST", "/tick");
    await page.click("#refresh");
    await page.locator("#health-reasons li[data-code=switch_refused]").waitFor();
    assert.match(
      await text(page, "#health-reasons li[data-code=switch_refused]"),
      /^a switch to secondary would be refused: the standby would be at 93\.\d % after a switch, at or over its switch threshold\. What makes room: a larger plan for secondary/,
    );
    await shoot(page, "no-headroom");

    await page.click("#force-switch");
    await page.locator("dialog#confirm-switch").waitFor();
    assert.match(await text(page, "#switch-after"), /^After the switch secondary will be at 93\.\d % of its quota/);
    assert.match(await text(page, "#switch-refused"), /^This switch would be refused: the standby would be at 93\.\d %/);
    assert.equal(await page.locator("#confirm-switch-yes").count(), 0, "no plain switch button");
    assert.equal(await page.isDisabled("#confirm-switch-force"), true);
    await page.fill("#force-name", "second");
    assert.equal(await page.isDisabled("#confirm-switch-force"), true);
    await page.fill("#force-name", "secondary");
    assert.equal(await page.isDisabled("#confirm-switch-force"), false);

    // An app transaction open on the primary holds the fence: the switch stays under way.
    const app = await pair.primary.admin.reserve();
    await app`begin`;
    await app`update public.items set writer = writer where id = 'item-1'`;
    const sent = page.waitForRequest((r) => r.url().endsWith("/force-switch"));
    await page.click("#confirm-switch-force");
    assert.deepEqual((await sent).postDataJSON(), { to: "secondary", force: true });
    await page.locator("#under-way", { hasText: "Switch under way" }).waitFor();
    assert.match(await text(page, "#updated"), / · every 2 s$/);
    await shoot(page, "switching");
    await app`commit`;
    app.release();
    await page.locator("section.project[data-project=secondary] .role", { hasText: "ACTIVE" }).waitFor({ timeout: 60_000 });
    assert.equal(await page.locator("section.project[data-project=primary] .role").textContent(), "STANDBY");
    assert.match((await page.locator("#op-result").textContent()) ?? "", /secondary is now active \(epoch 2\)/);
    await api("PATCH", "/config", { quotaBytes: { primary: 524288000, secondary: 524288000 } });
  });

  test("after the switch, the last backup panel says the projects are in step instead of showing a 0-row full backup", async () => {
    await page.click("#refresh");
    const lastBackup = page.locator("#last-backup");
    await lastBackup.locator(".in-step").waitFor();
    assert.match((await lastBackup.locator("h2").textContent()) ?? "", /^Last backup to primary$/);
    assert.match(
      (await lastBackup.locator(".in-step").textContent()) ?? "",
      /^In step at the switch: primary held the same data as secondary/,
    );
    assert.equal(await lastBackup.locator("dd[data-field=rows]").count(), 0, "no 0-row full backup shown");
    await shoot(page, "after-switch");
  });

  test("switch and backup outcomes stand out in the events list", async () => {
    const done = page.locator(".events li[data-kind='switch.completed']");
    await done.waitFor();
    assert.match((await done.getAttribute("class")) ?? "", /\boutcome ok\b/);
    assert.equal(await done.locator(".tag").textContent(), "SWITCH");
    const backupDone = page.locator(".events li[data-kind='backup.succeeded']").first();
    assert.equal(await backupDone.locator(".tag").textContent(), "BACKUP");
    const plain = page.locator(".events li[data-kind='switch.started']");
    const background = (l: typeof plain) => l.evaluate((n) => getComputedStyle(n).backgroundColor);
    assert.notEqual(await background(done), await background(plain), "an outcome looks unlike a plain line");
  });

  test("the forecast is not drawn from seconds of samples, and says why", async () => {
    assert.match(
      (await page.locator("dd[data-field=growth]").textContent()) ?? "",
      /^no forecast yet: since secondary became active, (no samples yet|the samples span \d+ s; a forecast needs 1 min)$/,
    );
  });

  test("the 85 % and 90 % labels of the usage chart do not overlap", async () => {
    const box = (label: string) =>
      page.locator("svg text", { hasText: label }).evaluate((n) => {
        const r = n.getBoundingClientRect();
        return { top: r.top, bottom: r.bottom };
      });
    const [b85, s90] = [await box("85%"), await box("90%")];
    assert.ok(s90.bottom <= b85.top, `the 90 % label (${s90.top}-${s90.bottom}) and the 85 % label (${b85.top}-${b85.bottom}) overlap`);
  });

  test("at 390 px the chart's labels are at least 11 px tall, with a time axis and both projects' lines", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.evaluate(() => (document.querySelector("spillway-widget") as any).render());
    const labels = await page
      .locator("svg text")
      .evaluateAll((nodes) => nodes.map((n) => ({ text: n.textContent, height: n.getBoundingClientRect().height })));
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.evaluate(() => (document.querySelector("spillway-widget") as any).render());
    for (const l of labels) assert.ok(l.height >= 11, `"${l.text}" is ${l.height} px tall`);
    const texts = labels.map((l) => l.text);
    assert.ok(texts.includes("backup 85%") && texts.includes("switch 90%"), texts.join(", "));
    assert.ok(texts.filter((t) => /^\d{1,2}:\d{2}/.test(t ?? "")).length >= 2, `a time axis: ${texts.join(", ")}`);
    assert.equal(await page.locator("svg path[data-project]").count(), 2);
    assert.match(await text(page, ".legend"), /secondary \(active\).*primary \(standby\)/);
  });

  test("with the standby unreachable, health says so first", async () => {
    await pair.primary.stop();
    try {
      await page.click("#refresh");
      await page.locator("#health-reasons li[data-code=standby_unreachable]").waitFor({ timeout: 30_000 });
      assert.match(await text(page, "#health"), /^health: (degraded|critical)$/);
      assert.match(await text(page, "#health-reasons li[data-code=standby_unreachable]"), /^primary \(standby\) cannot be reached/);
      await shoot(page, "standby-unreachable");
    } finally {
      await pair.primary.restart();
    }
    await page.click("#refresh");
    await page.locator("section.project[data-project=primary] .muted", { hasText: "reachable" }).waitFor({ timeout: 30_000 });
  });

  test("the strategy selector's text is not cut at 1280 px", async () => {
    const cut = await page.locator("#set-strategy").evaluate((select) => {
      const s = select as HTMLSelectElement;
      const style = getComputedStyle(s);
      const ctx = document.createElement("canvas").getContext("2d")!;
      ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
      // Text, the select's own padding and border, and its drop-down arrow.
      const room = s.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 24;
      return [...s.options].map((o) => ({ text: o.text, need: ctx.measureText(o.text).width, room })).filter((o) => o.need > o.room);
    });
    assert.deepEqual(cut, [], "every strategy fits its selector at 1280 px");
  });

  test("the sessions setting is offered, shows the stored value and saves", async () => {
    const label = page.locator("label[for=set-auth-sessions]");
    assert.match((await label.textContent()) ?? "", /Keep users signed in across a switch/);
    assert.equal(await page.isChecked("#set-auth-sessions"), false);
    await page.fill("#set-backup", "85");
    await page.check("#set-auth-sessions");
    await page.click("#save-settings");
    await page.locator("#settings-result.ok").waitFor();
    const [row] = await pair.primary.admin`select data->'authSessions' as on from spillway.settings`;
    assert.equal(row!.on, true);
    await page.click("#refresh");
    await page.locator("#set-auth-sessions:checked").waitFor();
  });

  test("the strategy selector shows the stored strategy, auto included", async () => {
    const res = await fetch(`${server.url}/spillway/config`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    const { settings } = (await res.json()) as { settings: { strategy: string } };
    assert.equal(settings.strategy, "auto");
    assert.equal(await page.inputValue("#set-strategy"), settings.strategy);
  });

  test("screenshots at 1280 px and 390 px after the switch, with nothing wider than the screen", async () => {
    await page.screenshot({ path: join(OUTPUT_DIR, "widget-1280.png"), fullPage: true });
    const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
    await connect(phone, ADMIN_TOKEN);
    await phone.locator("section.project[data-project=secondary] .used").waitFor();
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than the phone`);
    await phone.screenshot({ path: join(OUTPUT_DIR, "widget-390.png"), fullPage: true });
    await phone.close();
  });

  test("a wrong token shows the token prompt", async () => {
    const other = await browser.newPage();
    await connect(other, "not-the-admin-token-123");
    await other.locator("#token-prompt").waitFor();
    assert.match((await other.locator("#token-prompt").textContent()) ?? "", /The admin token was refused/);
    await other.fill("#token-input", ADMIN_TOKEN);
    await other.click("#token-prompt button[type=submit]");
    await other.locator("section.project[data-project=primary] .used").waitFor();
    assert.equal(await other.evaluate(() => sessionStorage.getItem("spillway.token")), ADMIN_TOKEN);
    await other.close();
  });
});

describe("getActiveClient() in the browser", () => {
  test("a page imports the client bundle and reads through it from the active project", async () => {
    const bundle = await build({
      entryPoints: [join(root, "client/index.ts")],
      bundle: true,
      format: "esm",
      platform: "browser",
      write: false,
      logLevel: "silent",
    });
    const apis = {
      primary: await startDataApi(pair.urls.primary, JWT_SECRETS.primary),
      secondary: await startDataApi(pair.urls.secondary, JWT_SECRETS.secondary),
    };
    const page = await browser.newPage();
    try {
      await page.route(`${server.url}/__test/client.js`, (route) =>
        route.fulfill({ body: bundle.outputFiles[0]!.text, contentType: "text/javascript" }),
      );
      await page.route(`${server.url}/__test/page.html`, (route) =>
        route.fulfill({ body: "<!doctype html><title>app</title>", contentType: "text/html" }),
      );
      await page.goto(`${server.url}/__test/page.html`);
      const result = await page.evaluate(
        async ({ statusUrl, primary, secondary, keys }) => {
          const { getActiveClient } = await import("/__test/client.js" as string);
          const projects = { primary: { url: primary, anonKey: keys[0] }, secondary: { url: secondary, anonKey: keys[1] } };
          const viaStatus = await getActiveClient({ projects, statusUrl });
          const viaDataApi = await getActiveClient({ projects, cacheTtlMs: 0 });
          const a = await viaStatus.from("items").select("id");
          const b = await viaDataApi.from("spillway_active").select("active,epoch");
          return { count: a.data?.length ?? -1, error: a.error, state: b.data };
        },
        {
          statusUrl: `${server.url}/spillway`,
          primary: apis.primary.url,
          secondary: apis.secondary.url,
          keys: [apis.primary.anonKey, apis.secondary.anonKey],
        },
      );
      assert.equal(result.error, null);
      assert.equal(result.count, 500);
      assert.deepEqual(result.state, [{ active: "secondary", epoch: 2 }]);
    } finally {
      await page.close();
      await apis.primary.close();
      await apis.secondary.close();
    }
  });
});
