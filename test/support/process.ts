import { type ChildProcess, spawn } from "node:child_process";

/** A child process whose output is collected, with a way to wait for a line. */
export interface Child {
  proc: ChildProcess;
  /** Sends a signal to the whole process group, as a terminal's Ctrl-C does. */
  signalGroup(signal: NodeJS.Signals): void;
  output(): string;
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  exited: Promise<number | null>;
}

/**
 * Spawns a command and collects stdout and stderr together.
 *
 * @example
 * const child = run("npx", ["tsx", "cli/main.ts", "start"], { PORT: "9000" });
 * await child.waitFor(/Token:\s+(\S+)/, 60_000);
 */
export function run(command: string, args: string[], env: Record<string, string | undefined>, cwd?: string): Child {
  // A process group of its own, so a test can send Ctrl-C to the whole group as a terminal does.
  const proc = spawn(command, args, { env: { ...process.env, ...env }, cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let text = "";
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString();
    for (const w of waiters) w();
  };
  proc.stdout!.on("data", onData);
  proc.stderr!.on("data", onData);
  const exited = new Promise<number | null>((resolve) =>
    proc.on("exit", (code) => {
      for (const w of waiters) w();
      resolve(code);
    }),
  );
  let done = false;
  void exited.then(() => {
    done = true;
  });
  return {
    proc,
    exited,
    signalGroup(signal) {
      try {
        process.kill(-proc.pid!, signal);
      } catch {
        // Already gone.
      }
    },
    output: () => text,
    waitFor(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = text.match(pattern);
          if (m) {
            cleanup();
            resolve(m);
          } else if (done) {
            cleanup();
            reject(new Error(`process exited before ${pattern}; output:\n${text}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${pattern}; output:\n${text}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
}
