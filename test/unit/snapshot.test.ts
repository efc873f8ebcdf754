import assert from "node:assert/strict";
import { test } from "node:test";
import { sameCommitted } from "../../functions/backup/fdw.ts";
import { fullXid, visibleIn } from "../../functions/backup/pgoutput.ts";

// A transaction committed at `commitLsn` with full id `xid`.
const txn = (xid: number | bigint, commitLsn = 0n) => ({ xid: BigInt(xid), commitLsn });

test("a transaction is visible in a snapshot when it ended before it was taken", () => {
  const visible = visibleIn("120:130:122,125");
  assert.equal(visible(txn(100)), true, "before xmin");
  assert.equal(visible(txn(121)), true, "between, finished");
  assert.equal(visible(txn(122)), false, "in progress");
  assert.equal(visible(txn(125)), false, "in progress");
  assert.equal(visible(txn(130)), false, "at xmax");
  assert.equal(visible(txn(131)), false, "after xmax");
  assert.equal(visibleIn("120:120:")(txn(119)), true);
  assert.equal(visibleIn("120:120:")(txn(120)), false);
});

test("only transactions committed before the snapshot's WAL position are compared with it", () => {
  const visible = visibleIn("120:130:122:0/5000000");
  assert.equal(visible(txn(100, 0x4ffffffn)), true, "committed before the position, seen");
  assert.equal(visible(txn(100, 0x5000000n)), false, "committed at the position: never seen");
  assert.equal(visible(txn(100, 0x7000000n)), false, "whatever its id");
});

test("the stream's 32-bit ids are made full ones next to the active's next id, on either side of a wrap", () => {
  assert.equal(fullXid(100, 130n), 100n);
  assert.equal(fullXid(135, 130n), 135n, "a little past the id read before the peek");
  assert.equal(fullXid(4294967290, 2n ** 32n + 10n), 4294967290n, "before the wrap, epoch 0");
  assert.equal(fullXid(5, 2n ** 32n + 10n), 2n ** 32n + 5n, "after it, epoch 1");
  // 2^31 and more ids after a copy: a 32-bit comparison would take them for old ones.
  const copy = visibleIn("730:731:");
  const next = 2n ** 31n + 2n ** 20n + 10n;
  assert.equal(copy(txn(fullXid(Number(next - 5n), next))), false, "2^31 ids later, not seen");
  assert.equal(copy(txn(fullXid(700, 2n ** 31n))), true, "an id of the copy's time, 2^31 ids on");
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
