import postgres from "postgres";
import { describeError } from "../functions/errors.ts";

/**
 * `spillway init`: stores the function URL and the cron token where the pg_cron job reads
 * them (Vault where present, else `spillway.secrets`) in both projects, and schedules the
 * job where pg_cron is enabled. Returns one line per project saying what it did, and what is
 * missing (pg_cron, pg_net) for the job to reach the function.
 *
 * @example
 * const lines = await init(urls, "https://ref.supabase.co/functions/v1/spillway", token);
 */
export async function init(urls: { primary: string; secondary: string }, functionUrl: string, cronToken: string): Promise<string[]> {
  const lines: string[] = [];
  for (const [name, url] of Object.entries(urls)) {
    const sql = postgres(url, { max: 1, connect_timeout: 10, onnotice: () => {} });
    try {
      const [installed] = await sql<{ ok: boolean }[]>`select to_regprocedure('spillway.schedule_tick()') is not null as ok`;
      if (!installed?.ok) throw new Error(`the ${name} database lacks Spillway's migrations; run supabase db push on it first`);
      const [vault] = await sql<{ ok: boolean }[]>`select to_regprocedure('vault.create_secret(text, text, text, uuid)') is not null as ok`;
      const secrets = { spillway_function_url: functionUrl, spillway_cron_token: cronToken };
      // Read-write of its own: the database may be read-only by default (past its quota).
      await sql.begin("read write", async (tx) => {
        for (const [key, value] of Object.entries(secrets)) {
          if (vault?.ok) {
            const [existing] = await tx<{ id: string }[]>`select id from vault.secrets where name = ${key}`;
            if (existing) await tx`select vault.update_secret(${existing.id}::uuid, ${value})`;
            else await tx`select vault.create_secret(${value}, ${key})`;
          } else {
            await tx`insert into spillway.secrets (name, value) values (${key}, ${value})
                     on conflict (name) do update set value = excluded.value, updated_at = now()`;
          }
        }
      });
      // The retention job too, for pg_cron enabled after the migrations ran.
      const [scheduled] = await sql.begin(
        "read write",
        (tx) => tx<{ ok: boolean }[]>`select spillway.schedule_tick() as ok, spillway.schedule_retention_guard() as guarded`,
      );
      const [net] = await sql<
        { ok: boolean }[]
      >`select to_regprocedure('net.http_post(text, jsonb, jsonb, jsonb, integer)') is not null as ok`;
      // The job posts with pg_net: without it the job runs every minute and reaches nothing.
      const scheduler = !scheduled?.ok
        ? `pg_cron is not enabled${net?.ok ? "" : " (nor pg_net)"}: enable ${net?.ok ? "it" : "both"}, then run init again`
        : net?.ok
          ? "pg_cron job spillway-tick runs every minute"
          : "pg_cron job spillway-tick is scheduled, but pg_net is not enabled, so it cannot reach the function: enable pg_net (Database → Extensions)";
      lines.push(
        `${name}: function URL and cron token stored in ${vault?.ok ? "Vault" : "spillway.secrets (no Vault here)"}; ${scheduler}`,
      );
    } catch (e) {
      throw new Error(`${name}: ${describeError(e)}`);
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
  return lines;
}
