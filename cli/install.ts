import { copyFileSync, existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { listMigrations, MIGRATIONS_DIR } from "./migrations.ts";

/**
 * Copies Spillway's migrations into an app's `supabase/migrations` under new timestamps
 * after the app's own, so the app's usual `supabase db push` applies them. A migration
 * already there (same name, any timestamp) is not copied again.
 *
 * @example
 * const copied = install("./my-app"); // ["20261201120000_spillway_schema.sql"]
 */
export function install(appDir: string, now: Date = new Date()): string[] {
  const target = join(appDir, "supabase", "migrations");
  if (!existsSync(target)) throw new Error(`${target} does not exist; run \`supabase init\` in ${appDir} first`);
  const existing = readdirSync(target);
  const versions = existing
    .map((f) => /^(\d{14})_/.exec(f)?.[1])
    .filter((v): v is string => Boolean(v))
    .sort();
  let next = Math.max(toSeconds(stamp(now)), versions.length ? toSeconds(versions.at(-1)!) + 1 : 0);
  const copied: string[] = [];
  for (const m of listMigrations(MIGRATIONS_DIR)) {
    if (existing.some((f) => f.endsWith(`_${m.name}.sql`))) continue;
    const file = `${fromSeconds(next)}_${m.name}.sql`;
    copyFileSync(join(MIGRATIONS_DIR, m.file), join(target, file));
    copied.push(file);
    next += 1;
  }
  return copied;
}

function stamp(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, "").slice(0, 14);
}

function toSeconds(version: string): number {
  const [y, mo, d, h, mi, s] = [0, 4, 6, 8, 10, 12].map((i, k) => Number(version.slice(i, k === 0 ? 4 : i + 2)));
  return Date.UTC(y!, mo! - 1, d!, h!, mi!, s!) / 1000;
}

function fromSeconds(seconds: number): string {
  return stamp(new Date(seconds * 1000));
}
