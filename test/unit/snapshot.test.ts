import assert from "node:assert/strict";
import { test } from "node:test";
import { sameCommitted } from "../../functions/backup/fdw.ts";
import { visibleIn } from "../../functions/backup/pgoutput.ts";

test("a transaction is visible in a snapshot when it ended before it was taken", () => {
  const visible = visibleIn("120:130:122,125");
  assert.equal(visible(100), true, "before xmin");
  assert.equal(visible(121), true, "between, finished");
  assert.equal(visible(122), false, "in progress");
  assert.equal(visible(125), false, "in progress");
  assert.equal(visible(130), false, "at xmax");
  assert.equal(visible(131), false, "after xmax");
  assert.equal(visibleIn("120:120:")(119), true);
  assert.equal(visibleIn("120:120:")(120), false);
});

test("64-bit snapshot ids are compared with the 32-bit ids of the stream, across wraparound", () => {
  // Epoch 1: 2^32 + 90 … 2^32 + 100; the stream's xids are the low 32 bits.
  const visible = visibleIn("4294967386:4294967396:4294967391");
  assert.equal(visible(89), true);
  assert.equal(visible(92), true);
  assert.equal(visible(95), false, "in progress");
  assert.equal(visible(100), false);
  // A snapshot whose range spans the 32-bit wrap: 2^32 − 6 … 2^32 + 4.
  const late = visibleIn("4294967290:4294967300:");
  assert.equal(late(4294967280), true);
  assert.equal(late(4294967295), true);
  assert.equal(late(2), true, "past the wrap, still before xmax");
  assert.equal(late(4), false, "at xmax, past the wrap");
  assert.equal(late(10), false);
});

test("two snapshots see the same rows when no transaction completed between them", () => {
  assert.equal(sameCommitted("120:130:122,125", "120:130:122,125"), true);
  assert.equal(sameCommitted("120:130:122,125", "120:133:122,125,130,131,132"), true, "three began, none ended");
  assert.equal(sameCommitted("120:130:122,125", "122:130:122,125"), true, "xmin moved past completed ones only");
  assert.equal(sameCommitted("120:130:122,125", "120:130:125"), false, "122 ended");
  assert.equal(sameCommitted("120:130:122,125", "120:132:122,125,130"), false, "131 began and ended");
  assert.equal(sameCommitted("120:132:122,125,130", "120:130:122,125"), false, "in either order");
  assert.equal(sameCommitted("4294967386:4294967396:4294967391", "4294967386:4294967397:4294967391,4294967396"), true, "64-bit ids");
});
