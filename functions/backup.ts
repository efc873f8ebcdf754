import {
  AUTH_CHANGES,
  type AuthPlan,
  authCopyBuildsOn,
  copyAuth,
  ensureAuthCapture,
  planAuth,
  prepareAuthCapture,
  pruneAuthChanges,
  recordAuthCopy,
  settleSessions,
} from "./backup/auth.ts";
import { discardAuthStage } from "./backup/auth-stage.ts";
import { type Catalog, foreignKeyOrder, readCatalog, type Table } from "./backup/catalog.ts";
import { chooseKind } from "./backup/choose.ts";
import { unpublished } from "./backup/drift.ts";
import { fullLoad, type Progress } from "./backup/full.ts";
import { applyKey, type Identity, readIdentities, requireIdentities } from "./backup/identity.ts";
import {
  applyChanges,
  dropOtherSlots,
  dropSlot,
  newSlotName,
  PUBLICATION,
  prepareCapture,
  type ReplicaPosition,
  readPosition,
  replicaStream,
  tableSet,
  writePosition,
} from "./backup/incremental.ts";
import { schemaDiff, schemaMismatch } from "./backup/schema-diff.ts";
import { beginStaging, continueStaging, discardStaging, fullCopyFits, readStaging, type Staging, stagingProblem } from "./backup/staged.ts";
import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { keepLease, type Lease, type LeaseKeeper, requireLease, takeLease } from "./lease.ts";
import { type Db, onProject, type Project, type Projects, probe } from "./project.ts";
import { type Run, readRun } from "./runs.ts";
import { type Runtime, readSettings, resolveStrategy, type Settings } from "./settings.ts";
import { readActive } from "./state.ts";
import { changeCounter } from "./status.ts";

/** What `POST /force-backup` asks for. */
export interface BackupRequest {
  mode: "auto" | "full" | "incremental";
  verify: boolean;
  /**
   * False for a switch's catch-ups, which must finish in the call: a staged copy in
   * progress is left alone and a full copy is never staged. Default true.
   */
  continuable?: boolean;
  /** Stage a new full copy whatever its estimate says (default: when it would not fit the budget). */
  staged?: boolean;
  /** This call's budget, instead of the `budgetSeconds` setting. */
  budgetMs?: number;
}

/** What a backup works with. */
export interface BackupContext {
  projects: Projects;
  events: EventLog;
  /** Called once a full copy has committed, before the slot it replaced is dropped; the crash tests end the process there. */
  afterCommit?: () => void | Promise<void>;
  /** Told by the entry (default node): picks the strategy when the setting is `auto`. */
  runtime?: Runtime;
}

const LEASE_SECONDS = 120;
/** A full copy at least this large tells the copy speed apart from fixed costs. */
const MEASURED_COPY_BYTES = 32 * 1024 * 1024;
/** How long an operator's request waits for a running tick to give the lease back. */
const OPERATOR_WAIT_MS = 10_000;

/**
 * Runs one backup from the active project to the standby under the operation lease, and
 * records it as a run in the standby (its success is committed in the same transaction as
 * the copied data) with events for its start and end. Throws 409 `BUSY` when another
 * operation holds the lease, 503 `PROJECT_UNREACHABLE` when a project cannot be reached,
 * 409 `SCHEMA_MISMATCH` with every difference when the tables differ.
 *
 * @example
 * const run = await runBackup({ projects, events }, { mode: "auto", verify: false });
 */
export async function runBackup(ctx: BackupContext, request: BackupRequest, heldLease?: Lease): Promise<Run> {
  const lease = heldLease ?? (await takeLease(ctx.projects, "backup", LEASE_SECONDS, { waitMs: OPERATOR_WAIT_MS }));
  const keeper = keepLease(ctx.projects, lease, LEASE_SECONDS);
  try {
    return await backupUnderLease(ctx, request, lease.holder, keeper);
  } finally {
    keeper.stop();
    if (!heldLease) await lease.release();
  }
}

async function backupUnderLease(ctx: BackupContext, request: BackupRequest, holder: string, keeper: LeaseKeeper): Promise<Run> {
  const { projects, events } = ctx;
  const state = await readActive(projects);
  const source = projects[state.active];
  const target = projects[state.standby];
  await requireReachable(ctx, source, target);
  const { settings, version: settingsVersion } = await readSettings(projects);
  const strategy = resolveStrategy(settings.strategy, ctx.runtime ?? "node");
  const [sourceCatalog, targetCatalog] = await Promise.all([
    readCatalog(source.sql, settings.schemas),
    readCatalog(target.sql, settings.schemas),
  ]);
  // The lease checked again where this run writes: a holder whose lease lapsed stops here.
  const [identities, position] = await Promise.all([
    readIdentities(source.sql, sourceCatalog.tables),
    readPosition(target.sql),
    requireLease(target.sql, holder),
  ]);
  keeper.check();
  // After the catalogs, on the connections they leave idle.
  const auth = await planAuth(source, target, settings);
  // Checked before anything is written; a mismatch fails the run with every difference.
  const diffs = [...schemaDiff(sourceCatalog, targetCatalog), ...auth.diffs];
  const tables = foreignKeyOrder(sourceCatalog.tables, sourceCatalog.foreignKeys);
  const continuable = request.continuable ?? true;
  const staging = continuable && diffs.length === 0 ? await stagingToContinue(ctx, source, target, tables) : null;
  const choice = staging
    ? {
        kind: "full" as const,
        reason: `continuing the full backup begun at ${staging.startedAt} (${staging.tables.filter((t) => t.snapshot).length} of ${staging.tables.length} tables staged)`,
        broken: false,
      }
    : await chooseKind(source, position, sourceCatalog.tables).then(async (c) => {
        if (c.kind !== "incremental" || !auth.tables) return c;
        if (!(await authCopyBuildsOn(target.sql, source.name, auth.tables))) {
          return {
            kind: "full" as const,
            reason: `the standby holds no copy of ${source.name}'s Auth tables to build on: full backup`,
            broken: false,
          };
        }
        // A carried Auth table without its capture trigger (GoTrue recreated it) missed changes.
        const recaptured = await ensureAuthCapture(source, auth.tables);
        return recaptured.length === 0
          ? c
          : {
              kind: "full" as const,
              reason: `Auth's ${recaptured.join(", ")} had lost change capture (recreated?): full backup`,
              broken: true,
            };
      });
  if (choice.broken) {
    await events.record("warn", "backup.capture_reset", `the next backup to ${target.name} cannot build on its copy: ${choice.reason}`, {
      project: target.name,
      data: { reason: choice.reason, slot: position?.slot ?? null },
    });
  }
  if (request.mode === "incremental" && choice.kind === "full") {
    throw new SpillwayError(
      "INCREMENTAL_UNAVAILABLE",
      409,
      `an incremental backup is not possible: ${choice.reason}; use mode "full" or "auto"`,
    );
  }
  const kind = request.mode === "full" ? ("full" as const) : choice.kind;
  const reason = request.mode === "full" && !staging ? "full backup requested" : choice.reason;
  const budgetMs = request.budgetMs ?? settings.budgetSeconds * 1000;
  const stage =
    staging !== null ||
    (kind === "full" &&
      continuable &&
      diffs.length === 0 &&
      (request.staged ?? !(await fitsOneCall(source, target, tables, budgetMs / 1000))));

  await target.sql.begin(
    "read write",
    (tx) => tx`
    update spillway.runs set status = 'failed', finished_at = now(), error = 'interrupted before it could finish'
    where status = 'running' and id is distinct from ${staging?.runId ?? null}::uuid`,
  );
  const started = Date.now();
  const resumed = staging && (await readRun(target.sql, staging.runId))?.status === "running" ? staging.runId : null;
  const id = resumed ?? crypto.randomUUID();
  if (!resumed) {
    await target.sql.begin("read write", async (tx) => {
      await tx`
        insert into spillway.runs (id, kind, status, source, target, strategy, details)
        values (${id}, ${kind}, 'running', ${source.name}, ${target.name}, ${strategy}, ${tx.json({ reason, verify: request.verify, staged: stage })})`;
      if (staging) await tx`update spillway.staging set run_id = ${id} where id`;
    });
    await events.record(
      "info",
      "backup.started",
      `${kind} backup from ${source.name} to ${target.name} started (${reason}, strategy ${strategy}${stage && !staging ? ", staged: it may continue over several calls" : ""})`,
      {
        project: target.name,
        data: { runId: id, kind, strategy, reason, staged: stage },
      },
    );
  }

  const progress = progressWriter(target, id);
  try {
    if (diffs.length > 0) throw schemaMismatch(diffs);
    // Before capture starts: a table it cannot carry is refused, never published.
    requireIdentities(sourceCatalog.tables, identities);
    if (auth.tables) await prepareAuthCapture([source, target], auth.tables);
    const input = {
      source,
      target,
      targetCatalog,
      settings,
      settingsVersion,
      strategy,
      auth,
      id,
      started,
      progress,
      guard: { holder, expected: position },
      keeper,
      afterCommit: ctx.afterCommit,
      identities,
    };
    const run = stage
      ? await staged({ ...input, tables, staging, budgetMs })
      : kind === "incremental"
        ? await incremental({ ...input, budgetMs })
        : await full({ ...input, verify: request.verify, tables: sourceCatalog.tables });
    if (run.status === "running") {
      const p = run.progress as { phase?: string; tablesDone?: number; tablesTotal?: number };
      await events.record(
        "info",
        "backup.continues",
        `full backup to ${target.name} continues on the next call: ${p.tablesDone ?? 0} of ${p.tablesTotal ?? 0} tables staged${p.phase === "catch-up" || p.phase === "commit" ? ", catching up" : ""}`,
        {
          project: target.name,
          data: { runId: id, progress: run.progress },
        },
      );
      return run;
    }
    await events.record(
      "info",
      "backup.succeeded",
      `${kind} backup to ${target.name} finished: ${run.tables} tables, ${run.rows} rows, ${run.bytes} bytes in ${run.durationMs} ms${request.verify && kind === "full" ? ", verified" : ""}`,
      {
        project: target.name,
        data: {
          runId: id,
          kind,
          tables: run.tables,
          rows: run.rows,
          bytes: run.bytes,
          durationMs: run.durationMs,
          snapshotAt: run.snapshotAt,
        },
      },
    );
    if (auth.tables) await pruneAuthChanges(source).catch(() => undefined);
    return run;
  } catch (e) {
    await progress.flush();
    const error = await classify(e, source, target);
    const message = events.redact(describeError(error));
    await onProject(target, (sql) =>
      sql.begin(
        "read write",
        (tx) => tx`
      update spillway.runs set status = 'failed', finished_at = now(), duration_ms = ${Date.now() - started}, error = ${message},
        details = details || ${tx.json(error instanceof SpillwayError && error.details ? ({ failure: error.details } as never) : {})}
      where id = ${id}`,
      ),
    ).catch(() => undefined);
    await events.record(
      "error",
      error instanceof SpillwayError && error.code === "VERIFY_FAILED" ? "backup.verify_failed" : "backup.failed",
      `${kind} backup to ${target.name} failed: ${message}`,
      {
        project: target.name,
        data: {
          runId: id,
          code: error instanceof SpillwayError ? error.code : "BACKUP_FAILED",
          details: error instanceof SpillwayError ? (error.details ?? null) : null,
        },
      },
    );
    const kept = stage ? "; the staged tables are kept and the next backup continues from them" : "";
    throw error instanceof SpillwayError
      ? error
      : new SpillwayError("BACKUP_FAILED", 500, `backup failed: ${message}; the standby keeps its previous copy${kept}`, { runId: id });
  }
}

interface RunInput {
  source: Project;
  target: Project;
  targetCatalog: Catalog;
  settings: Settings;
  /** The settings' version the run read: Auth's copy is recorded only if none changed meanwhile. */
  settingsVersion: number;
  auth: AuthPlan;
  strategy: "copy" | "fdw";
  id: string;
  started: number;
  progress: ReturnType<typeof progressWriter>;
  /** The lease this run holds and the position it read: its position write needs both unchanged. */
  guard: { holder: string; expected: ReplicaPosition | null };
  keeper: LeaseKeeper;
  /** The active's replica identities: changes find their rows by them. */
  identities: Map<string, Identity>;
  afterCommit: BackupContext["afterCommit"];
}

async function full(r: RunInput & { verify: boolean; tables: Table[] }): Promise<Run> {
  // The slot must exist before the copy's snapshot: then nothing falls between them.
  const slot = newSlotName(r.source.name, r.target.name);
  r.keeper.check();
  await prepareCapture(r.source, r.tables, slot);
  try {
    await fullLoad({
      source: r.source,
      target: r.target,
      targetCatalog: r.targetCatalog,
      schemas: r.settings.schemas,
      strategy: r.strategy,
      verify: r.verify,
      sourceUrl: r.source.url,
      onProgress: r.progress.update,
      alongside: r.auth.tables ? (src, dst, foreign) => copyAuth(src, dst, r.auth.tables!, foreign) : undefined,
      async beforeCommit(tx, res) {
        r.keeper.check();
        await writePosition(
          tx,
          { source: r.source.name, slot, baseSnapshot: res.snapshot, appliedLsn: null, tables: tableSet(r.tables) },
          r.guard,
        );
        await finishRun(tx, r, {
          tables: res.tables,
          rows: res.rows,
          bytes: res.bytes,
          snapshotAt: res.snapshotAt,
          changeCounter: res.changeCounter,
          extra: { perTable: res.perTable, verified: res.checksums !== null, slot },
        });
      },
    });
  } catch (e) {
    await dropSlot(r.source, slot).catch(() => undefined);
    throw e;
  }
  await r.progress.flush();
  await r.afterCommit?.();
  // A slot left here (a kill, a failed drop) is dropped by the next tick (cleanSlots).
  await dropOtherSlots(r.source, r.source.name, r.target.name, slot).catch(() => undefined);
  return (await readRun(r.target.sql, r.id))!;
}

// The standby's staged copy, when it can be continued; one that cannot (another source,
// other tables, its slot gone) is dropped with a warning, and a new copy begins.
async function stagingToContinue(ctx: BackupContext, source: Project, target: Project, tables: Table[]): Promise<Staging | null> {
  const staging = await readStaging(target.sql);
  if (!staging) return null;
  const missing = staging.source === source.name ? await unpublished(source.sql, PUBLICATION, tables) : [];
  const problem =
    (await stagingProblem(staging, source, tables)) ??
    (missing.length > 0 ? `the change capture publication no longer covers ${missing.join(", ")} (dropped and created again?)` : null);
  if (!problem) return staging;
  await discardStaging(target, ctx.projects[staging.source]).catch(() => discardStaging(target));
  await ctx.events.record(
    "warn",
    "backup.staging_discarded",
    `the full backup staged on ${target.name} since ${staging.startedAt} was dropped: ${problem}; a new one begins`,
    { project: target.name },
  );
  return null;
}

// Whether a one-shot full copy should fit the budget, at the speed of the last one that
// was large enough to say (small copies are mostly fixed costs).
async function fitsOneCall(source: Project, target: Project, tables: Table[], budgetSeconds: number): Promise<boolean> {
  const [size] = await source.sql<{ bytes: string }[]>`
    select coalesce(sum(pg_catalog.pg_table_size(t)), 0)::int8::text as bytes from unnest(${tables.map((t) => t.oid)}::oid[]) as t`;
  const [last] = await target.sql<{ bytes: string; duration_ms: string }[]>`
    select bytes::text, duration_ms::text from spillway.runs
    where kind = 'full' and status = 'succeeded' and not coalesce((details->>'staged')::boolean, false) and bytes >= ${MEASURED_COPY_BYTES} and duration_ms > 0
    order by started_at desc limit 1`;
  return fullCopyFits(Number(size!.bytes), last ? Number(last.bytes) / (Number(last.duration_ms) / 1000) : null, budgetSeconds);
}

async function staged(r: RunInput & { tables: Table[]; staging: Staging | null; budgetMs: number }): Promise<Run> {
  if (!r.staging) await r.target.sql.begin((tx) => discardAuthStage(tx));
  const staging = r.staging ?? (await beginStaging(r.source, r.target, r.tables, r.id, newSlotName(r.source.name, r.target.name)));
  const result = await continueStaging({
    auth: r.auth,
    source: r.source,
    target: r.target,
    targetCatalog: r.targetCatalog,
    staging,
    tables: r.tables,
    schemas: r.settings.schemas,
    strategy: r.strategy,
    sourceUrl: r.source.url,
    deadline: r.started + r.budgetMs,
    publishBy: r.started + r.budgetMs / 2,
    onProgress: r.progress.update,
    holder: r.guard.holder,
    applyAs: (t) => applyKey(t, r.identities.get(`${t.schema}.${t.name}`)),
    async beforePublish(tx, res) {
      r.keeper.check();
      await writePosition(
        tx,
        { source: r.source.name, slot: staging.slot, baseSnapshot: null, appliedLsn: res.appliedLsn, tables: tableSet(r.tables) },
        r.guard,
      );
      // A copy built over several calls has no single moment to compare against while the
      // active keeps changing: `spillway verify` checks it once writes pause.
      await finishRun(tx, r, {
        tables: res.tablesTotal,
        rows: res.rows,
        bytes: res.bytes,
        snapshotAt: res.snapshotAt,
        changeCounter: null,
        extra: { slot: staging.slot, verified: false, appliedLsn: res.appliedLsn },
      });
    },
  });
  await r.progress.flush();
  if (result.published) {
    await dropOtherSlots(r.source, r.source.name, r.target.name, staging.slot).catch(() => undefined);
  } else {
    await r.target.sql.begin(
      "read write",
      (tx) => tx`update spillway.runs set details = details || ${tx.json({ continues: true })} where id = ${r.id}`,
    );
  }
  return (await readRun(r.target.sql, r.id))!;
}

async function incremental(r: RunInput & { budgetMs: number }): Promise<Run> {
  const [[snap], counter] = await Promise.all([
    r.source.sql<{ at: Date }[]>`select now() as at`,
    changeCounter(r.source.sql, r.settings.schemas),
  ]);
  // The apply alone (peek, write, commit, advance), without the run's checks around it: how
  // fast the standby follows the active.
  const applyStarted = Date.now();
  const result = await applyChanges({
    source: r.source,
    target: r.target,
    stream: replicaStream(r.guard.expected!, r.guard.holder),
    tables: new Map([
      ...r.targetCatalog.tables.map((t) => [`${t.schema}.${t.name}`, applyKey(t, r.identities.get(`${t.schema}.${t.name}`))] as const),
      [AUTH_CHANGES, r.auth.changes],
    ]),
    deadline: r.started + r.budgetMs,
    sequences: r.settings.schemas,
    onProgress: (rows, bytes) => r.progress.update({ phase: "load", table: null, tablesDone: 0, tablesTotal: 0, rows, bytes }),
  });
  await r.target.sql.begin("read write", (tx) =>
    finishRun(tx, r, {
      tables: r.targetCatalog.tables.length,
      rows: result.rows,
      bytes: result.bytes,
      snapshotAt: result.more ? null : snap!.at.toISOString(),
      changeCounter: result.more ? null : counter,
      extra: { transactions: result.transactions, appliedLsn: result.appliedLsn, more: result.more, applyMs: Date.now() - applyStarted },
    }),
  );
  await r.progress.flush();
  return (await readRun(r.target.sql, r.id))!;
}

async function finishRun(
  tx: Db,
  r: RunInput,
  f: {
    tables: number;
    rows: number;
    bytes: number;
    snapshotAt: string | null;
    changeCounter: string | null;
    extra: Record<string, unknown>;
  },
): Promise<void> {
  await recordAuthCopy(tx, r.auth.tables ? r.source.name : null, r.auth.tables, r.settingsVersion);
  await settleSessions(tx, r.auth);
  await tx`
    update spillway.runs set status = 'succeeded', finished_at = clock_timestamp(), tables = ${f.tables}, rows = ${f.rows},
      bytes = ${f.bytes}, duration_ms = (extract(epoch from clock_timestamp() - started_at) * 1000)::int8, snapshot_at = ${f.snapshotAt},
      progress = ${tx.json({ phase: "done", tablesDone: f.tables, tablesTotal: f.tables, rows: f.rows, bytes: f.bytes })},
      details = details || ${tx.json({ changeCounter: f.changeCounter, ...f.extra } as never)}
    where id = ${r.id}`;
}

async function requireReachable(ctx: BackupContext, source: Project, target: Project): Promise<void> {
  const probes = await Promise.all([target, source].map(async (p) => ({ p, down: await probe(p) })));
  for (const { p, down } of probes) {
    if (down === null) continue;
    await ctx.events.record(
      "error",
      "backup.unreachable",
      `backup from ${source.name} to ${target.name} cannot start: ${describeError(down)}`,
      { project: p.name },
    );
    throw down;
  }
}

// A failure in the middle of a copy is a connection error from one side or the other:
// name the side that no longer answers.
async function classify(e: unknown, source: Project, target: Project): Promise<unknown> {
  if (e instanceof SpillwayError) return e;
  return (await probe(target)) ?? (await probe(source)) ?? e;
}

// Progress goes to the run row on its own connection, at most once a second, so /status
// can show a long copy moving.
function progressWriter(target: Project, id: string) {
  let latest: Progress | null = null;
  let lastWrite = 0;
  let chain: Promise<unknown> = Promise.resolve();
  const write = (p: Progress) => {
    chain = chain
      .then(() =>
        target.sql.begin(
          "read write",
          (tx) =>
            tx`update spillway.runs set progress = ${tx.json({ ...p })}, tables = ${p.tablesDone}, rows = ${p.rows}, bytes = ${p.bytes} where id = ${id} and status = 'running'`,
        ),
      )
      .catch(() => undefined);
  };
  return {
    update(p: Progress) {
      latest = p;
      const now = Date.now();
      if (now - lastWrite >= 1000 || p.phase !== "load") {
        lastWrite = now;
        write(p);
      }
    },
    async flush() {
      if (latest) write(latest);
      await chain;
    },
  };
}
