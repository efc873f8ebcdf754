import assert from "node:assert/strict";
import { test } from "node:test";
import { bearer, sameSecret } from "../../functions/auth.ts";
import { describeError, stripUrls } from "../../functions/errors.ts";

test("sameSecret compares whole secrets", () => {
  assert.equal(sameSecret("correct-horse", "correct-horse"), true);
  assert.equal(sameSecret("correct-hors", "correct-horse"), false);
  assert.equal(sameSecret("correct-horsE", "correct-horse"), false);
  assert.equal(sameSecret("", "correct-horse"), false);
  assert.equal(sameSecret("correct-horse-and-more", "correct-horse"), false);
});

test("bearer reads only a well-formed header", () => {
  assert.equal(bearer("Bearer abc"), "abc");
  assert.equal(bearer("bearer abc "), "abc");
  assert.equal(bearer("Basic abc"), null);
  assert.equal(bearer("Bearer a b"), null);
  assert.equal(bearer(undefined), null);
});

test("URL passwords never survive into messages", () => {
  assert.equal(stripUrls("failed postgres://postgres:s3cret@db:5432/x"), "failed postgres://postgres:***@db:5432/x");
  assert.equal(describeError(new Error("at postgresql://u:p%40ss@h/db\nstack")), "at postgresql://u:***@h/db");
});
