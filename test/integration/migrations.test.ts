import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { install } from "../../cli/install.ts";
import { startTestServer, type TestServer } from "../support/postgres.ts";

const exec = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const supabase = join(root, "node_modules/.bin/supabase");

async function push(workdir: string, url: string): Promise<string> {
  const { stdout, stderr } = await exec(supabase, ["db", "push", "--db-url", `${url}?sslmode=disable`, "--yes", "--workdir", workdir], {
    cwd: workdir,
  });
  return stdout + stderr;
}

describe("Spillway's migrations through the real Supabase CLI", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ migrate: false });
  });
  after(async () => {
    await server?.destroy();
  });

  test("db push applies them as the non-superuser role; a second push is a no-op", async () => {
    const first = await push(root, server.url);
    assert.match(first, /Applying migration \d+_spillway_schema\.sql/);
    const second = await push(root, server.url);
    assert.match(second, /Remote database is up to date/);
    const [state] = await server.admin`select active, epoch from public.spillway_active`;
    assert.deepEqual({ ...state }, { active: "primary", epoch: "1" });
    const [owner] = await server.admin`select tableowner from pg_tables where schemaname = 'spillway' and tablename = 'state'`;
    assert.equal(owner!.tableowner, "postgres");
  });

  test("Supabase-clean: RLS on every table, anon reads the state row and nothing else", async () => {
    const noRls = await server.admin`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'r' and (n.nspname = 'spillway' or c.relname = 'spillway_active') and not c.relrowsecurity`;
    assert.deepEqual([...noRls], []);
    await server.admin.begin(async (tx) => {
      await tx`set local role anon`;
      const rows = await tx`select active, epoch from public.spillway_active`;
      assert.equal(rows.length, 1);
    });
    for (const statement of [
      "update public.spillway_active set epoch = 99",
      "insert into public.spillway_active (id, active, epoch) values (false, 'secondary', 5)",
      "delete from public.spillway_active",
      "select * from spillway.state",
      "select * from spillway.settings",
      "select * from spillway.events",
    ]) {
      for (const role of ["anon", "authenticated"]) {
        await assert.rejects(
          server.admin.begin(async (tx) => {
            await tx.unsafe(`set local role ${role}`);
            await tx.unsafe(statement);
          }),
          /permission denied/,
          `${role}: ${statement}`,
        );
      }
    }
    const definers = await server.admin`
      select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'spillway' and p.prosecdef
        and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))`;
    assert.deepEqual([...definers], []);
    const unsafeFunctions = await server.admin`
      select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'spillway' and not coalesce(p.proconfig @> array['search_path=""'], false)`;
    assert.deepEqual([...unsafeFunctions], []);
  });
});

describe("spillway install", () => {
  let server: TestServer;
  let app: string;
  before(async () => {
    server = await startTestServer({ migrate: false });
    app = mkdtempSync(join(tmpdir(), "spillway-app-"));
    mkdirSync(join(app, "supabase", "migrations"), { recursive: true });
    copyFileSync(join(root, "supabase/config.toml"), join(app, "supabase/config.toml"));
    writeFileSync(
      join(app, "supabase/migrations/20300101000000_notes.sql"),
      "create table public.notes (id bigint primary key, body text);\n",
    );
  });
  after(async () => {
    await server?.destroy();
    rmSync(app, { recursive: true, force: true });
  });

  test("copies the migrations after the app's own; db push applies both; a second install adds nothing", async () => {
    const copied = install(app, new Date("2026-01-01T00:00:00Z"));
    assert.equal(copied.length, readdirSync(join(root, "supabase/migrations")).length);
    const files = readdirSync(join(app, "supabase/migrations")).sort();
    assert.equal(files[0], "20300101000000_notes.sql");
    assert.match(files[1]!, /^20300101000001_spillway_schema\.sql$/);
    assert.deepEqual(install(app), []);
    assert.equal(readdirSync(join(app, "supabase/migrations")).length, files.length);

    const out = await push(app, server.url);
    assert.match(out, /20300101000000_notes\.sql/);
    assert.match(out, /spillway_schema\.sql/);
    const tables = await server.admin`select to_regclass('public.notes') as notes, to_regclass('spillway.state') as state`;
    assert.equal(tables[0]!.notes, "notes");
    assert.equal(tables[0]!.state, "spillway.state");
    assert.match(await push(app, server.url), /up to date/);
  });

  test("a folder without supabase/migrations is refused with a readable message", () => {
    assert.throws(() => install(join(app, "nope")), /does not exist; run `supabase init`/);
  });
});
