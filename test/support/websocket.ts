import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";

/** One accepted WebSocket connection, server side (RFC 6455, no extensions). */
export interface ServerSocket {
  send(data: string | Uint8Array): void;
  close(): void;
  onMessage(callback: (data: string | ArrayBuffer) => void): void;
  onClose(callback: () => void): void;
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/**
 * Completes the WebSocket handshake of an HTTP upgrade request and frames what follows:
 * text and binary messages (fragmented ones joined), ping answered, close answered. The
 * repository has no WebSocket server package; Node's own WebSocket is a client only.
 *
 * @example
 * server.on("upgrade", (req, socket) => { const ws = acceptWebSocket(req, socket); ws.onMessage((m) => ws.send(m)); });
 */
export function acceptWebSocket(req: IncomingMessage, socket: Duplex): ServerSocket {
  const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}${GUID}`).digest("base64");
  const protocol = String(req.headers["sec-websocket-protocol"] ?? "")
    .split(",")[0]
    ?.trim();
  socket.write(
    [
      "HTTP/1.1 101 Switching Protocols",
      "Upgrade: websocket",
      "Connection: Upgrade",
      `Sec-WebSocket-Accept: ${accept}`,
      ...(protocol ? [`Sec-WebSocket-Protocol: ${protocol}`] : []),
      "",
      "",
    ].join("\r\n"),
  );
  const messageCallbacks: Array<(data: string | ArrayBuffer) => void> = [];
  const closeCallbacks: Array<() => void> = [];
  let buffer = Buffer.alloc(0);
  let parts: Buffer[] = [];
  let partsOpcode = 0;
  let closed = false;
  const frame = (opcode: number, payload: Buffer) => {
    if (closed || socket.destroyed) return;
    const length = payload.length;
    const head =
      length < 126
        ? Buffer.from([0x80 | opcode, length])
        : length < 65536
          ? Buffer.from([0x80 | opcode, 126, length >> 8, length & 255])
          : Buffer.concat([Buffer.from([0x80 | opcode, 127]), bigLength(length)]);
    socket.write(Buffer.concat([head, payload]));
  };
  const finish = () => {
    if (closed) return;
    closed = true;
    socket.destroy();
    for (const c of closeCallbacks) c();
  };
  socket.on("close", finish);
  socket.on("error", finish);
  socket.on("data", (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      if (buffer.length < 2) return;
      const fin = (buffer[0]! & 0x80) !== 0;
      const opcode = buffer[0]! & 0x0f;
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) return;
        length = Number(buffer.readBigUInt64BE(2));
        offset = 10;
      }
      const masked = (buffer[1]! & 0x80) !== 0;
      const end = offset + (masked ? 4 : 0) + length;
      if (buffer.length < end) return;
      const payload = Buffer.from(buffer.subarray(end - length, end));
      if (masked) {
        const mask = buffer.subarray(offset, offset + 4);
        for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i % 4]!;
      }
      buffer = buffer.subarray(end);
      if (opcode === 8) {
        frame(8, payload.subarray(0, 2));
        socket.end();
        finish();
        return;
      }
      if (opcode === 9) frame(10, payload);
      if (opcode === 1 || opcode === 2) {
        parts = [payload];
        partsOpcode = opcode;
      } else if (opcode === 0) parts.push(payload);
      else continue;
      if (!fin) continue;
      const whole = Buffer.concat(parts);
      parts = [];
      const data = partsOpcode === 1 ? whole.toString("utf8") : whole.buffer.slice(whole.byteOffset, whole.byteOffset + whole.length);
      for (const c of messageCallbacks) c(data);
    }
  });
  return {
    send: (data) => frame(typeof data === "string" ? 1 : 2, Buffer.from(data)),
    close() {
      frame(8, Buffer.from([0x03, 0xe8]));
      socket.end();
      finish();
    },
    onMessage: (c) => messageCallbacks.push(c),
    onClose: (c) => closeCallbacks.push(c),
  };
}

function bigLength(length: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(length));
  return b;
}
