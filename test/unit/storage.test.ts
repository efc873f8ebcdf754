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
  owner: null,
  ownerId: null,
  userMetadata: null,
});

test("only what differs is copied, and what the active no longer holds is deleted", () => {
  const active = [object("same", "e1"), object("changed", "e2"), object("resized", "e3", 4), object("new", "e4")];
  const standby = [object("same", "e1"), object("changed", "old"), object("resized", "e3", 3), object("gone", "e5")];
  const { copy, remove } = objectsToCarry(active, standby, new Set(["b/gone:e5"]));
  assert.deepEqual(
    copy.map((o) => o.name),
    ["changed", "resized", "new"],
  );
  assert.deepEqual(
    remove.map((o) => o.name),
    ["gone"],
  );
  assert.deepEqual(objectsToCarry(active, active, new Set()), { copy: [], remove: [] });
});

test("an object the standby holds that was never carried between the two, or changed since, is kept", () => {
  const standby = [object("own-upload", "e1"), object("carried", "e2"), object("changed-since", "e3")];
  const inStep = new Set(["b/carried:e2", "b/changed-since:old"]);
  assert.deepEqual(
    objectsToCarry([], standby, inStep).remove.map((o) => o.name),
    ["carried"],
  );
});
