import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import postgres from "postgres";
import { passOn } from "./pass-on.ts";
import type { TestServer } from "./postgres.ts";
import { acceptWebSocket, type ServerSocket } from "./websocket.ts";

type Binding = { id: number; event: string; schema: string; table: string; filter?: string };
interface Member {
  ws: ServerSocket;
  topic: string;
  joinRef: string;
  role: string;
  bindings: Binding[];
  broadcast: { self?: boolean; ack?: boolean };
  presenceKey: string;
  meta: Record<string, unknown> | null;
}
type Message = [string | null, string | null, string, string, any];

/**
 * STAND-IN for Supabase Realtime, which cannot run here: one per project, speaking
 * realtime-js's own protocol (Phoenix channels over a WebSocket at `/realtime/v1/websocket`,
 * serializer vsn 2.0.0: JSON arrays `[join_ref, ref, topic, event, payload]`, broadcasts
 * from the client in the binary "user broadcast push" frame). The socket's `apikey` must be
 * the project's anon key (else 403), a join's `access_token` the anon key or an HS256 JWT
 * signed with `jwtSecret`. It serves:
 * - `postgres_changes` from the project's own committed writes: at a join, a row trigger on
 *   each table a binding names sends the row through NOTIFY, as the real service reads
 *   them from the WAL; a subscriber whose role may not select the table is refused; filters
 *   `column=eq|neq|lt|lte|gt|gte.value`; each message carries the ids of the bindings it matches;
 * - `broadcast` to the topic's other members (to the sender too with `self`; acked with `ack`);
 * - `presence`: `presence_state` at a join, `presence_diff` on track, untrack and leave.
 * Any other path is passed on to `next`, so that one URL serves a project as Supabase's does.
 *
 * @example
 * const rt = await startRealtime(pair.primary, { anonKey: "anon-primary", next: dataApi.url });
 */
export async function startRealtime(
  db: TestServer,
  options: { anonKey: string; next: string; jwtSecret?: string },
): Promise<{ url: string; members(topic: string): number; roles(topic: string): string[]; close(): Promise<void> }> {
  const admin = postgres(db.adminUrl, { max: 2, onnotice: () => {} });
  await admin.unsafe(TRIGGER_FUNCTION);
  const members = new Set<Member>();
  const send = (m: Member, message: Message) => m.ws.send(JSON.stringify(message));
  const listening = await admin.listen("realtime_standin", (text) => {
    const change = JSON.parse(text) as { schema: string; table: string; type: string; record?: any; old_record?: any };
    for (const m of members) {
      const ids = m.bindings.filter((b) => matches(b, change)).map((b) => b.id);
      if (ids.length > 0) send(m, [m.joinRef, null, m.topic, "postgres_changes", { ids, data: change }]);
    }
  });
  const inTopic = (topic: string) => [...members].filter((m) => m.topic === topic);
  const presenceDiff = (topic: string, key: string, joins: unknown[], leaves: unknown[]) => {
    const diff = { joins: joins.length ? { [key]: { metas: joins } } : {}, leaves: leaves.length ? { [key]: { metas: leaves } } : {} };
    for (const m of inTopic(topic)) send(m, [m.joinRef, null, topic, "presence_diff", diff]);
  };
  const leave = (m: Member) => {
    if (!members.delete(m)) return;
    if (m.meta) presenceDiff(m.topic, m.presenceKey, [], [m.meta]);
  };

  async function join(ws: ServerSocket, [joinRef, ref, topic, , payload]: Message): Promise<void> {
    const reply = (status: string, response: unknown) => ws.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status, response }]));
    const role = roleOf(payload?.access_token, options);
    if (!role) return reply("error", { reason: "Invalid token" });
    const config = payload?.config ?? {};
    const bindings: Binding[] = [];
    for (const [i, b] of ((config.postgres_changes ?? []) as Omit<Binding, "id">[]).entries()) {
      if (!b.table || !b.schema || b.schema === "*") return reply("error", { reason: "stand-in: name a schema and a table" });
      const [row] = await admin`select pg_catalog.has_table_privilege(${role}, ${`${b.schema}.${b.table}`}, 'select') as ok`.catch(() => [
        { ok: false },
      ]);
      if (!row?.ok) return reply("error", { reason: `Unable to subscribe to changes with given parameters: ${b.schema}.${b.table}` });
      await ensureTrigger(admin, b.schema, b.table);
      bindings.push({ ...b, id: 1000 + i });
    }
    for (const m of members) if (m.ws === ws && m.topic === topic) leave(m);
    const member: Member = {
      ws,
      topic,
      joinRef: joinRef ?? ref ?? "",
      role,
      bindings,
      broadcast: config.broadcast ?? {},
      presenceKey: config.presence?.key || randomUUID(),
      meta: null,
    };
    members.add(member);
    reply("ok", { postgres_changes: bindings });
    if (bindings.length > 0)
      send(member, [
        member.joinRef,
        null,
        topic,
        "system",
        { message: "Subscribed to PostgreSQL", status: "ok", extension: "postgres_changes", channel: topic.replace(/^realtime:/, "") },
      ]);
    if (config.presence?.enabled) {
      const state: Record<string, { metas: unknown[] }> = {};
      for (const m of inTopic(topic)) {
        if (!m.meta) continue;
        state[m.presenceKey] ??= { metas: [] };
        state[m.presenceKey]!.metas.push(m.meta);
      }
      send(member, [member.joinRef, null, topic, "presence_state", state]);
    }
  }

  function onMessage(ws: ServerSocket, message: Message) {
    const [joinRef, ref, topic, event, payload] = message;
    const ok = () => ws.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status: "ok", response: {} }]));
    if (topic === "phoenix" && event === "heartbeat") return ok();
    if (event === "phx_join") return void join(ws, message);
    const member = [...members].find((m) => m.ws === ws && m.topic === topic);
    if (!member)
      return ws.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status: "error", response: { reason: "unmatched topic" } }]));
    if (event === "phx_leave") {
      leave(member);
      return ok();
    }
    if (event === "access_token") {
      const role = roleOf(payload?.access_token, options);
      if (!role)
        return ws.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status: "error", response: { reason: "Invalid token" } }]));
      member.role = role;
      return ok();
    }
    if (event === "broadcast") {
      for (const m of inTopic(topic))
        if (m !== member || member.broadcast.self)
          send(m, [m.joinRef, null, topic, "broadcast", { type: "broadcast", event: payload.event, payload: payload.payload }]);
      if (member.broadcast.ack) ok();
      return;
    }
    if (event === "presence") {
      const old = member.meta;
      member.meta = payload.event === "track" ? { ...payload.payload, phx_ref: randomUUID() } : null;
      presenceDiff(topic, member.presenceKey, member.meta ? [member.meta] : [], old ? [old] : []);
      return ok();
    }
  }

  const server: Server = createServer((req, res) => void passOn(req, res, options.next));
  server.on("upgrade", (req, socket) => {
    const url = new URL(req.url ?? "/", "http://stand-in");
    if (url.pathname !== "/realtime/v1/websocket" || url.searchParams.get("apikey") !== options.anonKey) {
      socket.end("HTTP/1.1 403 Forbidden\r\n\r\n");
      return;
    }
    const ws = acceptWebSocket(req, socket);
    ws.onMessage((data) => onMessage(ws, typeof data === "string" ? (JSON.parse(data) as Message) : decodeBroadcastPush(data)));
    ws.onClose(() => {
      for (const m of members) if (m.ws === ws) leave(m);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    members: (topic) => inTopic(topic).length,
    roles: (topic) =>
      inTopic(topic)
        .map((m) => m.role)
        .sort(),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await listening.unlisten();
      await admin.end({ timeout: 1 });
    },
  };
}

// The row trigger sends each committed change of a table through NOTIFY: the notification
// is delivered at commit, and never for a write that rolled back (the fence's refusals).
const TRIGGER_FUNCTION = `
create schema if not exists realtime_standin;
create or replace function realtime_standin.notify() returns trigger language plpgsql set search_path = '' as $$
begin
  perform pg_catalog.pg_notify('realtime_standin', pg_catalog.json_build_object(
    'schema', tg_table_schema, 'table', tg_table_name, 'type', tg_op,
    'commit_timestamp', pg_catalog.to_char(pg_catalog.now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'columns', (select pg_catalog.json_agg(pg_catalog.json_build_object('name', a.attname, 'type', t.typname) order by a.attnum)
                from pg_catalog.pg_attribute a join pg_catalog.pg_type t on t.oid = a.atttypid
                where a.attrelid = tg_relid and a.attnum > 0 and not a.attisdropped),
    'record', case when tg_op <> 'DELETE' then pg_catalog.to_jsonb(new) end,
    'old_record', case when tg_op <> 'INSERT' then pg_catalog.to_jsonb(old) end,
    'errors', null)::text);
  return null;
end $$;`;

async function ensureTrigger(admin: postgres.Sql, schema: string, table: string): Promise<void> {
  const [found] = await admin`
    select 1 from pg_catalog.pg_trigger where tgname = 'realtime_standin_changes'
    and tgrelid = (select c.oid from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = ${schema} and c.relname = ${table})`;
  if (found) return;
  await admin`create trigger realtime_standin_changes after insert or update or delete on ${admin(schema)}.${admin(table)}
    for each row execute function realtime_standin.notify()`;
}

function matches(b: Binding, change: { schema: string; table: string; type: string; record?: any; old_record?: any }): boolean {
  if (b.schema !== change.schema || b.table !== change.table) return false;
  if (b.event !== "*" && b.event !== change.type) return false;
  if (!b.filter) return true;
  const [, column, op, value] = /^([^=]+)=(eq|neq|lt|lte|gt|gte)\.(.*)$/.exec(b.filter) ?? [];
  const row = change.type === "DELETE" ? change.old_record : change.record;
  if (!column || !row || !(column in row)) return false;
  const cell = row[column];
  const [a, v] = typeof cell === "number" ? [cell, Number(value)] : [String(cell), value!];
  return { eq: a === v, neq: a !== v, lt: a < v, lte: a <= v, gt: a > v, gte: a >= v }[op as "eq"];
}

// The role a token connects as: `anon` for the anon key, the JWT's own role when it is
// signed with the project's secret and not expired, otherwise none.
function roleOf(token: unknown, options: { anonKey: string; jwtSecret?: string }): string | null {
  if (token === undefined || token === options.anonKey) return "anon";
  if (typeof token !== "string" || !options.jwtSecret) return null;
  const [head, body, signature] = token.split(".");
  if (!head || !body || !signature) return null;
  const expected = createHmac("sha256", options.jwtSecret).update(`${head}.${body}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(body, "base64url").toString()) as { role?: string; exp?: number };
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) return null;
  return claims.role ?? null;
}

// realtime-js's binary "user broadcast push" (kind 3): lengths, then join_ref, ref, topic,
// event and metadata, then the payload (JSON when its encoding byte is 1).
function decodeBroadcastPush(data: ArrayBuffer): Message {
  const bytes = new Uint8Array(data);
  const [kind, joinRefLen, refLen, topicLen, eventLen, metaLen, encoding] = bytes;
  if (kind !== 3) throw new Error(`stand-in: binary frame of kind ${kind}`);
  const text = new TextDecoder();
  let at = 7;
  const take = (n: number) => {
    at += n;
    return text.decode(bytes.subarray(at - n, at));
  };
  const joinRef = take(joinRefLen!);
  const ref = take(refLen!);
  const topic = take(topicLen!);
  const event = take(eventLen!);
  take(metaLen!);
  const rest = bytes.subarray(at);
  const payload = encoding === 1 ? JSON.parse(text.decode(rest)) : rest;
  return [joinRef || null, ref || null, topic, "broadcast", { type: "broadcast", event, payload }];
}
