import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Sql } from "postgres";

/** Spillway's own migrations folder, shipped with the package. */
export const MIGRATIONS_DIR = fileURLToPath(new URL("../supabase/migrations/", import.meta.url));

/** One migration file: `<version>_<name>.sql`. */
export interface Migration {
  version: string;
  name: string;
  file: string;
  sql: string;
}

/**
 * The migrations of a folder, oldest first.
 *
 * @example
 * const list = listMigrations(MIGRATIONS_DIR);
 */
export function listMigrations(dir: string): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{14}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => {
      const [, version, name] = /^(\d{14})_(.+)\.sql$/.exec(file)!;
      return { version: version!, name: name!, file, sql: readFileSync(join(dir, file), "utf8") };
    });
}

/**
 * The names (without version) of the migrations a database already carries, from the
 * Supabase CLI's own history table, so that our records and `supabase db push` agree.
 *
 * @example
 * const applied = await appliedNames(sql);
 */
export async function appliedNames(sql: Sql): Promise<Set<string>> {
  const [exists] = await sql<{ ok: boolean }[]>`select to_regclass('supabase_migrations.schema_migrations') is not null as ok`;
  if (!exists?.ok) return new Set();
  const rows = await sql<{ name: string | null }[]>`select name from supabase_migrations.schema_migrations`;
  return new Set(rows.map((r) => r.name ?? ""));
}

/**
 * Applies the migrations a database does not carry yet, each in its own transaction with
 * its history row (the same table and columns the Supabase CLI uses), and returns the
 * files applied. Migrations are matched by name, so a copy installed into an app under a
 * new timestamp counts as the same migration.
 *
 * @example
 * const applied = await applyMigrations(sql, listMigrations(MIGRATIONS_DIR));
 */
export async function applyMigrations(sql: Sql, migrations: Migration[]): Promise<string[]> {
  await sql.unsafe(`
    create schema if not exists supabase_migrations;
    create table if not exists supabase_migrations.schema_migrations (version text not null primary key, statements text[], name text);
  `);
  const done = await appliedNames(sql);
  const applied: string[] = [];
  for (const m of migrations) {
    if (done.has(m.name)) continue;
    await sql.begin(async (tx) => {
      await tx.unsafe(m.sql);
      await tx`insert into supabase_migrations.schema_migrations (version, statements, name) values (${m.version}, ${[m.sql]}, ${m.name})`;
    });
    applied.push(m.file);
  }
  return applied;
}
