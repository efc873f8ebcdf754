import { decode, fullXid, lsn, lsnText, type Message, UNCHANGED, type Value, visibleIn } from "./backup/pgoutput.ts";
import { advanceSlot, flushWal, PEEK_CHANGES, peekChanges, slotRetainedBytes } from "./backup/source.ts";
import { discardStaging } from "./backup/staged.ts";
import { describeError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import { keepAside } from "./failover-hold.ts";
import { writePublished } from "./fence.ts";
import { PROJECT_NAMES, type ProjectName } from "./names.ts";
import { type Db, type Outcome, onBoth, type Project, type Projects } from "./project.ts";
import type { ActiveState, ProjectState } from "./state.ts";

/** One change the old active committed after the last carried position (`spillway.divergent`). */
export interface DivergentChange {
  table: string;
  /** The row's key columns (all its columns for a table without a key); null for a truncate. */
  key: Record<string, string | null> | null;
  /** The row's values as text (the new row; the old one for a delete; a TOAST value left unchanged is left out); null for a truncate. */
  row: Record<string, string | null> | null;
  operation: "insert" | "update" | "delete" | "truncate";
  committedAt: string;
  commitLsn: string;
  /** Its place in its transaction. */
  seq: number;
}

/** Postgres's epoch (2000-01-01 UTC) in Unix milliseconds. */
const PG_EPOCH_MS = 946_684_800_000;

type Relation = Extract<Message, { type: "relation" }>;

/**
 * The changes of the transactions among `messages` (pgoutput, in commit order) that the
 * copy does not hold: committed after `carried.lsn` (all of them when null) and not seen by
 * the snapshot of the full copy it builds on (`carried.snapshot`), as incremental runs skip them:
 * table, key, row, operation, and commit time from each transaction's Begin message. Also
 * answers the end of the last transaction read, to advance the slot to. `nextXid` is the old
 * active's next full transaction id when its slot was read (see `fullXid`).
 *
 * @example
 * const { changes } = divergentChanges(messages, { lsn: "0/1A2B3C4", snapshot: null }, 1234n);
 */
export function divergentChanges(
  messages: Message[],
  carried: { lsn: string | null; snapshot: string | null },
  nextXid: bigint,
): { changes: DivergentChange[]; endLsn: bigint } {
  const after = carried.lsn === null ? -1n : lsn(carried.lsn);
  const seen = carried.snapshot === null ? () => false : visibleIn(carried.snapshot);
  const relations = new Map<number, Relation>();
  const changes: DivergentChange[] = [];
  let current: { xid: number; at: string; ops: Omit<DivergentChange, "committedAt" | "commitLsn" | "seq">[] } | null = null;
  let endLsn = 0n;
  const name = (relid: number) => {
    const r = relations.get(relid);
    return r ? `${r.schema}.${r.table}` : `relation ${relid}`;
  };
  const rowOf = (relid: number, row: Value[]) => {
    const out: Record<string, string | null> = {};
    for (const [i, c] of (relations.get(relid)?.columns ?? []).entries()) {
      const v = row[i];
      if (v !== undefined && v !== UNCHANGED) out[c.name] = v;
    }
    return out;
  };
  const keyOf = (relid: number, row: Value[]) => {
    const columns = relations.get(relid)?.columns ?? [];
    const keyed = columns.some((c) => c.key) ? columns.filter((c) => c.key) : columns;
    const key: Record<string, string | null> = {};
    for (const c of keyed) {
      const v = row[columns.indexOf(c)];
      key[c.name] = v === undefined || v === UNCHANGED ? null : v;
    }
    return key;
  };
  for (const m of messages) {
    if (m.type === "relation") relations.set(m.relid, m);
    else if (m.type === "begin") current = { xid: m.xid, at: new Date(PG_EPOCH_MS + Number(m.commitTime / 1000n)).toISOString(), ops: [] };
    else if (m.type === "insert")
      current?.ops.push({ table: name(m.relid), key: keyOf(m.relid, m.row), row: rowOf(m.relid, m.row), operation: "insert" });
    else if (m.type === "update")
      current?.ops.push({ table: name(m.relid), key: keyOf(m.relid, m.old ?? m.row), row: rowOf(m.relid, m.row), operation: "update" });
    else if (m.type === "delete")
      current?.ops.push({ table: name(m.relid), key: keyOf(m.relid, m.old), row: rowOf(m.relid, m.old), operation: "delete" });
    else if (m.type === "truncate")
      for (const id of m.relids) current?.ops.push({ table: name(id), key: null, row: null, operation: "truncate" });
    else if (m.type === "commit") {
      endLsn = m.endLsn;
      if (current && m.commitLsn > after && !seen({ xid: fullXid(current.xid, nextXid), commitLsn: m.commitLsn })) {
        const at = current.at;
        changes.push(...current.ops.map((op, seq) => ({ ...op, committedAt: at, commitLsn: lsnText(m.commitLsn), seq })));
      }
      current = null;
    }
  }
  return { changes, endLsn };
}

/**
 * After a failover, at the first tick that reaches the old active again: fences it (when
 * `settle` has not already), then lists every change it committed after the last carried
 * position in `spillway.divergent` on the new active (never applies them), forgets its copy
 * records so that the next backup to it is a full one, and records `failover.divergent`, an
 * alert saying how many. Its slot is read from the carried position on and advanced as the
 * list is written, so an interrupted listing goes on where it stopped. Must run under the
 * lease, after the state copies were settled.
 *
 * @example
 * await resolveFailovers(projects, events, { copies, winner, schemas: settings.schemas });
 */
export async function resolveFailovers(
  projects: Projects,
  events: EventLog,
  s: { copies: Record<ProjectName, Outcome<ProjectState>>; winner: ActiveState; schemas: string[] | null },
): Promise<number> {
  if (!s.copies[s.winner.active].ok) return 0;
  const active = projects[s.winner.active];
  const pending = await active.sql<
    {
      epoch: string;
      from_project: ProjectName;
      slot: string | null;
      base_snapshot: string | null;
      carried_lsn: string | null;
      note: string | null;
      acked: boolean;
    }[]
  >`
    select epoch::text, from_project, slot, base_snapshot, carried_lsn::text, note, acked_at is not null as acked
    from spillway.failover where resolved_at is null order by epoch`;
  let resolved = 0;
  for (const f of pending) {
    if (f.from_project === s.winner.active || !s.copies[f.from_project].ok) continue;
    const old = projects[f.from_project];
    // Fenced before anything is read there (`settle` has done it; this only makes sure): no
    // app write may land after the listing.
    await writePublished(old, { to: s.winner.active, epoch: s.winner.epoch, since: s.winner.since });
    const epoch = Number(f.epoch);
    let note: string | null = null;
    try {
      note = await listDivergent(old, active, { epoch, slot: f.slot, carried: { lsn: f.carried_lsn, snapshot: f.base_snapshot } });
    } catch (e) {
      note = `its changes could not be read (${describeError(e)})`;
    }
    const [counted] = await active.sql<{ n: number }[]>`select count(*)::int as n from spillway.divergent where epoch = ${epoch}`;
    const n = counted?.n ?? 0;
    if (note && !f.acked) {
      // Not resolved: the old active's rows are the only record of what was not listed. They
      // are copied aside there, and it is backed up to only once an operator acknowledges it.
      const kept = await keepAside(old, epoch, s.schemas);
      await active.sql`update spillway.failover set divergent = ${n}, note = ${note} where epoch = ${epoch}`;
      if (f.note === null)
        await events.record(
          "error",
          "failover.divergent",
          `${f.from_project} answers again and is fenced; ${note}. Its carried tables were copied aside on ${f.from_project} into schema ${kept}, and it is not backed up to until the failover is acknowledged (POST /failover/ack {"epoch": ${epoch}}) after comparing it with ${s.winner.active} by hand (docs/failover.md). ${n} changes were listed in spillway.divergent on ${s.winner.active}`,
          { project: f.from_project, data: { epoch, divergent: n, carriedLsn: f.carried_lsn, note, keptIn: kept } },
        );
      continue;
    }
    // Its copy is not the new active's any more: the next backup to it starts afresh.
    await old.sql.begin("read write", (tx) => tx`delete from spillway.replica where id`);
    await discardStaging(old).catch(() => undefined);
    await active.sql`update spillway.failover set resolved_at = now(), divergent = ${n}, note = ${note} where epoch = ${epoch}`;
    resolved += 1;
    const where = `spillway.divergent on ${s.winner.active}`;
    await events.record(
      note || n > 0 ? "warn" : "info",
      "failover.divergent",
      note
        ? `the failover at epoch ${epoch} was acknowledged with ${f.from_project}'s changes not listed (${note}); ${n} changes were listed in ${where}, and ${f.from_project} is backed up to again`
        : `${f.from_project} answers again and is fenced; ${n} changes it committed after the failover's last carried position (${f.carried_lsn}) were not applied: they are listed in ${where} for review (docs/failover.md)`,
      { project: f.from_project, data: { epoch, divergent: n, carriedLsn: f.carried_lsn, note } },
    );
  }
  return resolved;
}

// Reads the old active's slot from the carried position on; answers why it could not, or null.
async function listDivergent(
  old: Project,
  active: Project,
  f: { epoch: number; slot: string | null; carried: { lsn: string | null; snapshot: string | null } },
): Promise<string | null> {
  if (!f.slot) return "no change capture slot recorded its position, so what it committed after the failover's copy is not known";
  if ((await slotRetainedBytes(old, f.slot)) === null) {
    return `its change capture slot ${f.slot} is gone (dropped or invalidated), so what it committed after the failover's copy is not known`;
  }
  await flushWal(old);
  for (;;) {
    const messages: Message[] = [];
    let nextXid = 0n;
    const { changes: read } = await peekChanges(old, f.slot, undefined, async (chunk, next) => {
      nextXid = next;
      for (const r of chunk) messages.push(decode(r.data));
    });
    if (read === 0) return null;
    const { changes, endLsn } = divergentChanges(messages, f.carried, nextXid);
    await active.sql.begin("read write", (tx) => insertDivergent(tx, f.epoch, old.name, changes));
    // Listed: the slot may forget them (a listing cut short goes on from here).
    await advanceSlot(old, f.slot, lsnText(endLsn));
    if (read < PEEK_CHANGES) return null;
  }
}

async function insertDivergent(tx: Db, epoch: number, project: ProjectName, changes: DivergentChange[]): Promise<void> {
  if (changes.length === 0) return;
  await tx`
    insert into spillway.divergent (epoch, commit_lsn, seq, project, table_name, key, "row", operation, committed_at)
    select ${epoch}, c.lsn::pg_lsn, c.seq, ${project}, c.tab, c.k::jsonb, c.r::jsonb, c.op, c.at
    from unnest(${changes.map((c) => c.commitLsn)}::text[], ${changes.map((c) => c.seq)}::int[], ${changes.map((c) => c.table)}::text[],
      ${changes.map((c) => (c.key === null ? null : JSON.stringify(c.key)))}::text[],
      ${changes.map((c) => (c.row === null ? null : JSON.stringify(c.row)))}::text[], ${changes.map((c) => c.operation)}::text[],
      ${changes.map((c) => c.committedAt)}::timestamptz[]) as c(lsn, seq, tab, k, r, op, at)
    on conflict do nothing`;
}

/** What `/status` shows of the divergent changes: how many, and the latest 100. */
export interface DivergentStatus {
  count: number;
  changes: (DivergentChange & { project: ProjectName; epoch: number })[];
}

/**
 * The divergent changes listed in either project, for `/status`: they stay in the project
 * failed over to, which a later switch may have made the standby. Null when neither could be read.
 *
 * @example
 * const { count, changes } = (await readDivergent(projects))!;
 */
export async function readDivergent(projects: Projects): Promise<DivergentStatus | null> {
  const read = await onBoth(projects, (p) => divergentOf(p.sql));
  const found = PROJECT_NAMES.flatMap((n) => {
    const o = read[n];
    return o.ok ? [o.value] : [];
  });
  if (found.length === 0) return null;
  const changes = found
    .flatMap((f) => f.changes)
    .sort(
      (a, b) => b.epoch - a.epoch || (lsn(b.commitLsn) > lsn(a.commitLsn) ? 1 : lsn(b.commitLsn) < lsn(a.commitLsn) ? -1 : b.seq - a.seq),
    )
    .slice(0, 100);
  return { count: found.reduce((n, f) => n + f.count, 0), changes };
}

// Auth's columns that hold passwords, tokens and keys: listed in spillway.divergent (where
// re-applying a row needs them), never shown.
const SECRET_COLUMNS: Record<string, readonly string[]> = {
  "auth.users": [
    "encrypted_password",
    "confirmation_token",
    "recovery_token",
    "email_change_token_new",
    "email_change_token_current",
    "phone_change_token",
    "reauthentication_token",
  ],
  "auth.refresh_tokens": ["token"],
  "auth.sessions": ["refresh_token_hmac_key"],
  "auth.mfa_factors": ["secret"],
  "auth.mfa_challenges": ["otp_code"],
  "auth.one_time_tokens": ["token_hash"],
  "auth.flow_state": ["auth_code", "provider_access_token", "provider_refresh_token"],
};

/**
 * A divergent row's values as `/status` shows them: Auth's passwords, tokens and keys
 * replaced by "[redacted]" (a null stays null, so that whether one was set still shows).
 *
 * @example
 * shownValues("auth.users", { id: "…", encrypted_password: "$2a$10$…" }) // { id: "…", encrypted_password: "[redacted]" }
 */
export function shownValues(table: string, values: Record<string, string | null> | null): Record<string, string | null> | null {
  const secret = SECRET_COLUMNS[table];
  if (!values || !secret) return values;
  return Object.fromEntries(Object.entries(values).map(([c, v]) => [c, v !== null && secret.includes(c) ? "[redacted]" : v]));
}

async function divergentOf(sql: Db): Promise<DivergentStatus> {
  const rows = await sql<
    {
      epoch: string;
      commit_lsn: string;
      seq: number;
      project: ProjectName;
      table_name: string;
      key: Record<string, string | null> | null;
      row: Record<string, string | null> | null;
      operation: DivergentChange["operation"];
      committed_at: Date;
      total: number;
    }[]
  >`
    select epoch::text, commit_lsn::text, seq, project, table_name, key, "row", operation, committed_at, count(*) over ()::int as total
    from spillway.divergent order by epoch desc, commit_lsn desc, seq desc limit 100`;
  return {
    count: rows[0]?.total ?? 0,
    changes: rows.map((r) => ({
      epoch: Number(r.epoch),
      project: r.project,
      table: r.table_name,
      key: shownValues(r.table_name, r.key),
      row: shownValues(r.table_name, r.row),
      operation: r.operation,
      committedAt: r.committed_at.toISOString(),
      commitLsn: r.commit_lsn,
      seq: r.seq,
    })),
  };
}
