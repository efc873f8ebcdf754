// `npm run bench`: Spillway's figures as ratios against pg_dump | pg_restore on the same data,
// in the same run, on the machine's PostgreSQL (whose pg_dump matches its server).
// Prints `name: value (target)` lines; exits non-zero when a figure could not be measured.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { startTestServer, systemBinDir, type TestServer } from "../test/support/postgres.ts";
import { SCHEMA, fill } from "./dataset.ts";

const root = fileURLToPath(new URL("../", import.meta.url));
const megabytes = Number(process.env.BENCH_MB ?? 300);
const missing: string[] = [];

function figure(name: string, value: number | null, target: string, digits = 2): void {
  if (value === null || !Number.isFinite(value)) {
    missing.push(name);
    console.log(`${name}: not measured (${target})`);
  } else {
    console.log(`${name}: ${value.toFixed(digits)} (${target})`);
  }
}

async function timed(command: string, args: string[], env: Record<string, string> = {}): Promise<{ seconds: number; stdout: string }> {
  const started = performance.now();
  return await new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => { stdout += c; });
    child.stderr.on("data", (c: Buffer) => { stderr += c; });
    child.on("exit", (code) => code === 0
      ? resolve({ seconds: (performance.now() - started) / 1000, stdout })
      : reject(new Error(`${command} exited ${code}: ${stderr.slice(-2000)}`)));
  });
}

async function backupChild(servers: { primary: TestServer; secondary: TestServer }, mode: "full" | "auto") {
  const { stdout } = await timed(process.execPath, ["--import", "tsx", "bench/backup-child.ts"], {
    PRIMARY_URL: servers.primary.url, SECONDARY_URL: servers.secondary.url, MODE: mode,
  });
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as { ms: number; maxRssMb: number; cpuSeconds: number; rows: number; bytes: number; kind: string };
}

async function setStrategy(servers: TestServer[], strategy: "copy" | "fdw") {
  for (const s of servers) await s.admin`update spillway.settings set data = data || ${s.admin.json({ strategy })}, version = version + 1`;
}

async function main() {
  console.log(`# Spillway benchmark: ~${megabytes} MB dataset, PostgreSQL from ${systemBinDir()}`);
  const primary = await startTestServer({ system: true });
  const secondary = await startTestServer({ system: true });
  const servers = { primary, secondary };
  try {
    for (const s of [primary, secondary]) {
      const sql = postgres(s.url, { max: 1, onnotice: () => {} });
      await sql.unsafe(SCHEMA);
      await sql.end();
    }
    await secondary.admin`create database restore_target owner postgres`;
    const app = postgres(primary.url, { max: 1, onnotice: () => {} });
    await app.unsafe(fill(megabytes));
    const [size] = await app`select sum(pg_total_relation_size(c.oid))::int8 as bytes from pg_class c where c.relname in ('users', 'orders', 'events') and c.relkind = 'r'`;
    await app.end();
    const dataMb = Number(size!.bytes) / 1024 / 1024;
    figure("dataset_mb", dataMb, `about ${megabytes}`, 0);

    const bin = systemBinDir();
    const restoreUrl = secondary.url.replace(/\/postgres$/, "/restore_target");
    const dump = await timed("bash", ["-c", `set -o pipefail; "${bin}/pg_dump" -Fc -t public.users -t public.orders -t public.events -d "$SRC" | "${bin}/pg_restore" --no-owner -d "$DST"`], { SRC: primary.url, DST: restoreUrl });
    figure("pg_dump_restore_seconds", dump.seconds, "baseline: pg_dump -Fc | pg_restore into a fresh database");

    await setStrategy([primary, secondary], "copy");
    const copy = await backupChild(servers, "full");
    figure("full_backup_copy_seconds", copy.ms / 1000, "copy strategy, into the empty standby");
    figure("full_backup_copy_vs_pg_dump_restore", copy.ms / 1000 / dump.seconds, "target ≤ 1.0");
    figure("full_backup_copy_peak_rss_mb", copy.maxRssMb, "target ≤ 150", 1);
    figure("full_backup_copy_cpu_seconds_per_100mb", copy.cpuSeconds / (dataMb / 100), "process CPU, informative");

    await setStrategy([primary, secondary], "fdw");
    const fdw = await backupChild(servers, "full");
    figure("full_backup_fdw_seconds", fdw.ms / 1000, "fdw strategy, replacing the previous copy");
    figure("full_backup_fdw_vs_pg_dump_restore", fdw.ms / 1000 / dump.seconds, "target ≤ 1.25");
    figure("full_backup_fdw_cpu_seconds_per_100mb", fdw.cpuSeconds / (dataMb / 100), "process CPU, informative");
  } finally {
    await Promise.all([primary.destroy(), secondary.destroy()]);
  }
  if (missing.length > 0) {
    console.error(`not measured: ${missing.join(", ")}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(`bench failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
