import type { TransactionSql } from "postgres";
import type { Db, Project } from "../project.ts";
import { copiedColumns, qualify, quoteIdent, type Table } from "./catalog.ts";
import { canonical } from "./checksum.ts";
import { copyTable } from "./copy.ts";
import { dropForeignSchemas, FDW_SERVER, pullTable, remoteSnapshot } from "./fdw.ts";
import { SNAPSHOT_SQL } from "./source.ts";

/** What staging Auth's tables for a staged full copy works with. */
export interface AuthStageInput {
  source: Project;
  target: Project;
  tables: Table[];
  strategy: "copy" | "fdw";
  /** The settings' version the run read (see `authStageHolds`). */
  settingsVersion: number;
}

/** What an Auth stage was staged with (`spillway.auth_stage`). */
export interface AuthStage {
  tables: string[];
  settingsVersion: number | null;
}

/**
 * Whether an Auth stage can be continued by a run that carries `tables` under the settings
 * of `settingsVersion`: it must hold those tables (`authSessions` turned on or off, a
 * carried table appearing, change them), and the settings must not have changed since it
 * was staged (`auth` turned off and on again leaves changes nobody captured).
 *
 * @example
 * authStageHolds({ tables: ["users"], settingsVersion: 3 }, ["users", "sessions"], 4) // false
 */
export function authStageHolds(stage: AuthStage, tables: string[], settingsVersion: number): boolean {
  const same = (a: string[], b: string[]) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
  return stage.settingsVersion === settingsVersion && same(stage.tables, tables);
}

const stageName = (t: Table) => qualify("spillway", `auth_stage_${t.name}`);

/**
 * The snapshot of a staged full copy's Auth tables: copied into stage tables on the
 * standby from one snapshot of the active the first time, and read back after.
 * Changes the snapshot did not see are collected from the change stream and replayed
 * when the copy publishes (`publishAuthStage`). A stage that no longer holds what the run
 * carries (`authStageHolds`) is dropped and Auth staged anew from a new snapshot: the app's
 * tables need no new start, since the new snapshot comes after every change the staged
 * copy has applied, and the changes after it are collected as before.
 *
 * @example
 * const snapshot = await stageAuth({ source, target, tables: plan.tables, strategy: "copy", settingsVersion: 4 });
 */
export async function stageAuth(input: AuthStageInput): Promise<string> {
  const names = input.tables.map((t) => t.name);
  const [row] = await input.target.sql<{ snapshot: string; tables: string[]; version: string | null }[]>`
    select snapshot, tables, settings_version::text as version from spillway.auth_stage where id`;
  const staged = row && { ...row, settingsVersion: row.version === null ? null : Number(row.version) };
  if (staged && authStageHolds(staged, names, input.settingsVersion)) return staged.snapshot;
  const load = async (dst: TransactionSql, move: (t: Table, stage: Table) => Promise<unknown>, snapshot: () => Promise<string>) => {
    await canonical(dst);
    await discardAuthStage(dst);
    const snap = await snapshot();
    for (const t of input.tables) {
      const stage = { ...t, qualified: stageName(t) };
      await dst.unsafe(`drop table if exists ${stage.qualified}`);
      await dst.unsafe(`create table ${stage.qualified} as select ${copiedColumns(t)} from ${t.qualified} with no data`);
      await dst.unsafe(`alter table ${stage.qualified} enable row level security`);
      await move(t, stage);
    }
    await dst`insert into spillway.auth_stage (id, snapshot, tables, settings_version) values (true, ${snap}, ${names}, ${input.settingsVersion})`;
    return snap;
  };
  if (input.strategy === "fdw") {
    return await input.target.sql.begin(async (dst) => {
      const local = "spillway_fdw_auth";
      const snap = await load(
        dst,
        (table, stage) => pullTable(dst, table, local, stage.qualified),
        async () => {
          const remote = await remoteSnapshot(dst);
          await dst.unsafe(`drop schema if exists ${local} cascade`);
          await dst.unsafe(`create schema ${local}`);
          await dst.unsafe(
            `import foreign schema auth limit to (${input.tables.map((t) => quoteIdent(t.name)).join(", ")}) from server ${FDW_SERVER} into ${local}`,
          );
          return remote;
        },
      );
      await dropForeignSchemas(dst, [local]);
      return snap;
    });
  }
  return await input.source.sql.begin("isolation level repeatable read read only", async (src) => {
    await canonical(src);
    const [row] = await src.unsafe<{ snapshot: string }[]>(`select ${SNAPSHOT_SQL} as snapshot`);
    return await input.target.sql.begin((dst) =>
      load(
        dst,
        (t, stage) => copyTable(src, dst, { ...t, binarySafe: false }, () => undefined, stage.qualified, false),
        async () => row!.snapshot,
      ),
    );
  });
}

/**
 * In the transaction that publishes a staged full copy (replica mode): the standby's
 * carried Auth tables get the staged rows, then the collected changes in the active's
 * order, so they stand at the same commit as the app's tables. Without `tables` (Auth not
 * carried) the collected changes are dropped and Auth's tables left alone.
 *
 * @example
 * await publishAuthStage(dst, plan.tables);
 */
export async function publishAuthStage(dst: TransactionSql, tables: Table[] | null): Promise<void> {
  if (tables) {
    for (const t of [...tables].reverse()) await dst.unsafe(`delete from ${t.qualified}`);
    for (const t of tables) {
      const cols = copiedColumns(t);
      await dst.unsafe(`insert into ${t.qualified} (${cols}) overriding system value select ${cols} from ${stageName(t)}`);
    }
    await dst`select spillway.replay_auth_stage()`;
  }
  await discardAuthStage(dst);
}

/**
 * Drops a staged copy of Auth's tables and what it collected (a new staging begins, or
 * the staged copy published).
 *
 * @example
 * await discardAuthStage(target.sql);
 */
export async function discardAuthStage(sql: Db): Promise<void> {
  const [row] = await sql<{ tables: string[] }[]>`select tables from spillway.auth_stage where id`;
  for (const name of row?.tables ?? []) await sql.unsafe(`drop table if exists ${qualify("spillway", `auth_stage_${name}`)}`);
  await sql`delete from spillway.auth_stage where id`;
  await sql`truncate spillway.auth_stage_changes`;
}
