import { readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { StaticFile } from "../functions/app.ts";

/** The widget folder shipped with the package. */
export const WIDGET_DIR = fileURLToPath(new URL("../widget/", import.meta.url));

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".json": "application/json",
};

/**
 * Reads the widget's files once, at start. The server hands out exactly these and nothing
 * else, so no request path can reach outside the folder.
 *
 * @example
 * const files = loadWidgetFiles(WIDGET_DIR);
 */
export function loadWidgetFiles(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  const walk = (folder: string) => {
    for (const entry of readdirSync(folder)) {
      const path = join(folder, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (TYPES[extname(entry)]) {
        files.set(relative(dir, path).split(sep).join("/"), { body: readFileSync(path), type: TYPES[extname(entry)]! });
      }
    }
  };
  walk(dir);
  return files;
}
