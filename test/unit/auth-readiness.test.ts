import assert from "node:assert/strict";
import { test } from "node:test";
import { authNotReady } from "../../functions/auth-readiness.ts";

const base = { from: "secondary" as const, to: "primary" as const, refused: [] as string[], lacking: [] as string[] };

test("a switch target whose Auth matches and whose copy is in step is ready; not checked yet counts as ready", () => {
  assert.equal(authNotReady({ ...base, inStep: true }), null);
  assert.equal(authNotReady({ ...base }), null);
});

test("a column the target requires and the active lacks names it and the active as the project to migrate", () => {
  const problem = authNotReady({
    ...base,
    refused: ["auth.users.tenant is NOT NULL without a default on the standby and missing on the active: ..."],
    lacking: ["auth.users.tenant"],
    inStep: true,
  });
  assert.match(problem ?? "", /^primary's Auth cannot hold secondary's users \(auth\.users\.tenant is NOT NULL/);
  assert.match(
    problem ?? "",
    /migrate secondary's Auth \(GoTrue\) so that it has auth\.users\.tenant as primary's does, run a backup, then switch/,
  );
  assert.match(problem ?? "", /force: true does not override this/);
});

test("a type or key difference names both projects; a refusal comes before the copy's step", () => {
  const problem = authNotReady({
    ...base,
    refused: ["auth.users: column email is text on the active, character varying(255) on the standby"],
    inStep: false,
  });
  assert.match(problem ?? "", /column email is text on the active/);
  assert.match(problem ?? "", /migrate the Auth \(GoTrue\) of whichever of secondary and primary is older until their Auth tables match/);
});

test("a copy of Auth out of step asks for a backup that carries Auth", () => {
  assert.match(
    authNotReady({ ...base, inStep: false }) ?? "",
    /^primary holds no copy of secondary's Auth in step with it .*run a backup that carries Auth, then switch/,
  );
});
