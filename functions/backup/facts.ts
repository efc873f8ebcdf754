import type { BackupRequest } from "../backup.ts";
import type { EventLog } from "../events.ts";
import { requireLease } from "../lease.ts";
import type { Project, Projects } from "../project.ts";
import { lastCopySpeed } from "../runs.ts";
import { type CarriedSettings, readCarried } from "../schemas.ts";
import { convergeSettings, type Runtime, resolveStrategy } from "../settings.ts";
import { type AuthPlan, authCopyBuildsOn, ensureAuthCapture, planAuth } from "./auth.ts";
import { type Catalog, foreignKeyOrder, readCatalog, type Table } from "./catalog.ts";
import { changedChecks, rowsChangedChecksRefuse } from "./changed-checks.ts";
import { unpublished } from "./drift.ts";
import { type Identity, identityProblems, readIdentities } from "./identity.ts";
import { type BackupFacts, type BackupPlan, fullCopyFits, type Need, planBackup } from "./plan.ts";
import { type ReplicaPosition, readPosition, type Staging, tableSet } from "./position.ts";
import { ruleDiff, ruleWarnings, schemaDiff, sequenceDiff } from "./schema-diff.ts";
import { slotHealth } from "./slots.ts";
import { PUBLICATION, tablesSize } from "./source.ts";
import { continuableStaging } from "./staged.ts";
import { type Transfer, transferFor } from "./transfer.ts";

/** A full copy at least this large tells the copy speed apart from fixed costs. */
const MEASURED_COPY_BYTES = 32 * 1024 * 1024;

/**
 * What a run reads before it plans: the settings, both projects' tables, the active's
 * replica identities, the standby's position, Auth's plan; and the facts the plan decides on.
 */
export interface Read {
  facts: BackupFacts;
  /** The settings, with the schemas the run carries resolved on the active. */
  settings: CarriedSettings;
  settingsVersion: number;
  transfer: Transfer;
  sourceCatalog: Catalog;
  targetCatalog: Catalog;
  /** The replicated tables in load order. */
  tables: Table[];
  identities: Map<string, Identity>;
  position: ReplicaPosition | null;
  auth: AuthPlan;
  budgetMs: number;
}

/**
 * Reads what a run from `source` to `target` plans on, checking on the standby that the
 * lease of `holder` is still held.
 *
 * @example
 * const read = await readFacts(projects, events, "node", { mode: "auto", verify: false }, source, target, lease.holder);
 */
export async function readFacts(
  projects: Projects,
  events: EventLog,
  runtime: Runtime,
  request: BackupRequest,
  source: Project,
  target: Project,
  holder: string,
): Promise<Read> {
  const { settings: stored, version: settingsVersion } = await convergeSettings(projects, events);
  const carried = await readCarried(source.sql, stored.schemas);
  const settings: CarriedSettings = { ...stored, schemas: carried.schemas };
  const [sourceCatalog, targetCatalog] = await Promise.all([
    readCatalog(source.sql, settings.schemas),
    readCatalog(target.sql, settings.schemas),
  ]);
  // The lease checked again where this run writes: a holder whose lease lapsed stops here.
  // One query at a time on each project: a second connection opened for a query run
  // alongside costs more than the query (a login, and a new backend's cold catalog caches).
  const [identities, position] = await Promise.all([
    readIdentities(source.sql, sourceCatalog.tables),
    readPosition(target.sql).then(async (position) => {
      await requireLease(target.sql, holder);
      return position;
    }),
  ]);
  // After the catalogs, on the connections they leave idle.
  const auth = await planAuth(source, target, settings);
  // GoTrue upgraded on one project first: the app's tables are carried all the same.
  if (auth.refused.length > 0) {
    await events.record(
      "error",
      "backup.auth_refused",
      `Auth's users are not carried to ${target.name} until its Auth matches ${source.name}'s (the app's tables are): ${auth.refused.slice(0, 3).join("; ")}`,
      { project: target.name, data: { refused: auth.refused, skew: auth.skew } },
    );
  } else if (auth.skew.length > 0) {
    await events.record(
      "warn",
      "backup.auth_skew",
      `Auth's tables differ between ${source.name} and ${target.name} (GoTrue upgraded on one first?); users are carried on the columns both have: ${auth.skew.slice(0, 3).join("; ")}`,
      { project: target.name, data: { skew: auth.skew } },
    );
  }
  const sides = { active: source.name, standby: target.name };
  const looser = ruleWarnings(sourceCatalog, targetCatalog, sides);
  // Told on the runs an operator or a full copy starts, not at every tick the standby follows.
  if (looser.length > 0 && request.follows !== true) {
    await events.record(
      "warn",
      "backup.rules_differ",
      `${target.name}'s rules differ from ${source.name}'s where every row the active holds still fits (the backup goes ahead): ${looser.slice(0, 3).join("; ")}`,
      { project: target.name, data: { differences: looser } },
    );
  }
  const facts: BackupFacts = {
    request: { mode: request.mode, continuable: request.continuable ?? true, staged: request.staged },
    source: source.name,
    diffs: [
      ...schemaDiff(sourceCatalog, targetCatalog),
      ...sequenceDiff(sourceCatalog, targetCatalog),
      ...ruleDiff(sourceCatalog, targetCatalog, sides),
      // A check changed on one side refuses the run only where the active holds rows the standby's refuses.
      ...(await rowsChangedChecksRefuse(source.sql, changedChecks(sourceCatalog, targetCatalog), sides)),
    ],
    identityProblems: identityProblems(sourceCatalog.tables, identities),
    leftBehind: carried.left,
    carried: carried.schemas,
    position,
    tables: tableSet(sourceCatalog.tables),
    authCarried: auth.tables !== null,
  };
  return {
    facts,
    settings,
    settingsVersion,
    transfer: transferFor(resolveStrategy(settings.strategy, runtime)),
    sourceCatalog,
    targetCatalog,
    tables: foreignKeyOrder(sourceCatalog.tables, sourceCatalog.foreignKeys),
    identities,
    position,
    auth,
    budgetMs: request.budgetMs ?? settings.budgetSeconds * 1000,
  };
}

/**
 * Plans the run (`planBackup`), reading each further fact the plan asks for: some cost a
 * query most runs do without. A staged copy that cannot be continued is dropped as it is
 * read, and answered as null.
 *
 * @example
 * const { plan, staging } = await planWithFacts(projects, events, read, source, target);
 */
export async function planWithFacts(
  projects: Projects,
  events: EventLog,
  read: Read,
  source: Project,
  target: Project,
): Promise<{ plan: BackupPlan; staging: Staging | null }> {
  let staging: Staging | null = null;
  const fact = async (need: Need): Promise<Partial<BackupFacts>> => {
    switch (need) {
      case "staging": {
        const s = await continuableStaging(projects, events, source, target, read.tables);
        staging = s;
        return {
          staging: s && { startedAt: s.startedAt, tablesStaged: s.tables.filter((t) => t.snapshot).length, tablesTotal: s.tables.length },
        };
      }
      case "slot":
        return { slot: (await slotHealth(source, read.position!.slot)).state };
      case "unpublished":
        return { unpublished: await unpublished(source.sql, PUBLICATION, read.sourceCatalog.tables) };
      case "authCopy":
        return { authCopy: await authCopyBuildsOn(target.sql, source.name, read.auth.tables!, read.auth.generation) };
      case "authRecaptured":
        // Read only by a run that would build on Auth's copy; the trigger is put back as it is found missing.
        return { authRecaptured: await ensureAuthCapture(source, read.auth.tables!) };
      case "fits":
        return { fits: await fitsOneCall(source, target, read.tables, read.budgetMs / 1000) };
    }
  };
  let plan = planBackup(read.facts);
  while ("needs" in plan) {
    Object.assign(read.facts, await fact(plan.needs));
    plan = planBackup(read.facts);
  }
  return { plan, staging };
}

// Whether a one-shot full copy should fit the budget, at the speed of the last one that
// was large enough to say (small copies are mostly fixed costs).
async function fitsOneCall(source: Project, target: Project, tables: Table[], budgetSeconds: number): Promise<boolean> {
  const [bytes, speed] = await Promise.all([tablesSize(source, tables), lastCopySpeed(target.sql, MEASURED_COPY_BYTES)]);
  return fullCopyFits(bytes, speed, budgetSeconds);
}
