/**
 * Compares two secrets in time that does not depend on where they differ.
 *
 * @example
 * sameSecret("abc", "abd") // false
 */
export function sameSecret(given: string, expected: string): boolean {
  const a = new TextEncoder().encode(given);
  const b = new TextEncoder().encode(expected);
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i % Math.max(a.length, 1)] ?? 0) ^ b[i]!;
  return diff === 0;
}

/**
 * The token of an `Authorization: Bearer <token>` header, or null.
 *
 * @example
 * bearer("Bearer s3cret") // "s3cret"
 */
export function bearer(header: string | undefined): string | null {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return match ? match[1]! : null;
}
