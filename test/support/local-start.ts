import { readFileSync } from "node:fs";
import { join } from "node:path";
import postgres from "postgres";
import type { Child } from "./process.ts";

/**
 * Runs `fn` against one of the embedded projects a `spillway start` child runs, as the app
 * does: the role postgres, with the password its data dir keeps, at the port its last start
 * printed.
 *
 * @example
 * const [row] = await onStartedProject(child, dataDir, "primary", (sql) => sql`select 1`);
 */
export async function onStartedProject<T>(
  child: Child,
  dataDir: string,
  name: "primary" | "secondary",
  fn: (sql: postgres.Sql) => Promise<T>,
): Promise<T> {
  const printed = [...child.output().matchAll(new RegExp(`${name}\\s+postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:(\\d+)/`, "g"))].at(-1);
  if (!printed) throw new Error(`the start did not print the ${name} URL`);
  const { password } = JSON.parse(readFileSync(join(dataDir, "secrets.json"), "utf8")) as { password: string };
  const sql = postgres({
    host: "127.0.0.1",
    port: Number(printed[1]),
    user: "postgres",
    password,
    database: "postgres",
    max: 1,
    onnotice: () => {},
  });
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}
