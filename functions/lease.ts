import { SpillwayError } from "./errors.ts";
import { PROJECT_NAMES } from "./names.ts";
import { onBoth, type Projects, type Db as Sql } from "./project.ts";

/** A held lease; `release` gives it back early. */
export interface Lease {
  holder: string;
  release(): Promise<void>;
}

/**
 * Takes the operation lease: a row with an expiry in `spillway.lease`, taken in every
 * reachable project. A holder that dies blocks nothing past the expiry. Works through a
 * transaction pooler, unlike session advisory locks. Throws 409 `BUSY` when another holder
 * has it (after waiting up to `waitMs` when that holder is a tick), and 503 when neither project can be reached.
 *
 * @example
 * const lease = await takeLease(projects, "backup", 180, { waitMs: 10_000 });
 * try { ... } finally { await lease.release(); }
 */
export async function takeLease(
  projects: Projects,
  purpose: string,
  ttlSeconds: number,
  options: { waitMs?: number } = {},
): Promise<Lease> {
  // An operator's request waits a little for a tick to finish; another backup or switch
  // answers BUSY at once.
  const deadline = Date.now() + (options.waitMs ?? 0);
  for (;;) {
    try {
      return await tryLease(projects, purpose, ttlSeconds);
    } catch (e) {
      const holder = e instanceof SpillwayError && e.code === "BUSY" ? (e.details as { holder: string | null }).holder : "none";
      // A tick, or a holder already gone by the time it was looked up.
      const heldByTick = holder === "tick" || holder === null;
      if (!heldByTick || Date.now() >= deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function tryLease(projects: Projects, purpose: string, ttlSeconds: number): Promise<Lease> {
  await releaseUnreleased(projects);
  const holder = `${purpose}:${crypto.randomUUID()}`;
  const outcomes = await onBoth(projects, async (p) => {
    const rows = await p.sql.begin(
      "read write",
      (tx) => tx`
      update spillway.lease set holder = ${holder}, expires_at = now() + make_interval(secs => ${ttlSeconds})
      where id and (holder is null or expires_at is null or expires_at < now())
      returning holder`,
    );
    return rows.length === 1;
  });
  const taken = PROJECT_NAMES.filter((n) => {
    const o = outcomes[n];
    return o.ok && o.value;
  });
  const refused = PROJECT_NAMES.filter((n) => {
    const o = outcomes[n];
    return o.ok && !o.value;
  });
  const release = async () => {
    const outcomes = await onBoth(projects, (p) =>
      p.sql.begin("read write", (tx) => tx`update spillway.lease set holder = null, expires_at = null where id and holder = ${holder}`),
    );
    if (!outcomes.primary.ok || !outcomes.secondary.ok) unreleased.add(holder);
  };
  if (refused.length > 0) {
    await release();
    const [row] = await projects[refused[0]!].sql<
      { holder: string; expires_at: Date }[]
    >`select holder, expires_at from spillway.lease where id`.catch(() => []);
    const what = row?.holder?.split(":")[0] ?? "another operation";
    throw new SpillwayError(
      "BUSY",
      409,
      `another operation (${what}) holds the lease until ${row?.expires_at?.toISOString() ?? "it expires"}`,
      { holder: row?.holder ? what : null },
    );
  }
  if (taken.length === 0) {
    const failed = outcomes.primary;
    throw failed.ok ? new SpillwayError("PROJECT_UNREACHABLE", 503, "neither project is reachable") : failed.error;
  }
  return { holder, release };
}

// Leases this process held but could not give back everywhere (a project was down at the
// time): given back as soon as the project answers again, not at the expiry.
const unreleased = new Set<string>();

async function releaseUnreleased(projects: Projects): Promise<void> {
  if (unreleased.size === 0) return;
  const holders = [...unreleased];
  const outcomes = await onBoth(projects, (p) =>
    p.sql.begin("read write", (tx) => tx`update spillway.lease set holder = null, expires_at = null where id and holder = any(${holders})`),
  );
  if (outcomes.primary.ok && outcomes.secondary.ok) for (const h of holders) unreleased.delete(h);
}

/**
 * Pushes a held lease's expiry further, for long work. Returns false when the lease was lost.
 *
 * @example
 * if (!(await renewLease(projects, lease, 180))) throw new Error("lease lost");
 */
export async function renewLease(projects: Projects, lease: Lease, ttlSeconds: number): Promise<boolean> {
  const outcomes = await onBoth(
    projects,
    async (p) =>
      (
        await p.sql.begin(
          "read write",
          (tx) => tx`
    update spillway.lease set expires_at = now() + make_interval(secs => ${ttlSeconds})
    where id and holder = ${lease.holder} returning 1`,
        )
      ).length === 1,
  );
  return PROJECT_NAMES.some((n) => {
    const o = outcomes[n];
    return o.ok && o.value;
  });
}

/** A lease renewed in the background while work runs under it. */
export interface LeaseKeeper {
  /** Throws 409 `LEASE_LOST` once a renewal failed: the holder stops before its next write. */
  check(): void;
  stop(): void;
}

/**
 * Renews `lease` every third of its time to live until `stop`. A renewal that does not
 * succeed anywhere (the lease expired and was taken, or neither project answers) marks it
 * lost, and `check` throws from then on.
 *
 * @example
 * const keeper = keepLease(projects, lease, 120);
 * try { keeper.check(); ... } finally { keeper.stop(); }
 */
export function keepLease(projects: Projects, lease: Lease, ttlSeconds: number): LeaseKeeper {
  let lost = false;
  const timer = setInterval(
    () => {
      void renewLease(projects, lease, ttlSeconds).then(
        (ok) => {
          if (!ok) lost = true;
        },
        () => {
          lost = true;
        },
      );
    },
    (ttlSeconds / 3) * 1000,
  );
  return {
    check() {
      if (lost) throw leaseLost();
    },
    stop: () => clearInterval(timer),
  };
}

/**
 * Throws 409 `LEASE_LOST` unless `holder` holds an unexpired lease in the project of `sql`.
 *
 * @example
 * await requireLease(target.sql, lease.holder);
 */
export async function requireLease(sql: Sql, holder: string): Promise<void> {
  const [row] = await sql<{ holds: boolean }[]>`select holder = ${holder} and expires_at > now() as holds from spillway.lease where id`;
  if (!row?.holds) throw leaseLost();
}

/**
 * Inside a write transaction: throws 409 `LEASE_LOST` unless `holder` holds an unexpired
 * lease, and keeps the lease row locked shared until `tx` ends, so that no other holder can
 * take it before this write commits.
 *
 * @example
 * await holdLease(tx, lease.holder);
 */
export async function holdLease(tx: Sql, holder: string): Promise<void> {
  const [row] = await tx<{ holds: boolean }[]>`
    select holder = ${holder} and expires_at > now() as holds from spillway.lease where id for share`;
  if (!row?.holds) throw leaseLost();
}

/** The error of a holder whose lease expired. */
function leaseLost(): SpillwayError {
  return new SpillwayError(
    "LEASE_LOST",
    409,
    "this operation's lease expired and another operation may hold it now; it stopped before writing",
  );
}
