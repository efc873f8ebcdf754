/**
 * `key=value` arguments of `spillway config set` as a settings patch. A value is read as JSON
 * where it parses (numbers, true/false, null, lists), else as text; `schemas` also takes a
 * comma-separated list; a dotted key sets a nested field (`quotaBytes.primary=…`). Throws
 * with one line naming the argument when one is not `key=value`.
 *
 * @example
 * parseAssignments(["switchThreshold=0.92", "quotaBytes.primary=600000000", "schemas=public,shop"])
 * // { switchThreshold: 0.92, quotaBytes: { primary: 600000000 }, schemas: ["public", "shop"] }
 */
export function parseAssignments(args: string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const arg of args) {
    const eq = arg.indexOf("=");
    const key = eq < 0 ? "" : arg.slice(0, eq).trim();
    if (!/^[A-Za-z]+(\.[A-Za-z]+)?$/.test(key)) throw new Error(`"${arg}" is not key=value (e.g. switchThreshold=0.92)`);
    const text = arg.slice(eq + 1).trim();
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = key === "schemas" ? text.split(",").map((s) => s.trim()) : text;
    }
    const [outer, inner] = key.split(".") as [string, string | undefined];
    if (inner === undefined) patch[outer] = value;
    else {
      const nested = (typeof patch[outer] === "object" && patch[outer] !== null ? patch[outer] : {}) as Record<string, unknown>;
      patch[outer] = { ...nested, [inner]: value };
    }
  }
  return patch;
}
