import { readFileSync } from "node:fs";
import postgres from "postgres";
import type { TestPair } from "./postgres.ts";

const schema = readFileSync(new URL("./fixture.sql", import.meta.url), "utf8");
const data = readFileSync(new URL("./fixture-data.sql", import.meta.url), "utf8");

/**
 * Applies the fixture schema to both projects as the app's role, and one batch of rows to
 * the primary.
 *
 * @example
 * await loadFixture(pair);
 */
export async function loadFixture(pair: TestPair): Promise<void> {
  for (const url of [pair.urls.primary, pair.urls.secondary]) {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await sql.unsafe(schema);
      if (url === pair.urls.primary) await sql.unsafe(data);
    } finally {
      await sql.end();
    }
  }
}

/**
 * Adds another batch of rows to the primary (as the app would).
 *
 * @example
 * await addRows(pair);
 */
export async function addRows(pair: TestPair): Promise<void> {
  const sql = postgres(pair.urls.primary, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(data);
  } finally {
    await sql.end();
  }
}
