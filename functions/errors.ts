/**
 * Spillway's one error hierarchy. Every failure a caller can act on carries a stable
 * `code` (UPPER_SNAKE, part of the HTTP contract) and the HTTP `status` it maps to.
 *
 * @example
 * throw new SpillwayError("BUSY", 409, "another backup or switch is running");
 */
export class SpillwayError extends Error {
  constructor(
    readonly code: string,
    readonly status: 400 | 401 | 404 | 409 | 413 | 500 | 503,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "SpillwayError";
  }
}

/**
 * A request whose body or query cannot be used. `details` names the fields.
 *
 * @example
 * throw invalid("INVALID_CONFIG", { backupThreshold: "must be at most 1" });
 */
export function invalid(code: string, fields: Record<string, string>): SpillwayError {
  const names = Object.keys(fields);
  return new SpillwayError(code, 400, `invalid ${names.join(", ")}: ${Object.values(fields)[0]}`, fields);
}

/**
 * A project that cannot be reached. The cause is kept out of the message when it could
 * carry connection details; `detail` is an already-safe one-line reason.
 *
 * @example
 * throw unreachable("secondary", "connection refused");
 */
export function unreachable(project: string, detail: string, outage = true): SpillwayError {
  return new SpillwayError("PROJECT_UNREACHABLE", 503, `project ${project} is unreachable: ${detail}`, { project, outage });
}

/**
 * True when an error says the database itself is down or out of reach (refused, timed out,
 * unknown host, shutting down), not that it refused Spillway's login (class 28: a rotated
 * password, a pooler refusing its user) or a query: apps may still be writing there, so only
 * an outage counts toward a failover.
 *
 * @example
 * if (!isOutage(e)) return; // the active is up: no failover
 */
export function isOutage(e: unknown): boolean {
  if (e instanceof SpillwayError)
    return e.code === "PROJECT_UNREACHABLE" && (e.details as { outage?: boolean } | undefined)?.outage !== false;
  if (!isConnectionError(e)) return false;
  const code = (e as { code: string }).code;
  return !code.startsWith("28") && code !== "3D000";
}

/** Postgres SQLSTATEs that Spillway matches on, by name. */
export const PG = {
  uniqueViolation: "23505",
  exclusionViolation: "23P01",
  undefinedTable: "42P01",
  invalidSchemaName: "3F000",
  undefinedObject: "42704",
  objectNotInPrerequisiteState: "55000",
  objectInUse: "55006",
  insufficientPrivilege: "42501",
  readOnlyTransaction: "25006",
  serializationFailure: "40001",
  lockNotAvailable: "55P03",
  queryCanceled: "57014",
  adminShutdown: "57P01",
  crashShutdown: "57P02",
  cannotConnectNow: "57P03",
  /** Spillway's fence: raised by the fence trigger on a project that is no longer active. */
  fenced: "SPWFN",
} as const;

/**
 * A Postgres error that is the data's or the schema's fault, or the server's lack of room,
 * as a named error: 409 `ROWS_REFUSED` for a row a project would not take (SQLSTATE classes
 * 22, 23, 54 and P0: a constraint, an enum label, a value out of range or too large for an
 * index, a function a constraint calls raising) or a statement its schema cannot run (class
 * 42: a column, type or operator it lacks), 409 `PERMISSION_DENIED`, 503
 * `PROJECT_OUT_OF_RESOURCES` (class 53: disk full, out of memory, too many connections),
 * 409 `CAPTURE_SLOT_GONE` for a change capture slot dropped, invalidated or taken under the
 * run (the next backup is a full one).
 * The object Postgres names (schema, table, column, constraint) is in the message and the
 * details. Answers null for any other error.
 *
 * @example
 * throw fromPostgres(e, "the backup") ?? e;
 */
export function fromPostgres(e: unknown, during: string): SpillwayError | null {
  if (!(e instanceof Error)) return null;
  const f = e as { code?: unknown; schema_name?: string; table_name?: string; column_name?: string; constraint_name?: string };
  const code = typeof f.code === "string" && /^[0-9A-Z]{5}$/.test(f.code) ? f.code : null;
  if (!code) return null;
  const table = f.table_name ? `${f.schema_name ? `${f.schema_name}.` : ""}${f.table_name}` : null;
  const object = [table, f.column_name && `column ${f.column_name}`, f.constraint_name && `constraint ${f.constraint_name}`]
    .filter(Boolean)
    .join(", ");
  const details = { sqlstate: code, object: object || null };
  const said = `${describeError(e)}${object ? ` (${object})` : ""}`;
  const slotCodes: string[] = [PG.undefinedObject, PG.objectNotInPrerequisiteState, PG.objectInUse];
  if (slotCodes.includes(code) && /replication slot/i.test(e.message)) {
    return new SpillwayError(
      "CAPTURE_SLOT_GONE",
      409,
      `${during} stopped: its change capture slot is gone or in use (${describeError(e)}); the next backup is a full one`,
      details,
    );
  }
  if (code === PG.insufficientPrivilege) {
    return new SpillwayError("PERMISSION_DENIED", 409, `${during} was refused a privilege: ${said}`, details);
  }
  if (["22", "23", "42", "54", "P0"].includes(code.slice(0, 2))) {
    return new SpillwayError(
      "ROWS_REFUSED",
      409,
      `${during} stopped: Postgres refused it: ${said}; the two projects' schemas or data differ there: migrate them alike, then run it again`,
      details,
    );
  }
  if (code.startsWith("53")) {
    return new SpillwayError("PROJECT_OUT_OF_RESOURCES", 503, `${during} stopped: a project is out of resources: ${said}`, details);
  }
  return null;
}

const CONNECTION_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/**
 * True when an error means "the database could not be talked to" rather than "the
 * database said no": refused or dropped connections, timeouts, a server shutting down.
 *
 * @example
 * if (isConnectionError(e)) throw unreachable("primary", describeError(e));
 */
export function isConnectionError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== "string") return false;
  // 08: connection exceptions; 28: the login was refused; 3D000: no such database.
  return (
    CONNECTION_ERRNOS.has(code) ||
    code.startsWith("08") ||
    code.startsWith("28") ||
    code === "3D000" ||
    code === PG.adminShutdown ||
    code === PG.crashShutdown ||
    code === PG.cannotConnectNow
  );
}

/**
 * One readable line for an error, without stack or connection string.
 *
 * @example
 * describeError(new Error("boom")) // "boom"
 */
export function describeError(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    const text = e.message || String(code ?? e.name);
    return stripUrls(text.split("\n")[0] ?? text);
  }
  return stripUrls(String(e));
}

/** Removes the password part of any `scheme://user:password@host` in a text. */
export function stripUrls(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*):[^@\s]*@/gi, "$1:***@");
}

/**
 * postgres.js 3.4 can throw from a timer when it flushes a write to a connection that just
 * closed (its socket is already gone). The query on that connection has failed on its own;
 * the entries recognise this one error so that it does not bring the whole server down.
 *
 * @example
 * process.on("uncaughtException", (e) => { if (!isWriteAfterClose(e)) throw e; });
 */
export function isWriteAfterClose(e: unknown): boolean {
  return e instanceof TypeError && /reading 'write'/.test(e.message) && /postgres\/src\/connection\.js/.test(e.stack ?? "");
}
