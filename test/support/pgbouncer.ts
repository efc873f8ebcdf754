import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../cli/server.ts";
import type { TestServer } from "./postgres.ts";

/** A PgBouncer in front of one test server, as Supabase's pooler stands in front of a project. */
export interface PgBouncer {
  /** The pooled URL: same role and password as the server's `url`, the pooler's port. */
  url: string;
  mode: "transaction" | "session";
  stop(): Promise<void>;
}

const BINARY = "/usr/sbin/pgbouncer";

/**
 * Starts PgBouncer (Debian package `pgbouncer`) on a free port in front of `server`, in
 * transaction or session mode, with `poolSize` server connections at most: few, so that
 * clients share them as they share Supavisor's.
 *
 * @example
 * const bouncer = await startPgBouncer(server, "transaction", 2);
 * const sql = postgres(bouncer.url, { prepare: false });
 */
export async function startPgBouncer(server: TestServer, mode: PgBouncer["mode"], poolSize: number): Promise<PgBouncer> {
  const dir = mkdtempSync(join(tmpdir(), "spillway-pgbouncer-"));
  // PgBouncer will not run as root: it runs as `postgres`, which must read its files.
  chmodSync(dir, 0o777);
  const port = await freePort();
  const target = new URL(server.url);
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    chmodSync(join(dir, name), 0o644);
  };
  file("userlist.txt", `"${decodeURIComponent(target.username)}" "${server.password}"\n`);
  file(
    "pgbouncer.ini",
    [
      "[databases]",
      `postgres = host=127.0.0.1 port=${server.port} dbname=postgres`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = scram-sha-256",
      `auth_file = ${join(dir, "userlist.txt")}`,
      `pool_mode = ${mode}`,
      `default_pool_size = ${poolSize}`,
      "max_client_conn = 200",
      "server_lifetime = 3600",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "",
    ].join("\n"),
  );
  const args = process.getuid?.() === 0 ? ["-u", "postgres", join(dir, "pgbouncer.ini")] : [join(dir, "pgbouncer.ini")];
  const proc: ChildProcess = spawn(BINARY, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  await waitForPort(port, exited, () => stderr);
  const url = new URL(server.url);
  url.port = String(port);
  return {
    url: url.toString(),
    mode,
    async stop() {
      proc.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPort(port: number, exited: Promise<void>, output: () => string): Promise<void> {
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (gone) throw new Error(`pgbouncer exited: ${output()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`pgbouncer did not listen on ${port}: ${output()}`);
}
