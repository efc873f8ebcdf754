import postgres from "postgres";
import type { TestServer } from "./postgres.ts";

/**
 * STAND-IN for pg_net, which cannot be installed here, as strict as the real extension:
 * `net.http_post` (same name and signature) only inserts the request into
 * `net.http_request_queue` and returns its id; a separate worker (`startNetWorker`, pg_net's
 * background worker) sends what is committed there and keeps the answer in
 * `net._http_response`. So a caller that rolls back sends nothing, and on a read-only
 * database the call itself fails.
 */
const NET_SCHEMA = `
create schema if not exists net;
create table net.http_request_queue (
  id bigserial primary key,
  method text not null,
  url text not null,
  headers jsonb not null,
  body bytea,
  timeout_milliseconds integer not null
);
create unlogged table net._http_response (
  id bigint,
  status_code integer,
  content_type text,
  headers jsonb,
  content text,
  timed_out boolean,
  error_msg text,
  created timestamptz not null default now()
);
create function net.http_post(url text, body jsonb default '{}', params jsonb default '{}',
  headers jsonb default '{"Content-Type": "application/json"}', timeout_milliseconds integer default 5000)
returns bigint language plpgsql security definer set search_path = '' as $$
declare
  request_id bigint;
begin
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
  values ('POST', url, headers, pg_catalog.convert_to(body::text, 'UTF8'), timeout_milliseconds)
  returning id into request_id;
  return request_id;
end $$;
revoke all on function net.http_post(text, jsonb, jsonb, jsonb, integer) from public;
grant usage on schema net to postgres;
grant execute on function net.http_post(text, jsonb, jsonb, jsonb, integer) to postgres;
grant select on net._http_response to postgres;
`;

/**
 * Builds the stand-in `net` schema (as the superuser, as enabling the extension does).
 *
 * @example
 * await installNet(server);
 */
export async function installNet(server: TestServer): Promise<void> {
  await server.admin.unsafe(NET_SCHEMA);
}

/**
 * pg_net's background worker: every 50 ms takes the committed requests from the queue, sends
 * them and stores each answer under the request's id. Its own transactions are read-write,
 * as the worker's are whatever the database's default.
 *
 * @example
 * const worker = startNetWorker(server);
 * await worker.close();
 */
export function startNetWorker(server: TestServer): { close(): Promise<void> } {
  const sql = postgres(server.adminUrl, { max: 1, onnotice: () => {} });
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        await sql.begin("read write", async (tx) => {
          const requests = await tx`
            delete from net.http_request_queue
            where id in (select id from net.http_request_queue order by id limit 10 for update skip locked)
            returning id, method, url, headers, convert_from(body, 'UTF8') as body, timeout_milliseconds`;
          for (const r of requests) {
            try {
              const res = await fetch(r.url, {
                method: r.method,
                headers: r.headers,
                body: r.body,
                signal: AbortSignal.timeout(r.timeout_milliseconds),
              });
              const content = await res.text();
              await tx`insert into net._http_response (id, status_code, content_type, headers, content, timed_out)
                values (${r.id}, ${res.status}, ${res.headers.get("content-type")}, ${tx.json(Object.fromEntries(res.headers))}, ${content}, false)`;
            } catch (e) {
              const timedOut = (e as Error).name === "TimeoutError";
              await tx`insert into net._http_response (id, timed_out, error_msg) values (${r.id}, ${timedOut}, ${(e as Error).message})`;
            }
          }
        });
      } catch {
        // The server restarting or going away: the worker tries again, as pg_net's does.
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async close() {
      stopped = true;
      await loop;
      await sql.end({ timeout: 1 });
    },
  };
}
