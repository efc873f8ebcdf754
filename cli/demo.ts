import { randomBytes } from "node:crypto";
import postgres, { type Sql } from "postgres";
import { PG } from "../functions/errors.ts";
import { PROJECT_NAMES, type ProjectName } from "../functions/names.ts";
import type { Projects } from "../functions/project.ts";
import { patchSettings } from "../functions/settings.ts";
import { measure } from "../functions/usage.ts";

/** Usage the demo starts the primary at: below the backup threshold, with a visible way to go. */
const START_USAGE = 0.75;
/** Seconds the writer should take from the start to the switch threshold. */
const SECONDS_TO_SWITCH = 75;
/** How long the writer carries on against the new active before it stops. */
const AFTER_SWITCH_MS = 60_000;
const WRITE_EVERY_MS = 250;
/** Bytes a demo order adds to the table, roughly (an incompressible note, under TOAST's threshold). */
const ORDER_BYTES = 1_200;

/** What the demo writer did. */
export interface DemoReport {
  writes: number;
  /** Writes refused by the fence during the switch, then sent again to the new active. */
  heldByFence: number;
  failed: number;
  /** The projects the writer wrote to, in order. */
  wroteTo: ProjectName[];
}

/**
 * How the demo sizes its quotas: the primary starts at `START_USAGE` of its quota; the
 * secondary gets room to take the primary's data and keep growing well under its own
 * thresholds. Pure, so the demo's pace can be checked without running it.
 *
 * @example
 * demoPlan(8_000_000) // { quotaBytes: { primary: 10666666, secondary: 42666664 }, bytesPerSecond: 21334 }
 */
export function demoPlan(primaryUsedBytes: number): { quotaBytes: Record<ProjectName, number>; bytesPerSecond: number } {
  const primary = Math.floor(primaryUsedBytes / START_USAGE);
  const toSwitch = (0.9 - START_USAGE) * primary;
  return { quotaBytes: { primary, secondary: primary * 4 }, bytesPerSecond: Math.ceil(toSwitch / SECONDS_TO_SWITCH) };
}

/**
 * Starts the demo on a running local server: sets quotas from `demoPlan` and a writer that
 * adds orders to the active project until a minute after the switch. The writer finds the
 * active project as an app does (`GET /active`), and a write refused by the fence (SQLSTATE
 * SPWFN) is held, then sent again once the new active is published: no write fails.
 *
 * @example
 * const demo = await startDemo({ serverUrl, dbUrls, projects, print: console.log });
 */
export async function startDemo(options: {
  serverUrl: string;
  dbUrls: Record<ProjectName, string>;
  projects: Projects;
  print: (line: string) => void;
}): Promise<{ finished: Promise<DemoReport>; stop(): Promise<DemoReport> }> {
  const { print } = options;
  const plan = demoPlan((await measure(options.projects.primary)).usedBytes);
  await patchSettings(options.projects, { quotaBytes: plan.quotaBytes });
  print(
    `Demo: the primary's quota is ${mb(plan.quotaBytes.primary)} (it starts at ${Math.round(START_USAGE * 100)} %); a writer adds about ${Math.round(plan.bytesPerSecond / 1024)} KB/s of orders.`,
  );
  print(
    `Demo: watch the widget: a backup at 85 %, the switch at 90 % (in about ${Math.round((SECONDS_TO_SWITCH / 60) * 2) / 2} minutes), and the writer carrying on.`,
  );

  const pools = Object.fromEntries(PROJECT_NAMES.map((n) => [n, postgres(options.dbUrls[n], { max: 1, onnotice: () => {} })])) as Record<
    ProjectName,
    Sql
  >;
  const report: DemoReport = { writes: 0, heldByFence: 0, failed: 0, wroteTo: [] };
  const rowsPerWrite = Math.max(1, Math.round((plan.bytesPerSecond * WRITE_EVERY_MS) / 1000 / ORDER_BYTES));
  let stopped = false;
  let ended = false;
  let switchedAt: number | null = null;
  let active: ProjectName | null = null;

  const askActive = async (): Promise<{ active: ProjectName; epoch: number }> => {
    const res = await fetch(`${options.serverUrl}/spillway/active`);
    if (!res.ok) throw new Error(`GET /active answered ${res.status}`);
    return (await res.json()) as { active: ProjectName; epoch: number };
  };

  // One order batch, held and sent again while the fence refuses it, as getActiveClient does.
  const writeOnce = async () => {
    for (;;) {
      const target = await askActive();
      if (target.active !== active) {
        if (active !== null) {
          switchedAt = Date.now();
          print(
            `Demo writer: now writing to ${target.active} (epoch ${target.epoch}); ${report.writes} writes so far, ${report.heldByFence} held by the fence and sent again, ${report.failed} failed.`,
          );
        }
        active = target.active;
        report.wroteTo.push(active);
      }
      try {
        await pools[active].begin(
          "read write",
          (tx) => tx`
          insert into public.orders (customer_id, total_cents, items)
          select (select min(id) from public.customers), 100 + g, jsonb_build_array(jsonb_build_object('sku', 'DEMO', 'note', ${randomBytes(ORDER_BYTES / 2).toString("hex")}::text || g))
          from generate_series(1, ${rowsPerWrite}) g`,
        );
        report.writes++;
        return;
      } catch (e) {
        if ((e as { code?: string }).code !== PG.fenced) throw e;
        report.heldByFence++;
        await sleep(200);
      }
    }
  };

  const summary = () =>
    `Demo writer: done, ${report.writes} writes (${report.heldByFence} held by the fence and sent again), ${report.failed} failed.`;
  const finished = (async () => {
    while (!stopped && (switchedAt === null || Date.now() - switchedAt < AFTER_SWITCH_MS)) {
      const started = Date.now();
      try {
        await writeOnce();
      } catch (e) {
        report.failed++;
        print(`Demo writer: a write failed: ${(e as Error).message}`);
      }
      await sleep(Math.max(0, WRITE_EVERY_MS - (Date.now() - started)));
    }
    await Promise.all(PROJECT_NAMES.map((n) => pools[n].end({ timeout: 1 })));
    ended = true;
    if (!stopped) print(`${summary()} Spillway keeps running; Ctrl-C stops it.`);
    return report;
  })();

  return {
    finished,
    async stop() {
      // Said at once: a Ctrl-C also reaches the embedded servers, whose exit hook may end
      // the process before the last write returns.
      if (!stopped && !ended) print(summary());
      stopped = true;
      return await finished;
    },
  };
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
