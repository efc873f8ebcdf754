import { isWriteAfterClose } from "../functions/errors.ts";

let installed = false;

/**
 * Keeps the process alive through postgres.js's write-after-close error (see
 * `isWriteAfterClose`); any other uncaught error still ends the process, as Node would.
 *
 * @example
 * installCrashGuards();
 */
export function installCrashGuards(): void {
  if (installed) return;
  installed = true;
  process.on("uncaughtException", (e) => {
    if (isWriteAfterClose(e)) return;
    process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
