// Two projects shaped like a Supabase app that signs its users in with Auth, fronted as
// apps reach them: through STAND-INS for Supabase Auth (gotrue-api.ts) and the Data API
// (postgrest.ts), which cannot run here.
import { type TestApp, testApp } from "./app.ts";
import { APP_SCHEMA, installAuth } from "./gotrue.ts";
import { startAuthApi } from "./gotrue-api.ts";
import { applyToBoth, startTestPair, type TestPair } from "./postgres.ts";
import { startDataApi } from "./postgrest.ts";

type Name = "primary" | "secondary";

// Each user reads and writes only their own notes, as a Supabase app's policies say it.
const OWN_NOTES = `
alter table public.notes enable row level security;
grant select, insert on public.notes to authenticated;
create policy own_notes_read on public.notes for select to authenticated using (owner = (select auth.uid()));
create policy own_notes_write on public.notes for insert to authenticated with check (owner = (select auth.uid()));
`;

/** The projects, Spillway's app on them, the URLs apps use, and one `close` for it all. */
export interface AuthApp {
  pair: TestPair;
  t: TestApp;
  /** Each project's API URL (Auth in front of the Data API), as an app's client is given it. */
  urls: Record<Name, string>;
  /** Each project's anon key, signed with its JWT secret. */
  anonKeys: Record<Name, string>;
  close(): Promise<void>;
}

/**
 * Starts two projects with GoTrue's tables (owned by their own role), the app's tables
 * (`public.notes` readable and writable by each signed-in user for their own rows only, an
 * RLS policy on `auth.uid()`), Spillway's app, and each project's Auth and Data API
 * stand-ins, both signing and verifying with `secrets[name]`.
 *
 * @example
 * const { pair, t, urls, anonKeys, close } = await startAuthApp({ primary: SECRET, secondary: SECRET });
 */
export async function startAuthApp(secrets: Record<Name, string>): Promise<AuthApp> {
  const pair = await startTestPair();
  await Promise.all([installAuth(pair.primary), installAuth(pair.secondary)]);
  await applyToBoth(pair, `${APP_SCHEMA}\n${OWN_NOTES}`);
  const t = await testApp(pair);
  const fronts: Array<{ close(): Promise<void> }> = [];
  const urls = {} as Record<Name, string>;
  const anonKeys = {} as Record<Name, string>;
  for (const name of ["primary", "secondary"] as const) {
    const data = await startDataApi(pair.urls[name], secrets[name]);
    anonKeys[name] = data.anonKey;
    const auth = await startAuthApi(pair[name], { jwtSecret: secrets[name], next: data.url });
    fronts.push(auth, data);
    urls[name] = auth.url;
  }
  return {
    pair,
    t,
    urls,
    anonKeys,
    async close() {
      for (const f of fronts) await f.close();
      await t.close();
      await pair.destroy();
    },
  };
}
