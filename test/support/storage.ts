import { createHash, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import postgres from "postgres";
import { passOn } from "./pass-on.ts";
import type { TestServer } from "./postgres.ts";

/**
 * Supabase Storage's schema as its service creates it, in the columns the stand-in uses:
 * owned by its own role `supabase_storage_admin`; `postgres` holds every privilege on its
 * tables, as on a hosted project.
 *
 * @example
 * await installStorage(pair.primary);
 */
export async function installStorage(server: TestServer): Promise<void> {
  await server.admin.unsafe(`
    do $$ begin
      if not exists (select 1 from pg_roles where rolname = 'supabase_storage_admin') then
        create role supabase_storage_admin noinherit createrole;
      end if;
    end $$;
    create schema storage authorization supabase_storage_admin;
    set role supabase_storage_admin;
    create table storage.buckets (
      id text primary key, name text not null unique, owner uuid, public boolean default false,
      file_size_limit bigint, allowed_mime_types text[],
      created_at timestamptz default now(), updated_at timestamptz default now());
    create table storage.objects (
      id uuid primary key default gen_random_uuid(), bucket_id text references storage.buckets (id), name text,
      owner uuid, owner_id text, metadata jsonb, user_metadata jsonb, version text,
      created_at timestamptz default now(), updated_at timestamptz default now(), last_accessed_at timestamptz default now(),
      unique (bucket_id, name));
    create table storage.migrations (id integer primary key, name varchar(100) unique not null, executed_at timestamp default now());
    grant usage on schema storage to postgres, anon, authenticated, service_role;
    grant all on all tables in schema storage to postgres;
    reset role;`);
}

/**
 * STAND-IN for Supabase's Storage API, which cannot run here: one per project, on the
 * paths storage-js calls. It writes `storage.objects` and `storage.buckets` rows as
 * Storage's own role (`supabase_storage_admin`), one transaction per request, and keeps
 * the bytes in its own store (memory), never in the database:
 * - `POST /storage/v1/bucket`, `PUT /storage/v1/bucket/<id>` (service key) `{id, name?, public?, file_size_limit?, allowed_mime_types?}`;
 *   `GET /storage/v1/bucket`: the buckets.
 * - `POST|PUT /storage/v1/object/<bucket>/<name>`: an upload (`x-upsert: true` replaces);
 *   its row is written before the bytes are kept, so a refused row keeps nothing.
 * - `GET /storage/v1/object/<bucket>/<name>` (also `/object/authenticated/` and, for a
 *   public bucket, `/object/public/`): the bytes, with the row's etag.
 * - `DELETE /storage/v1/object/<bucket>` `{prefixes: [names]}`: the rows deleted, as JSON.
 * Keys: the project's anon key (role anon) or service key (service_role); other keys 403.
 * A database error is answered as Storage does, 400 with `{statusCode, error, message}`
 * (the fence's refusal among them). Any other path is passed on to `next`.
 *
 * @example
 * const storage = await startStorageApi(pair.primary, { anonKey, serviceKey, next: dataApi.url });
 */
export async function startStorageApi(
  db: TestServer,
  options: { anonKey: string; serviceKey: string; next: string },
): Promise<{ url: string; bytes: Map<string, Buffer>; refused: Set<string>; close(): Promise<void> }> {
  const sql = postgres(db.adminUrl, { max: 3, onnotice: () => {} });
  const bytes = new Map<string, Buffer>();
  // Uploads of these `bucket/name`s fail with a 500 (a test's broken store).
  const refused = new Set<string>();
  const asStorage = <T>(work: (tx: postgres.TransactionSql) => Promise<T>) =>
    sql.begin(async (tx) => {
      await tx`set local role supabase_storage_admin`;
      return await work(tx);
    }) as Promise<T>;
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://stand-in");
    if (!url.pathname.startsWith("/storage/v1/")) return await passOn(req, res, options.next);
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "Content-Type": "application/json", "Access-Control-Allow-Origin": "*", ...headers });
      res.end(JSON.stringify(body));
    };
    const fail = (status: number, error: string, message: string) => send(status, { statusCode: String(status), error, message });
    if (req.method === "OPTIONS") {
      res.writeHead(204, { "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "*", "Access-Control-Allow-Methods": "*" });
      return res.end();
    }
    const key = String(req.headers.authorization ?? "").replace(/^Bearer /, "");
    const role = key === options.serviceKey ? "service_role" : key === options.anonKey ? "anon" : null;
    const path = url.pathname.slice("/storage/v1".length);
    const body = await read(req);
    try {
      if (path === "/bucket" && req.method === "GET")
        return send(200, await asStorage((tx) => tx`select * from storage.buckets order by id`));
      if (path === "/bucket" && req.method === "POST") {
        if (role !== "service_role") return fail(403, "Unauthorized", "new row violates row-level security policy");
        const b = JSON.parse(body.toString() || "{}");
        await asStorage(
          (tx) => tx`insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
            values (${b.id}, ${b.name ?? b.id}, ${b.public ?? false}, ${b.file_size_limit ?? null}, ${b.allowed_mime_types ?? null})`,
        );
        return send(200, { name: b.id });
      }
      const bucketId = /^\/bucket\/([^/]+)$/.exec(path)?.[1];
      if (bucketId && req.method === "PUT") {
        if (role !== "service_role") return fail(403, "Unauthorized", "new row violates row-level security policy");
        const b = JSON.parse(body.toString() || "{}");
        await asStorage(
          (tx) => tx`update storage.buckets set public = ${b.public ?? false}, file_size_limit = ${b.file_size_limit ?? null},
            allowed_mime_types = ${b.allowed_mime_types ?? null}, updated_at = now() where id = ${decodeURIComponent(bucketId)}`,
        );
        return send(200, { message: "Successfully updated" });
      }
      const object = /^\/object\/(?:(public|authenticated)\/)?([^/]+)(?:\/(.+))?$/.exec(path);
      if (!object) return fail(404, "not_found", "Route not found");
      if (!role) return fail(403, "Unauthorized", "Invalid Compact JWS");
      const [, access, bucket, rawName] = object;
      const name = rawName === undefined ? undefined : decodeURIComponent(rawName);
      if ((req.method === "POST" || req.method === "PUT") && name) {
        if (refused.has(`${bucket}/${name}`)) return fail(500, "InternalError", "the store failed");
        const file = await fileOf(body, String(req.headers["content-type"] ?? "application/octet-stream"));
        const size = file.bytes.length;
        const etag = `"${createHash("md5").update(file.bytes).digest("hex")}"`;
        const metadata = {
          eTag: etag,
          size,
          mimetype: file.type,
          cacheControl: `max-age=${file.cacheControl ?? req.headers["cache-control"] ?? "3600"}`,
          lastModified: new Date().toISOString(),
          contentLength: size,
          httpStatusCode: 200,
        };
        const upsert = req.headers["x-upsert"] === "true" || req.method === "PUT";
        const [row] = await asStorage(
          (tx) => tx`
          insert into storage.objects (bucket_id, name, metadata, version) values (${bucket!}, ${name}, ${tx.json(metadata)}, ${randomUUID()})
          on conflict (bucket_id, name) do update set metadata = excluded.metadata, version = excluded.version, updated_at = now()
            where ${upsert}
          returning id`,
        );
        if (!row) return fail(400, "Duplicate", "The resource already exists");
        bytes.set(`${bucket}/${name}`, file.bytes);
        return send(200, { Id: row.id, Key: `${bucket}/${name}` });
      }
      if (req.method === "DELETE" && !name) {
        const { prefixes } = JSON.parse(body.toString() || "{}") as { prefixes: string[] };
        const deleted = await asStorage(
          (tx) => tx`delete from storage.objects where bucket_id = ${bucket!} and name = any(${prefixes}::text[]) returning *`,
        );
        for (const d of deleted) bytes.delete(`${bucket}/${d.name}`);
        return send(200, deleted);
      }
      if (req.method === "GET" && name) {
        const [row] = await asStorage(
          (tx) => tx`select o.metadata, b.public from storage.objects o join storage.buckets b on b.id = o.bucket_id
            where o.bucket_id = ${bucket!} and o.name = ${name}`,
        );
        const stored = bytes.get(`${bucket}/${name}`);
        if (!row || !stored || (access === "public" && !row.public)) return fail(400, "not_found", "Object not found");
        res.writeHead(200, { "Content-Type": row.metadata.mimetype, ETag: row.metadata.eTag, "Access-Control-Allow-Origin": "*" });
        return res.end(stored);
      }
      return fail(405, "invalid", "method not allowed");
    } catch (e) {
      const err = e as { message?: string };
      return fail(400, "DatabaseError", err.message ?? String(e));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    bytes,
    refused,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await sql.end({ timeout: 1 });
    },
  };
}

async function read(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

// An upload's bytes: the body itself, or (storage-js sends a Blob as a form) the form's file,
// with its type and the form's cacheControl.
async function fileOf(body: Buffer, contentType: string): Promise<{ bytes: Buffer; type: string; cacheControl?: string }> {
  if (!contentType.startsWith("multipart/form-data")) return { bytes: body, type: contentType };
  const form = await new Response(new Uint8Array(body), { headers: { "content-type": contentType } }).formData();
  const file = [...form.values()].find((v): v is File => typeof v !== "string");
  if (!file) throw new Error("no file in the form");
  const cacheControl = form.get("cacheControl");
  return {
    bytes: Buffer.from(await file.arrayBuffer()),
    type: file.type || "application/octet-stream",
    cacheControl: typeof cacheControl === "string" ? cacheControl : undefined,
  };
}
