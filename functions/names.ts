/** The two projects. Names never change; roles (active / standby) swap on a switch. */
export const PROJECT_NAMES = ["primary", "secondary"] as const;

/** `primary` or `secondary`. */
export type ProjectName = (typeof PROJECT_NAMES)[number];

/**
 * The other project.
 *
 * @example
 * other("primary") // "secondary"
 */
export function other(name: ProjectName): ProjectName {
  return name === "primary" ? "secondary" : "primary";
}

/**
 * Narrows a string to a project name.
 *
 * @example
 * isProjectName("primary") // true
 */
export function isProjectName(value: unknown): value is ProjectName {
  return value === "primary" || value === "secondary";
}
