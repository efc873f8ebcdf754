import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { renewLease, takeLease, type Lease } from "./lease.ts";
import { onProject, probe, type Project, type Projects } from "./project.ts";
import { other, type ProjectName } from "./names.ts";
import { readSettings, type Runtime, type Settings } from "./settings.ts";
import { readActive } from "./state.ts";
import { latestRun, type Run } from "./runs.ts";
import { measure } from "./usage.ts";
import { runBackup } from "./backup.ts";
import { discardStaging } from "./backup/staged.ts";
import { settle } from "./settle.ts";
import { changeCounter } from "./status.ts";
import { readCatalog } from "./backup/catalog.ts";
import { dropOtherSlots, dropSlot, newSlotName, prepareCapture, tableSet, writePosition } from "./backup/incremental.ts";

/** What `POST /force-switch` asks for. */
export interface SwitchRequest {
  to?: ProjectName;
  force: boolean;
}

/** The answer of a switch. */
export interface SwitchResult {
  from: ProjectName;
  to: ProjectName;
  epoch: number;
  durationMs: number;
  writesBlockedMs: number;
  /** Only on the forced path with the active unreachable: the target may lack changes since then. */
  dataLossSince?: string | null;
}

/** The steps of a switch, as named to `hooks.step`. */
export type SwitchStep = "pre-caught-up" | "fenced" | "caught-up" | "published-target" | "published";

interface Context {
  projects: Projects;
  events: EventLog;
  runtime?: Runtime;
  /** Called after each step; the crash tests end the process there. */
  hooks?: { step(name: SwitchStep): void | Promise<void> };
}

const LEASE_SECONDS = 120;
/** How long an operator's request waits for a running tick to give the lease back. */
const OPERATOR_WAIT_MS = 10_000;
const IN_FLIGHT_WAIT_MS = 10_000;

/**
 * Switches the active project: fence the active (app writes fail at once with SQLSTATE
 * SPWFN), wait for transactions already in flight there, catch the target up, publish the
 * new state (new active, epoch + 1) in the target first, then in the old active, which stays
 * fenced. The same operation fails back. Refuses with 409 `TARGET_UNFIT` when the target is
 * unreachable, has never received a backup, or would be at or over its switch threshold
 * (`force` overrides only the last); with the active unreachable it needs `force` and says
 * how far behind the target may be.
 *
 * @example
 * const result = await switchOver({ projects, events }, { force: false });
 */
export async function switchOver(ctx: Context, request: SwitchRequest, heldLease?: Lease): Promise<SwitchResult> {
  const lease = heldLease ?? await takeLease(ctx.projects, "switch", LEASE_SECONDS, { waitMs: OPERATOR_WAIT_MS });
  const renew = setInterval(() => void renewLease(ctx.projects, lease, LEASE_SECONDS).catch(() => undefined), (LEASE_SECONDS / 3) * 1000);
  try {
    await settle(ctx.projects, ctx.events).catch(() => undefined);
    return await switchUnderLease(ctx, request, lease);
  } finally {
    clearInterval(renew);
    if (!heldLease) await lease.release();
  }
}

async function switchUnderLease(ctx: Context, request: SwitchRequest, lease: Lease): Promise<SwitchResult> {
  const { projects, events } = ctx;
  const started = Date.now();
  const state = await readActive(projects);
  const from = state.active;
  const to = request.to ?? other(from);
  if (to === from) throw unfit(`${to} is already the active project (epoch ${state.epoch})`);
  const source = projects[from];
  const target = projects[to];
  const { settings } = await readSettings(projects);

  if ((await probe(target)) !== null) {
    await events.record("error", "switch.refused", `switch to ${to} refused: ${to} is unreachable`, { project: to });
    throw unfit(`${to} is unreachable`);
  }
  const lastBackup = await latestRun(target.sql, "succeeded");
  if (!lastBackup || lastBackup.source !== from) {
    await events.record("error", "switch.refused", `switch to ${to} refused: no backup from ${from} has completed to it`, { project: to });
    throw unfit(`no backup from ${from} has ever completed to ${to}; run a backup first`);
  }
  const sourceUp = (await probe(source)) === null;
  if (!sourceUp && !request.force) {
    throw new SpillwayError("PROJECT_UNREACHABLE", 503,
      `the active project ${from} is unreachable; force: true switches to ${to} anyway, which may lose the changes made on ${from} since its last backup (${lastBackup.snapshotAt})`,
      { project: from, lastBackupAt: lastBackup.snapshotAt });
  }
  if (sourceUp) {
    const after = await usageAfterSwitch(source, target, settings);
    if (after >= settings.switchThreshold && !request.force) {
      await events.record("warn", "switch.refused", `switch to ${to} refused: its usage after the switch would be ${(after * 100).toFixed(1)} %, at or over its switch threshold`, { project: to });
      throw unfit(`${to} would be at ${(after * 100).toFixed(1)} % of its quota after the switch, at or over its switch threshold of ${(settings.switchThreshold * 100).toFixed(0)} % (force: true overrides this)`, { usageAfterSwitch: after });
    }
  }

  const epoch = state.epoch + 1;
  await events.record("info", "switch.started", `switch from ${from} to ${to} started (epoch ${state.epoch} → ${epoch})${request.force ? ", forced" : ""}`, { project: to });

  if (!sourceUp) {
    await publish(projects, { from, to, epoch, sourceReachable: false, lease });
    const lagSeconds = lastBackup.snapshotAt ? Math.round((Date.now() - Date.parse(lastBackup.snapshotAt)) / 1000) : null;
    await events.record("warn", "switch.forced", `${to} is active at epoch ${epoch} without a final catch-up: ${from} was unreachable; changes made on ${from} after ${lastBackup.snapshotAt} (${lagSeconds} s before the switch) may be missing`, {
      project: to, data: { dataLossSince: lastBackup.snapshotAt, lagSeconds },
    });
    return { from, to, epoch, durationMs: Date.now() - started, writesBlockedMs: 0, dataLossSince: lastBackup.snapshotAt };
  }

  await onProject(source, (sql) => sql.begin(async (tx) => {
    await tx`set local lock_timeout = '5s'`;
    await tx`select spillway.ensure_fence(${settings.schemas})`;
  }));
  // Catch up while apps still write, so that the catch-up behind the fence is a short one.
  await runBackup(ctx, { mode: "auto", verify: false, continuable: false }, lease);
  await ctx.hooks?.step("pre-caught-up");
  const fencedAt = Date.now();
  const fenced = await source.sql.begin("read write", (tx) => tx`
    update spillway.state set fenced = true, fenced_for = ${to}, fenced_epoch = ${epoch}, updated_at = now()
    where id and active = ${from} and epoch = ${state.epoch} returning 1`);
  if (fenced.length !== 1) throw new SpillwayError("BUSY", 409, "the state changed while the switch was starting; try again");
  await events.record("info", "switch.fenced", `${from} is fenced: app writes now fail until ${to} is active`, { project: from });
  await ctx.hooks?.step("fenced");

  let run: Run;
  let newSlot: string | null = null;
  try {
    await waitForInFlight(source, fencedAt);
    run = await runBackup(ctx, { mode: "auto", verify: false, continuable: false }, lease);
    await ctx.hooks?.step("caught-up");
    // No app writes reach either project now: a slot made on the new active starts exactly
    // at what the old active holds, so backups the other way can be incremental at once.
    newSlot = await startReverseCapture(projects, { from, to, settings });
    await publish(projects, { from, to, epoch, sourceReachable: true, lease, hooks: ctx.hooks });
    await ctx.hooks?.step("published");
  } catch (e) {
    // Nothing was published: the old active is still the active one; lift its fence.
    await onProject(source, (sql) => sql.begin("read write", (tx) => tx`
      update spillway.state set fenced = false, fenced_for = null, fenced_epoch = null, updated_at = now()
      where id and active = ${from} and epoch = ${state.epoch}`)).catch(() => undefined);
    if (newSlot) await dropSlot(target, newSlot).catch(() => undefined);
    await events.record("error", "switch.failed", `switch from ${from} to ${to} failed and was rolled back (${from} stays active, unfenced): ${describeError(e)}`, { project: to });
    throw e;
  }
  const writesBlockedMs = Date.now() - fencedAt;
  await recordSwitchCopy(projects, { from, to, settings }).catch(() => undefined);
  // The old active feeds no backups any more: its slots would only hold WAL.
  await dropOtherSlots(source, from, to, null).catch(() => undefined);
  // A full backup staged on the new active has nothing left to feed.
  await discardStaging(target).catch(() => undefined);
  const durationMs = Date.now() - started;
  await events.record("info", "switch.completed", `${to} is the active project (epoch ${epoch}); app writes were blocked for ${writesBlockedMs} ms; the final catch-up copied ${run.rows} rows`, {
    project: to, data: { from, to, epoch, durationMs, writesBlockedMs, runId: run.id },
  });
  return { from, to, epoch, durationMs, writesBlockedMs };
}

async function startReverseCapture(projects: Projects, p: { from: ProjectName; to: ProjectName; settings: Settings }): Promise<string> {
  const tables = (await readCatalog(projects[p.to].sql, p.settings.schemas)).tables;
  const slot = newSlotName(p.to, p.from);
  await prepareCapture(projects[p.to], tables, slot);
  await projects[p.from].sql.begin("read write", (tx) => writePosition(tx, { source: p.to, slot, baseSnapshot: null, appliedLsn: null, tables: tableSet(tables) }));
  return slot;
}

// At the switch the old active holds exactly what the new active holds (the final catch-up
// made them equal and the fence kept it so): record that as its latest copy, so that a
// failback does not need a backup first.
async function recordSwitchCopy(projects: Projects, p: { from: ProjectName; to: ProjectName; settings: Settings }): Promise<void> {
  const counter = await changeCounter(projects[p.to].sql, p.settings.schemas);
  await projects[p.from].sql.begin("read write", (tx) => tx`
    insert into spillway.runs (id, kind, status, source, target, started_at, finished_at, duration_ms, snapshot_at, strategy, details)
    values (${crypto.randomUUID()}, 'full', 'succeeded', ${p.to}, ${p.from}, now(), now(), 0, now(), null,
      ${tx.json({ reason: `the switch to ${p.to} left ${p.from} holding the same data`, origin: "switch", changeCounter: counter })})`);
}

function unfit(message: string, details?: Record<string, unknown>): SpillwayError {
  return new SpillwayError("TARGET_UNFIT", 409, message, details);
}

// The target's usage once it holds what the active holds now: its size plus what the
// active's replicated tables outgrew the target's copy by.
async function usageAfterSwitch(source: Project, target: Project, settings: Settings): Promise<number> {
  const replicated = async (p: Project) => {
    const [row] = await p.sql<{ bytes: string }[]>`
      select coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::text as bytes
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = any(${settings.schemas}) and c.relkind = 'r'`;
    return Number(row!.bytes);
  };
  const [m, sourceBytes, targetBytes] = await Promise.all([measure(target), replicated(source), replicated(target)]);
  return (m.usedBytes + Math.max(0, sourceBytes - targetBytes)) / settings.quotaBytes[target.name];
}

// Transactions that had written before the fence may still commit: wait for them, then end
// them if they outlast the wait. A write acknowledged after the catch-up would be lost.
async function waitForInFlight(source: Project, fencedAt: number): Promise<void> {
  const open = () => source.sql<{ pid: number }[]>`
    select pid from pg_catalog.pg_stat_activity
    where datname = current_database() and pid <> pg_catalog.pg_backend_pid()
      and backend_xid is not null and xact_start < ${new Date(fencedAt)}`;
  const deadline = Date.now() + IN_FLIGHT_WAIT_MS;
  let pids = await open();
  while (pids.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    pids = await open();
  }
  if (pids.length === 0) return;
  for (const { pid } of pids) await source.sql`select pg_catalog.pg_terminate_backend(${pid})`.catch(() => undefined);
  await new Promise((r) => setTimeout(r, 200));
  if ((await open()).length > 0) {
    throw new SpillwayError("BUSY", 409, `transactions on ${source.name} were still open ${IN_FLIGHT_WAIT_MS / 1000} s after the fence and could not be ended`);
  }
}

// Publishes the new state: the target first, then the old active, whose state row is locked
// (and checked to be still fenced by us) before the target is touched, so that nothing can
// unfence it in between.
async function publish(projects: Projects, p: { from: ProjectName; to: ProjectName; epoch: number; sourceReachable: boolean; lease: Lease; hooks?: Context["hooks"] }): Promise<void> {
  const writeTarget = async () => {
    await onProject(projects[p.to], (sql) => sql.begin(async (tx) => {
      await tx`
        update spillway.state set active = ${p.to}, epoch = ${p.epoch}, fenced = false, fenced_for = null, fenced_epoch = null,
          phase = 'normal', since = now(), updated_at = now()
        where id and epoch < ${p.epoch}`;
      await tx`update public.spillway_active set active = ${p.to}, epoch = ${p.epoch}, since = now() where id`;
    }));
  };
  if (!p.sourceReachable) return await writeTarget();
  await onProject(projects[p.from], (sql) => sql.begin(async (tx) => {
    const [row] = await tx<{ fenced: boolean; fenced_epoch: string | null; holder: string | null }[]>`
      select s.fenced, s.fenced_epoch::text, l.holder from spillway.state s cross join spillway.lease l
      where s.id and l.id for update of s`;
    if (!row?.fenced || Number(row.fenced_epoch) !== p.epoch || row.holder !== p.lease.holder) {
      throw new SpillwayError("BUSY", 409, `${p.from} is no longer fenced for this switch (another process changed it); nothing was published`);
    }
    await writeTarget();
    await p.hooks?.step("published-target");
    await tx`
      update spillway.state set active = ${p.to}, epoch = ${p.epoch}, fenced = true, fenced_for = ${p.to}, fenced_epoch = ${p.epoch},
        phase = 'normal', since = now(), updated_at = now()
      where id`;
    await tx`update public.spillway_active set active = ${p.to}, epoch = ${p.epoch}, since = now() where id`;
  }));
}
