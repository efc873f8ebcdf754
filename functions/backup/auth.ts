import type { TransactionSql } from "postgres";
import type { ProjectName } from "../names.ts";
import type { Db, Project } from "../project.ts";
import { type Catalog, foreignKeyOrder, qualify, quoteIdent, readCatalog, type Table } from "./catalog.ts";
import { LOAD_MARK } from "./checksum.ts";
import { copyTable } from "./copy.ts";
import { FDW_SERVER, pullTable } from "./fdw.ts";
import { schemaDiff } from "./schema-diff.ts";

/**
 * The tables of Supabase Auth (GoTrue) a backup carries: what signing in on the new active
 * needs. Users and their identities (password hashes, providers); MFA factors; one-time
 * tokens, so that a code sent just before a switch can still be typed in; the SSO and
 * SAML settings. Sessions, refresh tokens and their MFA claims are bound to
 * each project's JWT secret and are carried only with `authSessions` (`SESSION_TABLES`);
 * in-flight login steps (flow_state, mfa_challenges, saml_relay_states), the audit log and
 * GoTrue's own migration table never.
 */
export const CARRIED_AUTH_TABLES = [
  "users",
  "identities",
  "mfa_factors",
  "one_time_tokens",
  "sso_providers",
  "sso_domains",
  "saml_providers",
];

/**
 * Auth's session tables. With `authSessions` (both projects share one JWT secret) they are
 * carried like the others; without, they are emptied on the standby: sessions it issued
 * while it was the active would otherwise come back to life on a failback, after their
 * users signed out or were banned on the other project.
 */
export const SESSION_TABLES = ["refresh_tokens", "mfa_amr_claims", "sessions"];

/** The change table, as the change stream names it. */
export const AUTH_CHANGES = "spillway.auth_changes";

// Spillway's change tables, as its migration defines them (id an identity on the active's
// table, a plain copy of it in the stage's).
function changeTable(name: string, identity: "" | "a"): Table {
  const column = (n: string, type: string, notNull = true) => ({ name: n, type, notNull, generated: false, identity: "" as const });
  return {
    oid: 0,
    schema: "spillway",
    name,
    qualified: qualify("spillway", name),
    partition: false,
    rowSecurity: true,
    primaryKey: ["id"],
    uniqueColumns: [],
    binarySafe: true,
    columns: [
      { ...column("id", "bigint"), identity },
      column("tbl", "text"),
      column("op", "text"),
      column("old", "jsonb", false),
      column("new", "jsonb", false),
      column("at", "timestamp with time zone"),
    ],
  };
}

async function hasUsers(sql: Db): Promise<boolean> {
  const [row] = await sql<{ ok: boolean }[]>`select pg_catalog.to_regclass('auth.users') is not null as ok`;
  return row?.ok ?? false;
}

/** What a run does with Auth's tables. */
export interface AuthPlan {
  /** The active's carried tables in load order; null when nothing of Auth is carried. */
  tables: Table[] | null;
  /** The standby's session tables (`SESSION_TABLES` it has) each run empties: none when they are carried. */
  sessions: Table[];
  /**
   * Why Auth is not carried by this run although the settings carry it: differences between
   * the projects' Auth tables the standby could not hold users across (`bridgeAuth`). The
   * app's tables are carried all the same.
   */
  refused: string[];
  /** Of `refused`: the columns the standby requires that the active's Auth lacks (the active's GoTrue is behind). */
  lacking: string[];
  /** Columns only one project's Auth has: users are carried on the columns both have. */
  skew: string[];
  /** The standby's `spillway.auth_changes` and `spillway.auth_stage_changes`, where the stream writes. */
  changes: Table;
  stageChanges: Table;
  /**
   * The active's `auth_generation`: what its capture followed, moved on by every change of
   * its own `auth`/`authSessions` (null when nothing is carried).
   */
  generation: number | null;
}

/** The settings that say what of Auth is carried. */
export interface AuthSettings {
  auth: boolean;
  authSessions: boolean;
}

/**
 * The enum labels only the active has, of the enum types its carried Auth columns use
 * (GoTrue adds labels, such as `auth.factor_type` 'phone', on the project upgraded first):
 * a row holding one could not be written on the standby. Pure.
 *
 * @example
 * enumSkew({ "auth.factor_type": ["totp", "webauthn", "phone"] }, { "auth.factor_type": ["totp", "webauthn"] })
 * // ["auth.factor_type: label 'phone' exists only on the active"]
 */
export function enumSkew(active: Record<string, string[]>, standby: Record<string, string[]>): string[] {
  return Object.entries(active).flatMap(([type, labels]) => {
    const known = standby[type];
    if (!known) return [`${type}: enum type exists only on the active`];
    return labels.filter((l) => !known.includes(l)).map((l) => `${type}: label '${l}' exists only on the active`);
  });
}

// The labels of each enum type (or array of one) the columns of these Auth tables use.
async function readAuthEnums(sql: Db, tables: string[]): Promise<Record<string, string[]>> {
  const rows = await sql<{ type: string; labels: string[] }[]>`
    select tn.nspname || '.' || t.typname as type, array_agg(e.enumlabel::text order by e.enumsortorder) as labels
    from pg_catalog.pg_type t
    join pg_catalog.pg_namespace tn on tn.oid = t.typnamespace
    join pg_catalog.pg_enum e on e.enumtypid = t.oid
    where exists (
      select 1 from pg_catalog.pg_attribute a
      join pg_catalog.pg_class c on c.oid = a.attrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'auth' and c.relname = any (${tables}::text[]) and a.attnum > 0 and not a.attisdropped
        and (a.atttypid = t.oid or a.atttypid = t.typarray))
    group by tn.nspname, t.typname`;
  return Object.fromEntries(rows.map((r) => [r.type, r.labels]));
}

/**
 * Reads what a run carries of Auth: nothing when `auth` is false or the active has no
 * `auth.users`; otherwise the carried tables the active has (the session tables too with
 * `authSessions`) on the columns the standby has too (`bridgeAuth`): GoTrue is upgraded on
 * one project before the other. Nothing either when the standby could not hold the
 * active's users (`refused`).
 *
 * @example
 * const auth = await planAuth(source, target, settings);
 * if (auth.refused.length > 0) console.warn(auth.refused);
 */
export async function planAuth(source: Project, target: Project, settings: AuthSettings): Promise<AuthPlan> {
  const plan: AuthPlan = {
    tables: null,
    sessions: [],
    refused: [],
    lacking: [],
    skew: [],
    changes: changeTable("auth_changes", "a"),
    stageChanges: changeTable("auth_stage_changes", ""),
    generation: null,
  };
  if (!settings.auth || !(await hasUsers(source.sql))) return plan;
  // One query at a time on each project (a second connection costs more than the query).
  const [[active, [generation]], standby] = await Promise.all([
    readCatalog(source.sql, ["auth"], { sequences: false }).then(
      async (catalog) =>
        [catalog, await source.sql<{ n: string }[]>`select auth_generation::text as n from spillway.settings where id`] as const,
    ),
    readCatalog(target.sql, ["auth"], { sequences: false }),
  ]);
  const { shared: a, refused, lacking, skew } = bridgeAuth(carried(active, settings.authSessions), carried(standby, settings.authSessions));
  for (const t of a.tables)
    if (t.primaryKey.length === 0) refused.push(`auth.${t.name}: has no primary key; Spillway carries Auth's tables by key`);
  const names = a.tables.map((t) => t.name);
  refused.push(...enumSkew(await readAuthEnums(source.sql, names), await readAuthEnums(target.sql, names)));
  const sessions = settings.authSessions ? [] : SESSION_TABLES.flatMap((name) => standby.tables.filter((t) => t.name === name));
  if (refused.length > 0) return { ...plan, refused, lacking, skew };
  return { ...plan, tables: foreignKeyOrder(a.tables, a.foreignKeys), sessions, skew, generation: Number(generation?.n ?? 0) };
}

/**
 * Bridges the two projects' carried Auth tables: the active's on the columns the standby
 * has too (`shared`); a column only one side has is `skew` (GoTrue's migrations ran on one
 * project first), except one the standby requires (NOT NULL, no default) that the active
 * lacks: the standby could not hold the active's users, so signing in there would break.
 * That, and every other difference (a table, a type, a key), is `refused`; such columns are
 * also named in `lacking`.
 *
 * @example
 * bridgeAuth(active, standby).skew // ["auth.users.is_anonymous exists only on the active: users are carried without it"]
 */
export function bridgeAuth(active: Catalog, standby: Catalog): { shared: Catalog; refused: string[]; lacking: string[]; skew: string[] } {
  const refused: string[] = [];
  const lacking: string[] = [];
  const skew: string[] = [];
  const byName = new Map(standby.tables.map((t) => [t.name, t]));
  const names = (t: Table | undefined) => new Set(t?.columns.map((c) => c.name));
  const tables = active.tables.map((a) => {
    const s = byName.get(a.name);
    if (!s) return a;
    const [onActive, onStandby] = [names(a), names(s)];
    for (const c of a.columns)
      if (!onStandby.has(c.name)) skew.push(`auth.${a.name}.${c.name} exists only on the active: users are carried without it`);
    for (const c of s.columns) {
      if (onActive.has(c.name)) continue;
      if (c.notNull && !c.generated && c.hasDefault === false) {
        lacking.push(`auth.${a.name}.${c.name}`);
        refused.push(
          `auth.${a.name}.${c.name} is NOT NULL without a default on the standby and missing on the active: the standby cannot hold the active's users until its Auth matches`,
        );
      } else skew.push(`auth.${a.name}.${c.name} exists only on the standby: it takes its default there`);
    }
    return { ...a, columns: a.columns.filter((c) => onStandby.has(c.name)) };
  });
  const activeNames = new Map(active.tables.map((t) => [t.name, names(t)]));
  const standbyShared = standby.tables.map((s) => ({
    ...s,
    columns: s.columns.filter((c) => activeNames.get(s.name)?.has(c.name) ?? true),
  }));
  const shared = { ...active, tables };
  refused.push(...schemaDiff(shared, { ...standby, tables: standbyShared }));
  return { shared, refused, lacking, skew };
}

/**
 * The carried Auth tables a project has (none without `auth.users`; the session tables
 * with `sessions`), for checks that compare the two projects' rows.
 *
 * @example
 * const tables = await carriedAuthTables(tx, settings.authSessions);
 */
export async function carriedAuthTables(sql: Db, sessions = false): Promise<Table[]> {
  return (await hasUsers(sql)) ? carried(await readCatalog(sql, ["auth"], { sequences: false }), sessions).tables : [];
}

// The carried tables of one side, with the foreign keys between them.
function carried(catalog: Catalog, sessions: boolean): Catalog {
  const wanted = sessions ? [...CARRIED_AUTH_TABLES, ...SESSION_TABLES] : CARRIED_AUTH_TABLES;
  const tables = catalog.tables.filter((t) => wanted.includes(t.name));
  const names = new Set(tables.map((t) => t.qualified));
  return {
    tables,
    foreignKeys: catalog.foreignKeys.filter((f) => names.has(f.table) && names.has(f.references)),
    indexes: [],
    sequences: [],
    rules: [],
    enums: [],
  };
}

/**
 * The schemas the fence covers: the replicated ones, and `auth` when Auth is carried, so
 * that the fenced project refuses sign-ups and sign-ins too.
 *
 * @example
 * fencedSchemas({ schemas: ["public"], auth: true }) // ["public", "auth"]
 */
export function fencedSchemas(settings: { schemas: string[]; auth: boolean }): string[] {
  return settings.auth ? [...settings.schemas, "auth"] : settings.schemas;
}

/**
 * Puts the capture trigger on the carried tables of both projects where it is missing:
 * on the active before its change stream starts, on the standby for when it becomes the
 * active. The trigger fires for GoTrue's writes only, never for Spillway's replica-mode
 * loads.
 *
 * @example
 * await prepareAuthCapture([source, target], plan.tables);
 */
export async function prepareAuthCapture(projects: Project[], tables: Table[]): Promise<void> {
  const names = tables.map((t) => t.name);
  for (const p of projects) {
    await p.sql.begin(async (tx) => {
      // Creating a trigger waits for transactions writing the table; never for long.
      await tx`set local lock_timeout = '10s'`;
      await tx`select spillway.ensure_auth_capture(${names})`;
    });
  }
}

/**
 * Replaces the standby's carried Auth tables with the active's rows, inside a load's
 * target transaction `dst` (replica mode: no app trigger fires, no foreign key action
 * runs) and from the load's snapshot: the source transaction `src` for COPY, or the fdw
 * link's remote transaction when `foreign`.
 *
 * @example
 * const moved = await copyAuth(src, dst, plan.tables, false);
 */
export async function copyAuth(src: Db, dst: TransactionSql, tables: Table[], foreign: boolean): Promise<{ rows: number; bytes: number }> {
  // Delete, not truncate: apps' tables reference auth.users, and Auth's tables are not ours.
  for (const t of [...tables].reverse()) await dst.unsafe(`delete from ${t.qualified}`);
  const moved = { rows: 0, bytes: 0 };
  if (foreign) {
    const local = "spillway_fdw_auth";
    await dst.unsafe(`drop schema if exists ${local} cascade`);
    await dst.unsafe(`create schema ${local}`);
    await dst.unsafe(
      `import foreign schema auth limit to (${tables.map((t) => quoteIdent(t.name)).join(", ")}) from server ${FDW_SERVER} into ${local}`,
    );
    for (const t of tables) {
      const m = await pullTable(dst, t, local, t.qualified);
      moved.rows += m.rows;
      moved.bytes += m.bytes;
    }
    await dst.unsafe(`drop schema ${local} cascade`);
    return moved;
  }
  for (const t of tables) {
    // Text COPY: Auth's enums and arrays carry type OIDs in binary form. No FREEZE: the
    // table was not truncated in this transaction.
    const m = await copyTable(src, dst, { ...t, binarySafe: false }, () => undefined, t.qualified, false);
    moved.rows += m.rows;
    moved.bytes += m.bytes;
  }
  return moved;
}

/**
 * Whether the standby's Auth tables are a copy of `source`'s carried tables that
 * incremental backups can build on: made from the same tables while the active's capture
 * followed what it follows now (its `generation`, see `AuthPlan`).
 *
 * @example
 * if (!(await authCopyBuildsOn(target.sql, "primary", plan.tables, plan.generation))) kind = "full";
 */
export async function authCopyBuildsOn(sql: Db, source: ProjectName, tables: Table[], generation: number | null): Promise<boolean> {
  const [row] = await sql<
    { source: string; tables: string[]; generation: string | null }[]
  >`select source, tables, source_generation::text as generation from spillway.auth_copy where id`;
  return (
    row?.source === source &&
    row.generation !== null &&
    Number(row.generation) === generation &&
    JSON.stringify([...row.tables].sort()) === JSON.stringify(tables.map((t) => t.name).sort())
  );
}

/**
 * In the transaction that publishes a copy of Auth: empties the standby's session tables
 * when they are not carried (in replica mode: a fenced standby's fence stays quiet, as for
 * every load), and moves the sequences of the carried tables (refresh_tokens.id) past
 * every id they hold, so that GoTrue hands out new ones once the standby is the active.
 *
 * @example
 * await settleSessions(tx, plan);
 */
export async function settleSessions(tx: Db, plan: AuthPlan): Promise<void> {
  if (!plan.tables) return;
  await settleAuthSequences(tx, plan.tables);
  if (plan.sessions.length === 0) return;
  await tx`set local session_replication_role = replica`;
  await tx.unsafe(LOAD_MARK);
  for (const t of plan.sessions) await tx.unsafe(`delete from ${t.qualified}`);
}

/**
 * Moves the sequences of the carried Auth tables (refresh_tokens.id) past every id the
 * standby's tables hold, in the transaction that wrote their rows: each committed batch of
 * an incremental backup, and not only its last, may be what a forced switch finds.
 *
 * @example
 * await settleAuthSequences(tx, plan.tables);
 */
export async function settleAuthSequences(tx: Db, tables: Table[]): Promise<void> {
  await tx`select spillway.settle_auth_sequences(${tables.map((t) => t.name)})`;
}

/**
 * Records, in the transaction that publishes a copy, which project the standby's Auth
 * tables come from; null when the copy carries none of Auth (the next copy that does is a
 * full one).
 *
 * @example
 * await recordAuthCopy(tx, "primary", plan.tables, settingsVersion, plan.generation);
 */
export async function recordAuthCopy(
  tx: Db,
  source: ProjectName | null,
  tables: Table[] | null,
  settingsVersion: number | undefined,
  generation: number | null,
): Promise<void> {
  await tx`delete from spillway.auth_copy where id`;
  if (source === null || tables === null) return;
  // Only while the settings are those the run read: the `auth` setting switched off and on
  // during the run would leave changes that neither side captured.
  await tx`
    insert into spillway.auth_copy (id, source, tables, source_generation)
    select true, ${source}, ${tables.map((t) => t.name)}, ${generation}::int8
    where ${settingsVersion ?? null}::int8 is null
       or exists (select 1 from spillway.settings s where s.id and s.version = ${settingsVersion ?? null}::int8)`;
}

/**
 * Puts the capture trigger back on each carried Auth table of the active that lacks it
 * (a table GoTrue recreated loses it, and with it every change since); answers their names.
 *
 * @example
 * const recaptured = await ensureAuthCapture(source, plan.tables);
 */
export async function ensureAuthCapture(source: Project, tables: Table[]): Promise<string[]> {
  const names = tables.map((t) => t.name);
  return await source.sql.begin("read write", async (tx) => {
    await tx`set local lock_timeout = '10s'`;
    const missing = await tx<{ name: string }[]>`
      select c.relname as name from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'auth' and c.relname = any(${names}) and c.relkind = 'r'
        and not exists (select 1 from pg_catalog.pg_trigger g where g.tgrelid = c.oid and g.tgname = 'spillway_auth_capture')`;
    if (missing.length > 0) await tx`select spillway.ensure_auth_capture(${names})`;
    return missing.map((m) => `auth.${m.name}`);
  });
}

/**
 * Deletes the active's captured changes: once committed they are in its change stream,
 * which is all the standby reads (the deletes reach it as changes that find nothing).
 *
 * @example
 * await pruneAuthChanges(source);
 */
export async function pruneAuthChanges(source: Project): Promise<void> {
  await source.sql`delete from spillway.auth_changes`;
}

/**
 * How many users a project's Auth holds; null when Auth is not carried or absent.
 *
 * @example
 * const users = await userCount(project.sql, settings.auth);
 */
export async function userCount(sql: Db, enabled: boolean): Promise<number | null> {
  if (!enabled || !(await hasUsers(sql))) return null;
  const [row] = await sql<{ n: string }[]>`select count(*)::int8::text as n from auth.users`;
  return Number(row!.n);
}
