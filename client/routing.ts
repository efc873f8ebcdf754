// Watching which project is active without app traffic: a read-only app (or an open
// Realtime channel) would otherwise learn of a switch only at its next write, or when its
// cached answer expires.

/** How often the published state is read by default, in ms. */
export const WATCH_MS = 1_000;
/** How often it is read while a switch is suspected (a fence error seen, a look-up failed). */
export const SUSPECTED_WATCH_MS = 500;

/** What `watchActive` needs: the look-up to repeat and whether a switch is suspected now. */
export interface Watch {
  /** Reads the published state of both projects (the highest epoch wins) and adopts it. */
  lookUp(): Promise<unknown>;
  /** True while a switch may be under way: the watcher then reads more often. */
  suspected(): boolean;
  /** The interval in ms while nothing is suspected (0: do not watch). */
  everyMs: number;
}

/**
 * Repeats `lookUp` every `everyMs` (every `SUSPECTED_WATCH_MS` at most while `suspected()`),
 * one look-up at a time, until the returned function is called. Its timers do not keep a
 * Node or Deno process alive.
 *
 * @example
 * const stop = watchActive({ lookUp: () => lookUp(r), suspected: () => false, everyMs: 1_000 });
 */
export function watchActive(watch: Watch): () => void {
  if (watch.everyMs <= 0) return () => undefined;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const next = () => {
    if (stopped) return;
    const wait = watch.suspected() ? Math.min(watch.everyMs, SUSPECTED_WATCH_MS) : watch.everyMs;
    timer = setTimeout(() => {
      // A look-up that fails (both projects unreachable) is asked again at the next turn.
      watch
        .lookUp()
        .catch(() => undefined)
        .finally(next);
    }, wait);
    unref(timer);
  };
  next();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// Node's timers have unref(); Deno's are numbers, unref'd through Deno.unrefTimer.
function unref(timer: ReturnType<typeof setTimeout>): void {
  if (typeof timer === "object" && timer !== null && "unref" in timer) (timer as { unref(): void }).unref();
  const deno = (globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno;
  if (typeof timer === "number") deno?.unrefTimer?.(timer);
}
