import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import chromium from "@sparticuz/chromium";
import { type Browser, chromium as playwright } from "playwright-core";

/** Where tests write screenshots (not committed). */
export const OUTPUT_DIR = fileURLToPath(new URL("../../test-output/", import.meta.url));

/**
 * A real headless Chromium (the build @sparticuz/chromium ships in its npm package),
 * driven by playwright-core.
 *
 * @example
 * const browser = await launchBrowser();
 */
export async function launchBrowser(): Promise<Browser> {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  return await playwright.launch({
    executablePath: await chromium.executablePath(),
    // Several pages at once: not the single-process mode the package defaults to for lambdas.
    args: [
      ...chromium.args.filter((a) => a !== "--single-process"),
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
    headless: true,
  });
}
