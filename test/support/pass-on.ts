import type { IncomingMessage, ServerResponse } from "node:http";

/**
 * Passes a request a stand-in does not serve on to `next` (another stand-in of the same
 * project), and its answer back, so that one URL serves a project as Supabase's does.
 *
 * @example
 * if (!url.pathname.startsWith("/storage/v1/")) return await passOn(req, res, options.next);
 */
export async function passOn(req: IncomingMessage, res: ServerResponse, next: string, body?: Buffer): Promise<void> {
  if (body === undefined) {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    body = Buffer.concat(chunks);
  }
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && k !== "host" && k !== "connection") headers.set(k, v);
  try {
    const answer = await fetch(`${next}${req.url}`, {
      method: req.method,
      headers,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : new Uint8Array(body),
    });
    // fetch has decoded the body: its length and encoding headers no longer hold.
    const passed = Object.fromEntries([...answer.headers].filter(([k]) => k !== "content-length" && k !== "content-encoding"));
    res.writeHead(answer.status, passed);
    res.end(Buffer.from(await answer.arrayBuffer()));
  } catch {
    res.writeHead(502).end();
  }
}
