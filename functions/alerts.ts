import type { EventLog, SpillwayEvent } from "./events.ts";

/** Where alerts go, from `loadConfig`. */
export interface AlertConfig {
  /** A secret URL (a Slack or Discord webhook lets anyone post): never shown whole. */
  webhookUrl: string;
  /** Key of the `X-Spillway-Signature` HMAC-SHA256 header; null sends unsigned alerts. */
  secret: string | null;
}

/** How delivery retries; the defaults suit a real webhook, tests shorten them. */
export interface DeliveryOptions {
  /** Waits before the 2nd, 3rd, … attempt. */
  retryDelaysMs?: number[];
  /** Longest wait for one attempt's answer. */
  timeoutMs?: number;
}

const DEFAULT_RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000];
const DEFAULT_TIMEOUT_MS = 5_000;
/** Discord refuses `content` over 2000 characters. */
const MAX_TEXT = 1_900;
export const SIGNATURE_HEADER = "X-Spillway-Signature";

const ALERT_KINDS = new Set([
  "policy.phase",
  "policy.alert",
  "backup.succeeded",
  "backup.failed",
  "backup.verify_failed",
  "backup.unreachable",
  "backup.retention_guard",
  "switch.completed",
  "switch.failed",
  "switch.rolled_back",
  "switch.refused",
  "switch.forced",
  "project.unreachable",
  "project.reachable",
  "failover.completed",
  "failover.divergent",
  "failover.unresolved",
]);

/**
 * Whether an operator is told of an event by an alert: health entering `degraded` or
 * `critical`, phase changes, backup and switch outcomes (refusals and forced switches
 * included), retention guard drops, a project unreachable for more than one tick, a failover
 * and the divergent changes it left. `alert.failed` never is, so a dead webhook cannot
 * feed itself.
 *
 * @example
 * isAlert({ kind: "switch.completed", ... }) // true
 */
export function isAlert(event: Pick<SpillwayEvent, "kind" | "data">): boolean {
  if (event.kind === "switch.started") return event.data.force === true;
  if (event.kind === "health.changed") return event.data.state !== "ok";
  return ALERT_KINDS.has(event.kind);
}

/**
 * The JSON body of an alert: `text` for Slack, `content` for Discord (each ignores the
 * other's field), and the event itself for anything else.
 *
 * @example
 * const body = alertBody(event); // '{"text":"[spillway] WARN …","content":…,"event":{…}}'
 */
export function alertBody(event: SpillwayEvent): string {
  const line = `[spillway] ${event.level.toUpperCase()} ${event.message}`.replace(/\s+/g, " ");
  const text = line.length > MAX_TEXT ? `${line.slice(0, MAX_TEXT - 1)}…` : line;
  return JSON.stringify({ text, content: text, event });
}

/**
 * `sha256=<hex>` HMAC-SHA256 of the body keyed with the secret, as sent in
 * `X-Spillway-Signature`. Web Crypto, so it runs on Deno and Node alike.
 *
 * @example
 * const header = await signature(body, "alert-secret");
 */
export async function signature(body: string, secret: string): Promise<string> {
  const encoder = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(body)));
  return `sha256=${Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** Whether an answer or failure is worth another attempt. */
function retryable(status: number | null): boolean {
  return status === null || status === 429 || status >= 500;
}

/**
 * Posts alerts for the events an `EventLog` records, one at a time in their order, in the
 * background: recording an event only queues it, so a slow or hanging webhook never holds
 * up a tick, a backup or a switch. Each alert is tried until it is answered with a 2xx,
 * waiting longer between attempts; one that is not delivered is recorded as an
 * `alert.failed` event, without the URL.
 *
 * @example
 * const alerts = new AlertSender(events, { webhookUrl, secret });
 * // … on shutdown:
 * await alerts.close();
 */
export class AlertSender {
  private readonly queue: SpillwayEvent[] = [];
  private sending: Promise<void> | null = null;
  private readonly stop = new AbortController();
  private readonly retryDelaysMs: number[];
  private readonly timeoutMs: number;

  constructor(
    private readonly events: EventLog,
    private readonly config: AlertConfig,
    options: DeliveryOptions = {},
  ) {
    this.retryDelaysMs = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    events.addSink((event) => {
      if (!isAlert(event) || this.stop.signal.aborted) return;
      this.queue.push(event);
      this.kick();
    });
  }

  // An event queued between the sender's last look at the queue and its end starts it anew.
  private kick(): void {
    this.sending ??= this.drain().finally(() => {
      this.sending = null;
      if (this.queue.length > 0 && !this.stop.signal.aborted) this.kick();
    });
  }

  /** Resolves once every queued alert is delivered or given up on. */
  async idle(): Promise<void> {
    while (this.sending) await this.sending;
  }

  /** Drops queued alerts and ends an attempt under way. */
  async close(): Promise<void> {
    this.stop.abort();
    this.queue.length = 0;
    await this.sending;
  }

  private async drain(): Promise<void> {
    for (let event = this.queue.shift(); event; event = this.queue.shift()) {
      const outcome = await this.deliver(event);
      if (outcome.ok || this.stop.signal.aborted) continue;
      await this.events.record(
        "error",
        "alert.failed",
        `the alert for ${event.kind} was not delivered after ${outcome.attempts} attempt(s): ${outcome.problem}`,
        {
          project: event.project,
          data: { eventId: event.id, eventKind: event.kind, attempts: outcome.attempts, status: outcome.status },
        },
      );
    }
  }

  private async deliver(
    event: SpillwayEvent,
  ): Promise<{ ok: true } | { ok: false; attempts: number; status: number | null; problem: string }> {
    const body = alertBody(event);
    const headers: Record<string, string> = { "Content-Type": "application/json", "User-Agent": "spillway" };
    if (this.config.secret) headers[SIGNATURE_HEADER] = await signature(body, this.config.secret);
    let attempts = 0;
    for (;;) {
      attempts++;
      let status: number | null = null;
      let problem: string;
      try {
        const signal = AbortSignal.any([this.stop.signal, AbortSignal.timeout(this.timeoutMs)]);
        const res = await fetch(this.config.webhookUrl, { method: "POST", headers, body, signal, redirect: "error" });
        await res.body?.cancel();
        if (res.ok) return { ok: true };
        status = res.status;
        problem = `the webhook answered ${res.status}`;
      } catch (e) {
        // The error of a failed fetch may quote the URL: only its kind is kept.
        problem =
          e instanceof Error && e.name === "TimeoutError"
            ? `no answer within ${this.timeoutMs} ms`
            : `the request failed (${errorKind(e)})`;
      }
      const delay = this.retryDelaysMs[attempts - 1];
      if (delay === undefined || !retryable(status) || this.stop.signal.aborted) return { ok: false, attempts, status, problem };
      await sleep(delay, this.stop.signal);
    }
  }
}

function errorKind(e: unknown): string {
  const cause = (e as { cause?: { code?: unknown } } | null)?.cause;
  if (cause && typeof cause.code === "string") return cause.code;
  return e instanceof Error ? e.name : "unknown error";
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
