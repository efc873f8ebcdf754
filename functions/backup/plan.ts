import { SpillwayError } from "../errors.ts";
import type { ProjectName } from "../names.ts";
import { type LeftBehind, tablesLeftBehind } from "../schemas.ts";
import { captureDrift } from "./drift.ts";
import { identityUnsupported } from "./identity.ts";
import { schemaMismatch } from "./schema-diff.ts";
import type { SlotHealth } from "./slots.ts";

/** What a run is asked for (`POST /force-backup`, a tick, a switch's catch-up). */
export interface PlanRequest {
  mode: "auto" | "full" | "incremental";
  /** False for a switch's catch-ups: a staged copy in progress is left alone and a full copy is never staged. */
  continuable: boolean;
  /** Stage a new full copy whatever its estimate says (true), or never (false); unset: by the estimate. */
  staged?: boolean;
}

/**
 * The figures read from both projects that decide a run. The facts after `authCarried` are
 * read only when the plan asks for them (`needs`): some cost a query most runs do without,
 * and one repairs as it reads.
 */
export interface BackupFacts {
  request: PlanRequest;
  /** The active project. */
  source: ProjectName;
  /** How the two projects' replicated and carried Auth tables differ (empty: alike). */
  diffs: string[];
  /** The replicated tables change capture cannot carry (`identityProblems`). */
  identityProblems: string[];
  /** The tables not carried that the carried ones reference, or that reference them (`leftBehind`). */
  leftBehind: LeftBehind[];
  /** The schemas the run carries. */
  carried: string[];
  /** Where the standby's copy stands: its source, slot and position, and the tables recorded with it. */
  position: { source: ProjectName; slot: string; appliedLsn: string | null; tables: string[] } | null;
  /** The replicated tables now, as recorded with a copy (`tableSet`). */
  tables: string[];
  /** Whether the run carries Auth's tables. */
  authCarried: boolean;
  /** A staged full copy on the standby that this run can continue (one that could not was dropped); null: none. */
  staging?: { startedAt: string; tablesStaged: number; tablesTotal: number } | null;
  /** The state of the slot the standby's copy builds on. */
  slot?: SlotHealth["state"];
  /** The replicated tables the change capture publication does not cover. */
  unpublished?: string[];
  /** Whether the standby's Auth tables are a copy of the active's that changes can build on. */
  authCopy?: boolean;
  /** The carried Auth tables that had lost their capture trigger (it was put back as they were read). */
  authRecaptured?: string[];
  /** Whether a one-shot full copy is expected to fit this call's budget. */
  fits?: boolean;
}

/** A fact the plan needs before it can decide. */
export type Need = "staging" | "slot" | "unpublished" | "authCopy" | "authRecaptured" | "fits";

/** What a run does, and why. */
export interface BackupPlan {
  /** `staged`: a full copy built over one or more calls. */
  kind: "full" | "staged" | "incremental";
  reason: string;
  /** True when the standby's copy could have been built on but no longer can: the operator is warned. */
  broken: boolean;
  /** A slot the server invalidated, to drop now: it can never be read again. */
  dropSlot: string | null;
  /** True when the run continues the staged copy of an earlier call. */
  continues: boolean;
  /**
   * Why the run cannot go on: with `recorded`, a run is recorded and fails with it (the
   * tables differ, a table cannot be captured); without, nothing is recorded.
   */
  refusal: { error: SpillwayError; recorded: boolean } | null;
}

/** Assumed copy speed before a full copy into this standby has been measured. */
const DEFAULT_BYTES_PER_SECOND = 20 * 1024 * 1024;

/**
 * Whether a full copy of `bytes` is expected to finish in one invocation: within three
 * quarters of the budget at the speed of the last full copy (or 20 MB/s before one).
 *
 * @example
 * fullCopyFits(300e6, 40e6, 120) // true
 */
export function fullCopyFits(bytes: number, bytesPerSecond: number | null, budgetSeconds: number): boolean {
  return bytes / (bytesPerSecond && bytesPerSecond > 0 ? bytesPerSecond : DEFAULT_BYTES_PER_SECOND) <= budgetSeconds * 0.75;
}

/**
 * Decides a run from the facts: continue a staged copy; or build on the standby's copy
 * (incremental) when it came from this active through a slot that can still be read, over
 * the same tables (OIDs, columns, key), a publication that covers them and, with Auth
 * carried, Auth's copy and capture intact; or copy in full, staged when it would not fit
 * one call. Answers `{ needs }` when a fact it needs was not read yet: read it, and plan
 * again.
 *
 * @example
 * const plan = planBackup({ request: { mode: "auto", continuable: true }, source: "primary", diffs: [], identityProblems: [], position: null, tables, authCarried: false, staging: null, fits: true });
 * // { kind: "full", reason: "no earlier copy to build on: full backup", ... }
 */
export function planBackup(f: BackupFacts): BackupPlan | { needs: Need } {
  const { request } = f;
  const clean = f.diffs.length === 0 && f.leftBehind.length === 0;
  if (request.continuable && clean && f.staging === undefined) return { needs: "staging" };
  const staging = request.continuable && clean ? (f.staging ?? null) : null;
  const choice: Choice | Need = staging
    ? {
        kind: "full",
        reason: `continuing the full backup begun at ${staging.startedAt} (${staging.tablesStaged} of ${staging.tablesTotal} tables staged)`,
        broken: false,
        dropSlot: null,
      }
    : captureChoice(f);
  if (typeof choice === "string") return { needs: choice };
  const plan = { reason: choice.reason, broken: choice.broken, dropSlot: choice.dropSlot, continues: staging !== null };
  if (request.mode === "incremental" && choice.kind === "full") {
    const message = `an incremental backup is not possible: ${choice.reason}; use mode "full" or "auto"`;
    return { ...plan, kind: "full", refusal: { error: new SpillwayError("INCREMENTAL_UNAVAILABLE", 409, message), recorded: false } };
  }
  const kind = request.mode === "full" ? "full" : choice.kind;
  if (request.mode === "full" && !staging) plan.reason = "full backup requested";
  // Checked before anything is written: the run is recorded, and fails with every difference.
  const refusal =
    f.leftBehind.length > 0
      ? { error: tablesLeftBehind(f.leftBehind, f.carried), recorded: true }
      : f.diffs.length > 0
        ? { error: schemaMismatch(f.diffs), recorded: true }
        : f.identityProblems.length > 0
          ? { error: identityUnsupported(f.identityProblems), recorded: true }
          : null;
  if (kind === "incremental") return { ...plan, kind, refusal };
  if (staging) return { ...plan, kind: "staged", refusal };
  if (!request.continuable || !clean) return { ...plan, kind: "full", refusal };
  if (request.staged !== undefined) return { ...plan, kind: request.staged ? "staged" : "full", refusal };
  if (f.fits === undefined) return { needs: "fits" };
  return { ...plan, kind: f.fits ? "full" : "staged", refusal };
}

interface Choice {
  kind: "full" | "incremental";
  reason: string;
  broken: boolean;
  dropSlot: string | null;
}

// Whether changes can be applied to the standby's copy, or why it needs a full one.
function captureChoice(f: BackupFacts): Choice | Need {
  const full = (reason: string, broken = false, dropSlot: string | null = null): Choice => ({
    kind: "full",
    reason: `${reason}: full backup`,
    broken,
    dropSlot,
  });
  const { position } = f;
  if (!position) return full("no earlier copy to build on");
  if (position.source !== f.source) return full(`the standby's copy came from ${position.source}`);
  if (f.slot === undefined) return "slot";
  if (f.slot === "missing") return full("the change capture slot is gone (retention guard or dropped)");
  if (f.slot === "lost") {
    return full(
      `the change capture slot ${position.slot} was invalidated by the server (it fell behind max_slot_wal_keep_size) and was dropped`,
      true,
      position.slot,
    );
  }
  const drift = captureDrift(position.tables, f.tables);
  if (drift) return full(`the replicated tables changed since the last full copy (${drift})`, true);
  if (f.unpublished === undefined) return "unpublished";
  if (f.unpublished.length > 0) return full(`the change capture publication no longer covers ${f.unpublished.join(", ")}`, true);
  if (f.authCarried) {
    if (f.authCopy === undefined) return "authCopy";
    if (!f.authCopy) return full(`the standby holds no copy of ${f.source}'s Auth tables to build on`);
    // A carried Auth table without its capture trigger (GoTrue recreated it) missed changes.
    if (f.authRecaptured === undefined) return "authRecaptured";
    if (f.authRecaptured.length > 0) return full(`Auth's ${f.authRecaptured.join(", ")} had lost change capture (recreated?)`, true);
  }
  return { kind: "incremental", reason: `changes since ${position.appliedLsn ?? "the last full copy"}`, broken: false, dropSlot: null };
}
