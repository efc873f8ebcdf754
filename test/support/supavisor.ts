import { createServer, type Socket, connect as tcpConnect } from "node:net";
import { freePort } from "../../cli/server.ts";
import type { TestServer } from "./postgres.ts";

/**
 * A stand-in for Supavisor's routing (Supabase's shared pooler): two or more projects served on
 * ONE host and port, each connection routed by the tenant in its user name (`postgres.<ref>`)
 * to that project's server, with the user rewritten to `postgres`, as Supavisor does. Only the
 * routing is stood in for: each connection is passed through whole to a server of its own.
 */
export interface SupavisorStandIn {
  port: number;
  /** The URL of `ref`'s project through the stand-in: user `postgres.<ref>`, the server's password. */
  url(ref: string): string;
  /** Connections routed so far, by tenant. */
  routed: Record<string, number>;
  stop(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

/**
 * Starts the stand-in on a free port of 127.0.0.1 for `tenants` (ref → test server).
 *
 * @example
 * const pooler = await startSupavisorStandIn({ abcdefgh: pair.primary, ijklmnop: pair.secondary });
 * const sql = postgres(pooler.url("abcdefgh"));
 */
export async function startSupavisorStandIn(tenants: Record<string, TestServer>): Promise<SupavisorStandIn> {
  const port = await freePort();
  const routed: Record<string, number> = {};
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => undefined);
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 8) {
        const length = buffered.readInt32BE(0);
        if (buffered.length < length) return;
        const message = buffered.subarray(0, length);
        buffered = buffered.subarray(length);
        const code = message.readInt32BE(4);
        // No TLS or GSS here: the client goes on in the clear, as libpq's sslmode=prefer does.
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          client.write("N");
          continue;
        }
        client.pause();
        client.off("data", onData);
        if (code === CANCEL_REQUEST) {
          client.end();
          return;
        }
        route(client, message, buffered);
        return;
      }
    };
    client.on("data", onData);
  });

  const route = (client: Socket, startup: Buffer, rest: Buffer) => {
    const params = parseStartup(startup);
    const user = params.get("user") ?? "";
    const dot = user.indexOf(".");
    const ref = dot < 0 ? "" : user.slice(dot + 1);
    const target = tenants[ref];
    if (!target) {
      client.end(errorMessage(`Tenant or user not found: ${user}`));
      return;
    }
    routed[ref] = (routed[ref] ?? 0) + 1;
    params.set("user", user.slice(0, dot));
    const upstream = tcpConnect(target.port, "127.0.0.1");
    sockets.add(upstream);
    upstream.on("close", () => {
      sockets.delete(upstream);
      client.destroy();
    });
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.write(startupMessage(params));
    if (rest.length > 0) upstream.write(rest);
    client.pipe(upstream);
    upstream.pipe(client);
  };

  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    port,
    routed,
    url(ref) {
      const target = tenants[ref];
      if (!target) throw new Error(`no tenant ${ref}`);
      return `postgres://postgres.${ref}:${encodeURIComponent(target.password)}@127.0.0.1:${port}/postgres`;
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// StartupMessage: length, protocol version, then name\0value\0 pairs and a final \0.
function parseStartup(message: Buffer): Map<string, string> {
  const params = new Map<string, string>();
  params.set("\0protocol", String(message.readInt32BE(4)));
  const parts = message.subarray(8).toString("utf8").split("\0");
  for (let i = 0; i + 1 < parts.length && parts[i] !== ""; i += 2) params.set(parts[i]!, parts[i + 1]!);
  return params;
}

function startupMessage(params: Map<string, string>): Buffer {
  const body = [...params].filter(([k]) => k !== "\0protocol").flat();
  const text = Buffer.from(`${body.join("\0")}\0\0`, "utf8");
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + text.length, 0);
  head.writeInt32BE(Number(params.get("\0protocol")), 4);
  return Buffer.concat([head, text]);
}

// An ErrorResponse as the pooler sends one for an unknown tenant.
function errorMessage(text: string): Buffer {
  const fields = Buffer.from(`SFATAL\0C28000\0M${text}\0\0`, "utf8");
  const head = Buffer.alloc(5);
  head.write("E", 0);
  head.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([head, fields]);
}
