import assert from "node:assert/strict";
import { test } from "node:test";
import { objectsToCarry, type StoredObject } from "../../functions/storage.ts";

const object = (name: string, etag: string, size = 3): StoredObject => ({
  bucket: "b",
  name,
  size,
  etag,
  mimetype: null,
  cacheControl: null,
});

test("only what differs is copied, and what the active no longer holds is deleted", () => {
  const active = [object("same", "e1"), object("changed", "e2"), object("resized", "e3", 4), object("new", "e4")];
  const standby = [object("same", "e1"), object("changed", "old"), object("resized", "e3", 3), object("gone", "e5")];
  const { copy, remove } = objectsToCarry(active, standby);
  assert.deepEqual(
    copy.map((o) => o.name),
    ["changed", "resized", "new"],
  );
  assert.deepEqual(
    remove.map((o) => o.name),
    ["gone"],
  );
  assert.deepEqual(objectsToCarry(active, active), { copy: [], remove: [] });
});
