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

  test("Force backup runs and the last-backup panel updates", async () => {
    assert.match((await page.locator("#last-backup").textContent()) ?? "", /No backup yet/);
    await page.click("#force-backup");
    await page.locator("#last-backup dd[data-field=status]", { hasText: "succeeded" }).waitFor({ timeout: 30_000 });
    // 500 items, and Auth's two users with their identities.
    assert.equal(await page.locator("#last-backup dd[data-field=rows]").textContent(), "504");
    assert.match((await page.locator("#op-result").textContent()) ?? "", /^Backup succeeded: 504 rows/);
  });

  test("a bad settings value shows the field error and saves nothing", async () => {
    const [before] = await pair.primary.admin`select data, version from spillway.settings`;
    await page.fill("#set-backup", "150");
    await page.click("#save-settings");
    await page.locator("#set-backup-err", { hasText: "at most 1" }).waitFor();
    assert.match((await page.locator("#settings-result").textContent()) ?? "", /backupThreshold/);
    const [after] = await pair.primary.admin`select data, version from spillway.settings`;
    assert.deepEqual(after, before);
  });

  test("a quota below the used size is asked about before it is sent with confirm; Cancel saves nothing", async () => {
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

  test("Switch asks to confirm, names the target, and flips the ACTIVE badge", async () => {
    await page.click("#force-switch");
    const dialog = page.locator("dialog#confirm-switch");
    await dialog.waitFor();
    assert.match((await dialog.textContent()) ?? "", /Switch the active project to secondary\?/);
    await page.click("#confirm-switch-yes");
    await page.locator("section.project[data-project=secondary] .role", { hasText: "ACTIVE" }).waitFor({ timeout: 60_000 });
    assert.equal(await page.locator("section.project[data-project=primary] .role").textContent(), "STANDBY");
    assert.match((await page.locator("#op-result").textContent()) ?? "", /secondary is now active \(epoch 2\)/);
  });

  test("after the switch, the last backup panel says the projects are in step instead of showing a 0-row full backup", async () => {
    await page.click("#refresh");
    const lastBackup = page.locator("#last-backup");
    await lastBackup.locator(".in-step").waitFor();
    assert.match((await lastBackup.locator("h2").textContent()) ?? "", /^Last backup to primary$/);
    assert.match(
      (await lastBackup.locator(".in-step").textContent()) ?? "",
      /^In step since the switch: primary held the same data as secondary/,
    );
    assert.equal(await lastBackup.locator("dd[data-field=rows]").count(), 0, "no 0-row full backup shown");
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
      /^no forecast: since secondary became active, (no samples yet|the samples span \d+ min; a forecast needs 10)$/,
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
    const apis = { primary: await startDataApi(pair.urls.primary), secondary: await startDataApi(pair.urls.secondary) };
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
        async ({ statusUrl, primary, secondary }) => {
          const { getActiveClient } = await import("/__test/client.js" as string);
          const projects = { primary: { url: primary, anonKey: "anon-primary" }, secondary: { url: secondary, anonKey: "anon-secondary" } };
          const viaStatus = await getActiveClient({ projects, statusUrl });
          const viaDataApi = await getActiveClient({ projects, cacheTtlMs: 0 });
          const a = await viaStatus.from("items").select("id");
          const b = await viaDataApi.from("spillway_active").select("active,epoch");
          return { count: a.data?.length ?? -1, error: a.error, state: b.data };
        },
        { statusUrl: `${server.url}/spillway`, primary: apis.primary.url, secondary: apis.secondary.url },
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
