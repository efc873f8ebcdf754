// Supabase Storage carried to the standby: buckets and objects, their bytes streamed from
// the active's Storage API to the standby's (never through the database). What to copy is
// read from each project's storage tables; a copied object is whole or absent, so a run cut
// short is resumed by the next, which copies only what still differs.
import { describeError, SpillwayError } from "./errors.ts";
import type { EventLog } from "./events.ts";
import type { ProjectName } from "./names.ts";
import { onProject, type Project, type Projects } from "./project.ts";
import { readSettings } from "./settings.ts";

/** One project's Storage API: its URL (`SPILLWAY_<PROJECT>_API_URL`) and service key. */
export interface StorageApi {
  url: string;
  serviceKey: string;
}

/** Both projects' Storage APIs (null: not configured, Storage is not carried). */
export type StorageApis = Record<ProjectName, StorageApi> | null;

/** An object as its row describes it. */
export interface StoredObject {
  bucket: string;
  name: string;
  size: number;
  etag: string;
  mimetype: string | null;
  cacheControl: string | null;
  /** Who uploaded it (owner-based RLS reads these), and the uploader's metadata, as JSON. */
  owner: string | null;
  ownerId: string | null;
  userMetadata: string | null;
}

/** What one carry did. */
export interface StorageCarry {
  buckets: number;
  copied: number;
  deleted: number;
  bytes: number;
  /** Objects that could not be copied this time (the next run tries them again). */
  failed: string[];
  /** Objects left for the next run when this one reached its time budget. */
  pending: number;
  /** The first of those, by `bucket/name`. */
  waiting: string[];
}

/** How long the standby lets one object's copy through its fence, in seconds. */
const COPY_WINDOW_SECONDS = 600;
/**
 * How long one run copies objects, in ms: within an Edge Function call's 150 s beside the
 * database's backup; what is left is copied by the next run.
 */
export const STORAGE_BUDGET_MS = 60_000;
/** A switch tries failing objects this many times, pausing 250 ms, then 500 ms, between. */
const RETRIES = 3;
const RETRY_MS = 125;

/**
 * Which objects the standby lacks or holds differently (copy), and which it holds that the
 * active no longer does (delete), by bucket and name; an object is the same when its size
 * and etag are. Only an object both projects once held as it is now (`inStep`: keys
 * `bucket/name:etag` of what was carried between them) is deleted: one the standby holds
 * of its own, uploaded there while it was the active, is kept.
 *
 * @example
 * const { copy, remove } = objectsToCarry(activeObjects, standbyObjects, new Set(["avatars/a.png:\"e1\""]));
 */
export function objectsToCarry(
  active: StoredObject[],
  standby: StoredObject[],
  inStep: ReadonlySet<string>,
): { copy: StoredObject[]; remove: StoredObject[] } {
  const key = (o: StoredObject) => `${o.bucket}/${o.name}`;
  const there = new Map(standby.map((o) => [key(o), o]));
  const here = new Set(active.map(key));
  return {
    copy: active.filter((o) => {
      const s = there.get(key(o));
      return (
        !s || s.size !== o.size || s.etag !== o.etag || s.owner !== o.owner || s.ownerId !== o.ownerId || s.userMetadata !== o.userMetadata
      );
    }),
    remove: standby.filter((o) => !here.has(key(o)) && inStep.has(`${key(o)}:${o.etag}`)),
  };
}

/**
 * Whether a carry left objects behind (failed or left for lack of time).
 *
 * @example
 * if (behind(carried)) throw storageBehind(to, carried);
 */
export function behind(carry: StorageCarry | null): carry is StorageCarry {
  return !!carry && carry.failed.length + carry.pending > 0;
}

/**
 * Carries Storage from `from` to `to`: buckets created or updated with their settings,
 * objects that differ streamed from one Storage API to the other, objects gone from `from`
 * deleted on `to`; the standby's fence lets exactly these objects through, for
 * `COPY_WINDOW_SECONDS`. Answers null when the setting `storage` is off or `from` has no
 * Storage. An object that fails is named in `failed` and tried again by the next run.
 *
 * @example
 * const carried = await carryStorage(projects, apis, "primary", "secondary");
 */
export async function carryStorage(
  projects: Projects,
  apis: Record<ProjectName, StorageApi>,
  from: ProjectName,
  to: ProjectName,
  fetchImpl: typeof fetch = fetch,
  budgetMs = STORAGE_BUDGET_MS,
): Promise<StorageCarry | null> {
  const deadline = Date.now() + budgetMs;
  const { settings } = await readSettings(projects);
  if (!settings.storage || !(await hasStorage(projects[from])) || !(await hasStorage(projects[to]))) return null;
  const source = apis[from];
  const target = apis[to];
  const call = async (api: StorageApi, path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${api.serviceKey}`);
    headers.set("apikey", api.serviceKey);
    // No request outlives the budget: a switch copies behind its fence within its own.
    const signal = AbortSignal.timeout(Math.max(1, deadline - Date.now()));
    const res = await fetchImpl(`${api.url.replace(/\/+$/, "")}/storage/v1${path}`, { ...init, headers, signal });
    if (!res.ok)
      throw new SpillwayError(
        "STORAGE_FAILED",
        503,
        `Storage API of ${api === source ? from : to} answered ${res.status}: ${(await res.text()).slice(0, 200)}`,
      );
    return res;
  };
  const carry: StorageCarry = { buckets: 0, copied: 0, deleted: 0, bytes: 0, failed: [], pending: 0, waiting: [] };

  const [sourceBuckets, targetBuckets] = await Promise.all([readBuckets(projects[from]), readBuckets(projects[to])]);
  const have = new Map(targetBuckets.map((b) => [b.id, JSON.stringify(b)]));
  for (const b of sourceBuckets) {
    if (have.get(b.id) === JSON.stringify(b)) continue;
    const body = JSON.stringify({
      id: b.id,
      name: b.name,
      public: b.public,
      file_size_limit: b.file_size_limit,
      allowed_mime_types: b.allowed_mime_types,
    });
    await call(target, have.has(b.id) ? `/bucket/${encodeURIComponent(b.id)}` : "/bucket", {
      method: have.has(b.id) ? "PUT" : "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    carry.buckets += 1;
  }

  const [active, standby, inStep] = await Promise.all([
    readObjects(projects[from]),
    readObjects(projects[to]),
    readInStep(projects, from, to),
  ]);
  const { copy, remove } = objectsToCarry(active, standby, inStep);
  // Objects both hold alike are in step as if carried (the app's setup in both, say).
  const stepKey = (o: StoredObject) => `${o.bucket}/${o.name}:${o.etag}`;
  const held = new Set(standby.map(stepKey));
  const copied = active.filter((o) => held.has(stepKey(o)) && !inStep.has(stepKey(o)));
  const deleted: StoredObject[] = [];
  await allowCopies(projects[to], [...copy, ...remove]);
  try {
    for (const [i, o] of copy.entries()) {
      if (Date.now() > deadline) {
        carry.pending = copy.length - i;
        carry.waiting = copy.slice(i, i + 10).map((p) => `${p.bucket}/${p.name}`);
        break;
      }
      try {
        const got = await call(source, `/object/authenticated/${objectPath(o)}`);
        await call(target, `/object/${objectPath(o)}`, {
          method: "POST",
          headers: {
            "Content-Type": o.mimetype ?? "application/octet-stream",
            "Cache-Control": o.cacheControl ?? "max-age=3600",
            "x-upsert": "true",
          },
          body: got.body,
          duplex: "half",
        } as RequestInit);
        // The upload was the service key's: the row takes the uploader's owner back, within the copy window.
        await onProject(projects[to], (sql) =>
          sql.begin(
            "read write",
            (tx) => tx`
            update storage.objects set owner = ${o.owner}::uuid, owner_id = ${o.ownerId},
                   user_metadata = (${o.userMetadata}::text)::jsonb
             where bucket_id = ${o.bucket} and name = ${o.name}`,
          ),
        );
        carry.copied += 1;
        carry.bytes += o.size;
        copied.push(o);
      } catch {
        carry.failed.push(`${o.bucket}/${o.name}`);
      }
    }
    const byBucket = new Map<string, StoredObject[]>();
    for (const o of remove) byBucket.set(o.bucket, [...(byBucket.get(o.bucket) ?? []), o]);
    for (const [bucket, objects] of byBucket) {
      await call(target, `/object/${encodeURIComponent(bucket)}`, {
        method: "DELETE",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prefixes: objects.map((o) => o.name) }),
      });
      carry.deleted += objects.length;
      deleted.push(...objects);
    }
  } finally {
    await closeCopies(projects[to]);
    await recordCarried(projects, from, to, copied, deleted);
  }
  if (carry.failed.length === 0 && carry.pending === 0) await recordCopied(projects[to], from, active);
  return carry;
}

/**
 * Carries Storage from `from` to `to` again and again until nothing is left behind or
 * `until` (ms since the epoch) has passed: what a switch needs before it publishes. Answers
 * the last carry (null: Storage is not carried).
 *
 * @example
 * const carried = await carryStorageUntil(projects, apis, "primary", "secondary", Date.now() + 5_000);
 */
export async function carryStorageUntil(
  projects: Projects,
  apis: Record<ProjectName, StorageApi>,
  from: ProjectName,
  to: ProjectName,
  until: number,
  fetchImpl: typeof fetch = fetch,
): Promise<StorageCarry | null> {
  for (let stuck = 1; ; stuck++) {
    const carried = await carryStorage(projects, apis, from, to, fetchImpl, Math.max(0, until - Date.now()));
    if (!behind(carried) || Date.now() >= until) return carried;
    // Copying goes on while it moves; objects that keep failing are given up on.
    if (carried.copied > 0) stuck = 0;
    else if (stuck >= RETRIES) return carried;
    await new Promise((done) => setTimeout(done, Math.min(RETRY_MS * 2 ** stuck, Math.max(0, until - Date.now()))));
  }
}

/**
 * The 409 `STORAGE_BEHIND` of a switch that would publish `to` without some of the
 * active's objects, naming them.
 *
 * @example
 * throw storageBehind("secondary", carried);
 */
export function storageBehind(to: ProjectName, carried: StorageCarry): SpillwayError {
  const named = carried.failed.slice(0, 10).join(", ");
  const parts = [
    carried.failed.length ? `${carried.failed.length} object(s) could not be copied (${named})` : "",
    carried.pending ? `${carried.pending} object(s) were not copied in time (${carried.waiting.join(", ")})` : "",
  ].filter(Boolean);
  return new SpillwayError(
    "STORAGE_BEHIND",
    409,
    `switch to ${to} refused: ${parts.join(", ")}; ${to} would be published without them. Check its Storage API and switch again`,
    { failed: carried.failed, pending: carried.pending, waiting: carried.waiting },
  );
}

/**
 * Carries Storage along a backup run that succeeded (`carryStorage` from its source to its
 * target) and says what it did in events: never silent, never failing the run, whose data
 * is already committed; what was not carried is tried again by the next run.
 *
 * @example
 * if (run.status === "succeeded" && ctx.storage) await carryStorageAfter(ctx, ctx.storage, run);
 */
export async function carryStorageAfter(
  ctx: { projects: Projects; events: EventLog },
  apis: Record<ProjectName, StorageApi>,
  run: { source: string; target: string },
): Promise<StorageCarry | null> {
  const from = run.source as ProjectName;
  const to = run.target as ProjectName;
  try {
    const carried = await carryStorage(ctx.projects, apis, from, to);
    if (carried && carried.failed.length + carried.pending > 0) {
      const failed = carried.failed.length ? `${carried.failed.length} could not be copied (${carried.failed.slice(0, 5).join(", ")})` : "";
      const pending = carried.pending ? `${carried.pending} were left for lack of time` : "";
      await ctx.events.record(
        "warn",
        "storage.incomplete",
        `Storage objects not yet on ${to}: ${[failed, pending].filter(Boolean).join(", ")}; the next backup copies them`,
        { project: to, data: { ...carried } },
      );
    } else if (carried && carried.copied + carried.deleted + carried.buckets > 0) {
      await ctx.events.record(
        "info",
        "storage.carried",
        `Storage carried to ${to}: ${carried.copied} object(s) copied (${carried.bytes} bytes), ${carried.deleted} deleted, ${carried.buckets} bucket(s) set`,
        { project: to, data: { ...carried } },
      );
    }
    return carried;
  } catch (e) {
    await ctx.events.record(
      "error",
      "storage.failed",
      `Storage could not be carried to ${to}: ${describeError(e)}; check SPILLWAY_${to.toUpperCase()}_API_URL and its service key, the next backup tries again`,
      { project: to },
    );
    return null;
  }
}

/** A project's objects: how many, their bytes, and a digest of their names, sizes, etags and owners. */
export interface StorageDigest {
  objects: number;
  bytes: number;
  digest: string;
}

/**
 * Each project's objects in one count and a digest of their buckets, names, sizes and
 * etags (null: no Storage there), for `/verify`.
 *
 * @example
 * const { objects, digest } = (await storageDigest(projects.primary))!;
 */
export async function storageDigest(project: Project): Promise<StorageDigest | null> {
  if (!(await hasStorage(project))) return null;
  const [row] = await onProject(
    project,
    (sql) => sql<{ objects: string; bytes: string; digest: string }[]>`
    select count(*)::text as objects, coalesce(sum((metadata ->> 'size')::bigint), 0)::text as bytes,
           coalesce(md5(string_agg(bucket_id || '/' || name || ':' || coalesce(metadata ->> 'size', '') || ':' || coalesce(metadata ->> 'eTag', '')
                                   || ':' || coalesce(owner::text, '') || ':' || coalesce(owner_id, '') || ':' || coalesce(user_metadata::text, ''),
                                   '|' order by bucket_id, name)), '') as digest
    from storage.objects`,
  );
  return { objects: Number(row!.objects), bytes: Number(row!.bytes), digest: row!.digest };
}

/**
 * When Storage was last carried to `project` and from where (null: never).
 *
 * @example
 * const last = await lastCopied(projects.secondary);
 */
export async function lastCopied(project: Project): Promise<{ at: string; from: string } | null> {
  const [row] = await onProject(
    project,
    (sql) => sql<{ at: Date; source: string }[]>`select copied_at as at, source from spillway.storage_copy where id`,
  );
  return row ? { at: row.at.toISOString(), from: row.source } : null;
}

/** Storage in `GET /status`: whether it is carried, and each project's objects. */
export interface StorageStatus {
  carried: boolean;
  /** Why not, when it is not carried. */
  reason: string | null;
  projects: Record<
    ProjectName,
    { objects: number; bytes: number; quotaBytes: number; lastCopied: { at: string; from: string } | null } | null
  >;
}

/** Storage's own quota on the Free plan (1 GB), apart from the database's. */
export const STORAGE_QUOTA_BYTES = 1_073_741_824;

/**
 * What `GET /status` says of Storage: "not carried" with the reason (the setting is off,
 * the API variables are not set), never silence; each project's objects and bytes (null:
 * no Storage there, or unreachable) and when Storage was last carried to it.
 *
 * @example
 * const storage = await storageStatus(projects, apis);
 */
export async function storageStatus(projects: Projects, apis: StorageApis): Promise<StorageStatus> {
  const { settings } = await readSettings(projects).catch(() => ({ settings: { storage: true } }));
  const reason = !settings.storage
    ? "the setting storage is off"
    : apis
      ? null
      : "SPILLWAY_PRIMARY_API_URL, SPILLWAY_SECONDARY_API_URL and their SERVICE_KEY variables are not set";
  const one = async (project: Project) => {
    try {
      const digest = await storageDigest(project);
      return (
        digest && { objects: digest.objects, bytes: digest.bytes, quotaBytes: STORAGE_QUOTA_BYTES, lastCopied: await lastCopied(project) }
      );
    } catch {
      return null;
    }
  };
  const [primary, secondary] = await Promise.all([one(projects.primary), one(projects.secondary)]);
  return { carried: reason === null, reason, projects: { primary, secondary } };
}

/**
 * Whether `project`'s Storage objects go unfenced: Storage is installed, the setting
 * `storage` is on, and the fence trigger is absent (Spillway's role may not add it: it
 * lacks TRIGGER on storage.objects).
 *
 * @example
 * if (await storageUnfenced(projects.primary)) throw storageNotFenced("primary");
 */
export async function storageUnfenced(project: Project): Promise<boolean> {
  const [row] = await onProject(
    project,
    (sql) => sql<{ unfenced: boolean }[]>`
    select pg_catalog.to_regclass('storage.objects') is not null
       and coalesce((select (s.data ->> 'storage')::boolean from spillway.settings s where s.id), true)
       and not exists (select 1 from pg_catalog.pg_trigger g
                        where g.tgrelid = pg_catalog.to_regclass('storage.objects') and g.tgname = 'spillway_storage_fence') as unfenced`,
  );
  return !!row?.unfenced;
}

/**
 * The 409 `STORAGE_NOT_FENCED` of a switch from a project whose Storage the fence cannot
 * guard: uploads there after the switch would be lost.
 *
 * @example
 * throw storageNotFenced("primary");
 */
export function storageNotFenced(project: ProjectName): SpillwayError {
  return new SpillwayError(
    "STORAGE_NOT_FENCED",
    409,
    `${project}'s Storage cannot be fenced: Spillway's database role lacks TRIGGER on storage.objects, so uploads there after a switch would be lost. Grant it (grant trigger on storage.objects to postgres) or turn the setting storage off, then switch again`,
    { project },
  );
}

const objectPath = (o: StoredObject) => [o.bucket, ...o.name.split("/")].map(encodeURIComponent).join("/");

async function hasStorage(project: Project): Promise<boolean> {
  const [row] = await onProject(
    project,
    (sql) => sql<{ ok: boolean }[]>`select pg_catalog.to_regclass('storage.objects') is not null as ok`,
  );
  return !!row?.ok;
}

interface Bucket {
  id: string;
  name: string;
  public: boolean;
  file_size_limit: number | null;
  allowed_mime_types: string[] | null;
}

async function readBuckets(project: Project): Promise<Bucket[]> {
  const rows = await onProject(
    project,
    (sql) => sql<Bucket[]>`
    select id, name, coalesce(public, false) as public, file_size_limit::float8 as file_size_limit, allowed_mime_types
    from storage.buckets order by id`,
  );
  return rows.map((b) => ({ ...b }));
}

async function readObjects(project: Project): Promise<StoredObject[]> {
  const rows = await onProject(
    project,
    (sql) => sql<
      {
        bucket: string;
        name: string;
        size: string | null;
        etag: string | null;
        mimetype: string | null;
        cache: string | null;
        owner: string | null;
        owner_id: string | null;
        user_metadata: string | null;
      }[]
    >`
    select bucket_id as bucket, name, metadata ->> 'size' as size, metadata ->> 'eTag' as etag,
           metadata ->> 'mimetype' as mimetype, metadata ->> 'cacheControl' as cache,
           owner::text, owner_id, user_metadata::text
    from storage.objects where name is not null order by bucket_id, name`,
  );
  return rows.map((r) => ({
    bucket: r.bucket,
    name: r.name,
    size: Number(r.size ?? 0),
    etag: r.etag ?? "",
    mimetype: r.mimetype,
    cacheControl: r.cache,
    owner: r.owner,
    ownerId: r.owner_id,
    userMetadata: r.user_metadata,
  }));
}

// The standby's fence lets Storage write these objects' rows, and only these, for a while.
async function allowCopies(project: Project, objects: StoredObject[]): Promise<void> {
  if (objects.length === 0) return;
  await onProject(project, (sql) =>
    sql.begin(
      "read write",
      (tx) => tx`
      insert into spillway.storage_copying (bucket_id, name, until)
      select b, n, now() + make_interval(secs => ${COPY_WINDOW_SECONDS})
      from unnest(${objects.map((o) => o.bucket)}::text[], ${objects.map((o) => o.name)}::text[]) as t(b, n)
      on conflict (bucket_id, name) do update set until = excluded.until`,
    ),
  );
}

async function closeCopies(project: Project): Promise<void> {
  await onProject(project, (sql) => sql.begin("read write", (tx) => tx`delete from spillway.storage_copying`));
}

// What was carried between the two projects, as `bucket/name:etag`: to the standby from the
// active, or to the active from the standby (then deleted there since).
async function readInStep(projects: Projects, from: ProjectName, to: ProjectName): Promise<Set<string>> {
  const read = (on: ProjectName, source: ProjectName) =>
    onProject(
      projects[on],
      (sql) => sql<{ key: string }[]>`
      select bucket_id || '/' || name || ':' || etag as key from spillway.storage_carried where source = ${source}`,
    );
  const [carriedHere, carriedThere] = await Promise.all([read(to, from), read(from, to)]);
  return new Set([...carriedHere, ...carriedThere].map((r) => r.key));
}

async function recordCarried(
  projects: Projects,
  from: ProjectName,
  to: ProjectName,
  copied: StoredObject[],
  deleted: StoredObject[],
): Promise<void> {
  if (copied.length > 0)
    await onProject(projects[to], (sql) =>
      sql.begin(
        "read write",
        (tx) => tx`
        insert into spillway.storage_carried (bucket_id, name, source, etag)
        select * from unnest(${copied.map((o) => o.bucket)}::text[], ${copied.map((o) => o.name)}::text[],
                             ${copied.map(() => from)}::text[], ${copied.map((o) => o.etag)}::text[])
        on conflict (bucket_id, name) do update set source = excluded.source, etag = excluded.etag, carried_at = now()`,
      ),
    );
  if (deleted.length === 0) return;
  for (const on of [from, to])
    await onProject(projects[on], (sql) =>
      sql.begin(
        "read write",
        (tx) => tx`
        delete from spillway.storage_carried c
        using unnest(${deleted.map((o) => o.bucket)}::text[], ${deleted.map((o) => o.name)}::text[]) as d(b, n)
        where c.bucket_id = d.b and c.name = d.n`,
      ),
    );
}

async function recordCopied(project: Project, from: ProjectName, objects: StoredObject[]): Promise<void> {
  const bytes = objects.reduce((n, o) => n + o.size, 0);
  await onProject(project, (sql) =>
    sql.begin(
      "read write",
      (tx) => tx`
      insert into spillway.storage_copy (id, copied_at, source, objects, bytes) values (true, now(), ${from}, ${objects.length}, ${bytes})
      on conflict (id) do update set copied_at = excluded.copied_at, source = excluded.source, objects = excluded.objects, bytes = excluded.bytes`,
    ),
  );
}
