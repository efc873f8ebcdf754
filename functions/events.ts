import { describeError, stripUrls } from "./errors.ts";
import type { ProjectName } from "./names.ts";
import { onBoth, type Projects } from "./project.ts";

/** Severity of an event. */
export type Level = "info" | "warn" | "error";
export const LEVELS: readonly Level[] = ["info", "warn", "error"];

/** One log line, as stored in `spillway.events` and returned by `GET /logs`. */
export interface SpillwayEvent {
  id: string;
  at: string;
  level: Level;
  kind: string;
  message: string;
  project: ProjectName | null;
  data: Record<string, unknown>;
}

/** Where an event goes besides the databases (a log file, the terminal). */
export type EventSink = (event: SpillwayEvent) => void;

/** Filter for `list`. */
export interface EventQuery {
  limit: number;
  level?: Level;
  before?: string;
}

/**
 * Spillway's event log. Each event is written to every reachable project (so an operator
 * still sees the story when one is down or after a switch) and to the local sinks. Known
 * secrets are masked before anything is written anywhere.
 *
 * @example
 * const log = new EventLog(projects, { secrets: [token] });
 * await log.record("info", "backup.succeeded", "backup finished", { project: "secondary" });
 */
export class EventLog {
  private readonly secrets: string[];
  private readonly sinks: EventSink[];

  constructor(
    private readonly projects: Projects,
    options: { secrets?: string[]; sinks?: EventSink[] } = {},
  ) {
    this.secrets = (options.secrets ?? []).filter((s) => s.length >= 4);
    this.sinks = options.sinks ?? [];
  }

  /** Adds a sink (a log file, say) after construction. */
  addSink(sink: EventSink): void {
    this.sinks.push(sink);
  }

  /** Masks secrets and URL passwords in a text. */
  redact(text: string): string {
    let out = stripUrls(text);
    for (const s of this.secrets) out = out.split(s).join("***");
    return out;
  }

  /**
   * Records an event. Never throws: an event that cannot be stored anywhere still reaches
   * the local sinks.
   */
  async record(
    level: Level,
    kind: string,
    message: string,
    extra: { project?: ProjectName | null; data?: Record<string, unknown> } = {},
  ): Promise<SpillwayEvent> {
    const data = JSON.parse(this.redact(JSON.stringify(extra.data ?? {}))) as Record<string, unknown>;
    const event: SpillwayEvent = {
      id: crypto.randomUUID(),
      at: new Date().toISOString(),
      level,
      kind,
      message: this.redact(message),
      project: extra.project ?? null,
      data,
    };
    await onBoth(this.projects, (p) =>
      p.sql.begin(
        "read write",
        (tx) => tx`
      insert into spillway.events (id, at, level, kind, message, project, data)
      values (${event.id}, ${event.at}, ${level}, ${kind}, ${event.message}, ${event.project}, ${tx.json(data as never)})`,
      ),
    );
    for (const sink of this.sinks) {
      try {
        sink(event);
      } catch {
        // A broken sink must not stop Spillway's work.
      }
    }
    return event;
  }

  /** Records an error event from a caught error. */
  async error(
    kind: string,
    e: unknown,
    extra: { project?: ProjectName | null; data?: Record<string, unknown> } = {},
  ): Promise<SpillwayEvent> {
    return this.record("error", kind, describeError(e), extra);
  }

  /**
   * Newest events first, merged from both projects (an event stored in both appears once).
   */
  async list(query: EventQuery): Promise<SpillwayEvent[]> {
    const outcomes = await onBoth(this.projects, async (p) => {
      const rows = await p.sql<
        { id: string; at: Date; level: Level; kind: string; message: string; project: ProjectName | null; data: Record<string, unknown> }[]
      >`
        select id, at, level, kind, message, project, data from spillway.events
        where (${query.level ?? null}::text is null or level = ${query.level ?? null})
          and (${query.before ?? null}::timestamptz is null or at < ${query.before ?? null}::timestamptz)
        order by at desc, id desc
        limit ${query.limit}`;
      return rows;
    });
    if (!outcomes.primary.ok && !outcomes.secondary.ok) throw outcomes.primary.error;
    const byId = new Map<string, SpillwayEvent>();
    for (const o of [outcomes.primary, outcomes.secondary]) {
      if (!o.ok) continue;
      for (const r of o.value) {
        byId.set(r.id, {
          id: r.id,
          at: r.at.toISOString(),
          level: r.level,
          kind: r.kind,
          message: r.message,
          project: r.project,
          data: r.data,
        });
      }
    }
    return [...byId.values()].sort((a, b) => (a.at === b.at ? b.id.localeCompare(a.id) : b.at.localeCompare(a.at))).slice(0, query.limit);
  }
}
