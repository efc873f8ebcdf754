import { SpillwayError } from "./errors.ts";
import type { ProjectName } from "./names.ts";
import { type Db, onProject, type Project, type Projects } from "./project.ts";

/** SQLSTATE of `lock_timeout` expiring (Postgres's lock_not_available). */
const LOCK_NOT_AVAILABLE = "55P03";
/** SQLSTATE of a deadlock Postgres broke by failing this transaction (deadlock_detected). */
const DEADLOCK_DETECTED = "40P01";

/** How long the fence waits for writers that passed the guard before it ends them. */
export const IN_FLIGHT_WAIT_MS = 10_000;
/** How long it waits once more after ending them. */
const AFTER_END_WAIT_MS = 5_000;

/**
 * Puts the fence trigger on every table of `schemas` and of every app schema of the
 * project (`spillway.app_schemas()`, whatever the list leaves out), of those its own settings fence (Supabase Auth's where it is
 * carried), and on their leaf partitions wherever they live, that lacks it. Spillway calls
 * it before a switch and on every tick, so that a table an app's migration created since is
 * guarded too (where the event trigger could not be installed).
 *
 * @example
 * await ensureFence(projects.primary, settings.schemas);
 */
export async function ensureFence(project: Project, schemas: string[] | null): Promise<number> {
  return await onProject(project, (sql) =>
    sql.begin("read write", async (tx) => {
      await tx`set local lock_timeout = '5s'`;
      return await guardTables(tx, schemas);
    }),
  );
}

// The fence trigger on every table of `schemas`, of every app schema whatever `schemas`
// says (a list that leaves one out must not leave the old active writable there), of those
// the project's settings fence (Auth's), and on Storage's objects where `storage` is on.
async function guardTables(tx: Db, schemas: string[] | null): Promise<number> {
  const [row] = await tx<{ added: number }[]>`
    select spillway.ensure_fence(array(select distinct s
      from unnest(coalesce(${schemas}::text[], '{}') || spillway.app_schemas() || spillway.fenced_schemas()) s))
         + spillway.ensure_storage_fence() as added`;
  return row?.added ?? 0;
}

/**
 * Fences a project whose copy of the state says `active` at `epoch`: once this returns,
 * app writes there fail with SQLSTATE SPWFN, naming `naming` as the active project (or
 * "being chosen" while a switch is under way, `naming: null`), and every transaction that
 * wrote before has ended, so a catch-up started now reads all of them. The exclusive lock
 * on `spillway.state` waits for the writers holding the guard's share lock and queues new
 * ones behind it; writers still open after `IN_FLIGHT_WAIT_MS` are ended (their writes
 * were never acknowledged). Under that lock every table of `schemas` gets the fence
 * trigger, so none created since escapes it.
 *
 * @example
 * await fence(projects.primary, { active: "primary", epoch: 1, naming: null, schemas: ["public"] });
 */
export async function fence(
  project: Project,
  p: { active: ProjectName; epoch: number; naming: ProjectName | null; schemas: string[] | null },
): Promise<void> {
  for (const wait of [IN_FLIGHT_WAIT_MS, AFTER_END_WAIT_MS]) {
    try {
      const rows = await onProject(project, (sql) =>
        sql.begin("read write", async (tx) => {
          await tx`select pg_catalog.set_config('lock_timeout', ${`${wait}ms`}, true)`;
          await tx`lock table spillway.state in exclusive mode`;
          await guardTables(tx, p.schemas);
          return await tx`
          update spillway.state set fenced = true, fenced_for = ${p.naming}, fenced_epoch = ${p.naming === null ? null : p.epoch}, updated_at = now()
          where id and active = ${p.active} and epoch = ${p.epoch} and not fenced
          returning 1`;
        }),
      );
      if (rows.length !== 1) throw new SpillwayError("BUSY", 409, "the state changed while the switch was starting; try again");
      return;
    } catch (e) {
      // A writer that passed the guard and waits for one queued behind the fence makes a
      // deadlock that Postgres may break on the fence's side: end the writers and try again.
      const code = (e as { code?: string }).code;
      if (code !== LOCK_NOT_AVAILABLE && code !== DEADLOCK_DETECTED) throw e;
      if (wait === AFTER_END_WAIT_MS) break;
      await endWriters(project);
    }
  }
  throw new SpillwayError(
    "BUSY",
    409,
    `transactions on ${project.name} were still open ${(IN_FLIGHT_WAIT_MS + AFTER_END_WAIT_MS) / 1000} s after fencing began, and could not be ended; nothing was fenced`,
  );
}

// The writers that passed the guard hold a share lock on the state row until they end.
async function endWriters(source: Project): Promise<void> {
  const holders = await onProject(
    source,
    (sql) => sql<{ pid: number }[]>`
    select distinct l.pid
    from pg_catalog.pg_locks l
    where l.locktype = 'relation' and l.relation = 'spillway.state'::regclass and l.granted
      and l.mode = 'RowShareLock' and l.pid <> pg_catalog.pg_backend_pid()`,
  ).catch(() => []);
  for (const { pid } of holders) {
    // A writer of a role this one may not signal stays; the second wait then fails the fence.
    await source.sql`select pg_catalog.pg_terminate_backend(${pid})`.catch(() => undefined);
  }
}

/**
 * Lifts the fence a switch put on `from` at `epoch`, when nothing was published: `from` is
 * still the active project. Does nothing when the state moved on.
 *
 * @example
 * await liftFence(projects.primary, { from: "primary", epoch: 1 });
 */
export async function liftFence(source: Project, p: { from: ProjectName; epoch: number }): Promise<boolean> {
  const rows = await onProject(source, (sql) =>
    sql.begin(
      "read write",
      (tx) => tx`
    update spillway.state set fenced = false, fenced_for = null, fenced_epoch = null, updated_at = now()
    where id and fenced and active = ${p.from} and epoch = ${p.epoch}
    returning 1`,
    ),
  );
  return rows.length === 1;
}

/**
 * Writes a published switch into `project`'s copy of the state: `to` is active at `epoch`;
 * `project` is fenced, naming it, unless it is `to` itself. Only moves the epoch forward.
 *
 * @example
 * await writePublished(projects.primary, { to: "secondary", epoch: 2 });
 */
export async function writePublished(project: Project, p: { to: ProjectName; epoch: number; since?: string }): Promise<void> {
  await onProject(project, (sql) => sql.begin("read write", (tx) => writeState(tx, project.name, p)));
}

/**
 * Publishes `to` as the active project at `epoch` in its own copy of the state, without
 * fencing the old active (a failover: it cannot be reached), in one transaction with
 * `within` (what the failover records there).
 *
 * @example
 * await publishFailover(projects.secondary, { epoch: 2, holder: lease.holder }, (tx) => recordFailover(tx, row));
 */
export async function publishFailover(to: Project, p: { epoch: number; holder: string }, within: (tx: Db) => Promise<void>): Promise<void> {
  await onProject(to, (sql) =>
    sql.begin("read write", async (tx) => {
      // Checked with the state row locked: a tick whose lease expired, or a switch or
      // failover that published meanwhile, must not publish again over it.
      const [row] = await tx<{ epoch: string; holder: string | null; live: boolean }[]>`
        select s.epoch::text, l.holder, coalesce(l.expires_at > now(), false) as live
        from spillway.state s cross join spillway.lease l where s.id and l.id for update of s`;
      if (Number(row?.epoch) !== p.epoch - 1 || row?.holder !== p.holder || !row.live) {
        throw new SpillwayError(
          "BUSY",
          409,
          `the failover to ${to.name} was not published: its lease was lost or ${to.name} is at epoch ${row?.epoch ?? "unknown"}, not ${p.epoch - 1}`,
        );
      }
      await within(tx);
      await writeState(tx, to.name, { to: to.name, epoch: p.epoch });
    }),
  );
}

/**
 * Publishes a switch from `from` (fenced at `oldEpoch` by the lease `holder`) to `to`: the
 * target's copy of the state first, then the old active's, whose state row is locked (and
 * checked to be still fenced by this switch) before the target is touched, so that nothing
 * can unfence it in between. `between` runs after the target's publish (a test hook).
 *
 * @example
 * await publishSwitch(projects, { from: "primary", to: "secondary", oldEpoch: 1, epoch: 2, holder });
 */
export async function publishSwitch(
  projects: Projects,
  p: { from: ProjectName; to: ProjectName; oldEpoch: number; epoch: number; holder: string; between?: () => unknown },
): Promise<void> {
  await onProject(projects[p.from], (sql) =>
    sql.begin("read write", async (tx) => {
      const [row] = await tx<{ fenced: boolean; active: string; epoch: string; fenced_for: string | null; holder: string | null }[]>`
      select s.fenced, s.active, s.epoch::text, s.fenced_for, l.holder from spillway.state s cross join spillway.lease l
      where s.id and l.id for update of s`;
      if (!row?.fenced || row.active !== p.from || Number(row.epoch) !== p.oldEpoch || row.fenced_for !== null || row.holder !== p.holder) {
        throw new SpillwayError(
          "BUSY",
          409,
          `${p.from} is no longer fenced for this switch (another process changed it); nothing was published`,
        );
      }
      await writePublished(projects[p.to], { to: p.to, epoch: p.epoch });
      await p.between?.();
      await writeState(tx, p.from, { to: p.to, epoch: p.epoch });
    }),
  );
}

async function writeState(tx: Db, self: ProjectName, p: { to: ProjectName; epoch: number; since?: string }): Promise<void> {
  const fenced = self !== p.to;
  await tx`
    update spillway.state set active = ${p.to}, epoch = ${p.epoch}, since = coalesce(${p.since ?? null}::timestamptz, now()),
      fenced = ${fenced}, fenced_for = ${fenced ? p.to : null}, fenced_epoch = ${fenced ? p.epoch : null},
      phase = 'normal', updated_at = now()
    where id and epoch < ${p.epoch}`;
  await tx`
    update public.spillway_active set active = ${p.to}, epoch = ${p.epoch}, since = coalesce(${p.since ?? null}::timestamptz, now())
    where id and epoch < ${p.epoch}`;
}
