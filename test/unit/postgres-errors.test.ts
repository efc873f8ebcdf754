import assert from "node:assert/strict";
import { test } from "node:test";
import { fromPostgres } from "../../functions/errors.ts";

// Shaped as postgres.js reports a server's error: the SQLSTATE and the object it names.
const pgError = (code: string, message: string, fields: Record<string, string> = {}) =>
  Object.assign(new Error(message), { code, ...fields });

test("a Postgres error the data or the schema caused is a named 409 with the object it names; a full disk a 503; others are left alone", () => {
  const refused = fromPostgres(
    pgError("23505", 'duplicate key value violates unique constraint "board_pos_key"', {
      schema_name: "public",
      table_name: "board",
      constraint_name: "board_pos_key",
    }),
    "the backup",
  );
  assert.deepEqual([refused?.code, refused?.status], ["ROWS_REFUSED", 409]);
  assert.match(refused!.message, /^the backup stopped: Postgres refused it: duplicate key .* \(public\.board, constraint board_pos_key\)/);
  assert.deepEqual(refused!.details, { sqlstate: "23505", object: "public.board, constraint board_pos_key" });
  assert.equal(fromPostgres(pgError("42883", "operator does not exist: json = json"), "the switch")?.code, "ROWS_REFUSED");
  assert.equal(fromPostgres(pgError("22P02", 'invalid input value for enum status: "archived"'), "the backup")?.status, 409);
  assert.equal(fromPostgres(pgError("42501", "permission denied for table secrets"), "the backup")?.code, "PERMISSION_DENIED");
  const full = fromPostgres(pgError("53100", "could not extend file: No space left on device"), "the backup");
  assert.deepEqual([full?.code, full?.status], ["PROJECT_OUT_OF_RESOURCES", 503]);
  // Connection trouble, a serialization failure and errors that are not Postgres's keep their own handling.
  assert.equal(fromPostgres(pgError("08006", "connection failure"), "the backup"), null);
  assert.equal(fromPostgres(pgError("40001", "could not serialize access"), "the backup"), null);
  assert.equal(fromPostgres(pgError("ECONNREFUSED", "connect ECONNREFUSED"), "the backup"), null);
  assert.equal(fromPostgres(new Error("boom"), "the backup"), null);
});

test("a change capture slot dropped or taken under a run is named as such, never as rows refused", () => {
  for (const [code, message] of [
    ["42704", 'replication slot "spillway_primary_to_secondary_1a2b3c4d" does not exist'],
    ["55000", 'cannot read from logical replication slot "spillway_primary_to_secondary_1a2b3c4d"'],
    ["55006", 'replication slot "spillway_primary_to_secondary_1a2b3c4d" is active for PID 4242'],
  ] as const) {
    const named = fromPostgres(pgError(code, message), "the backup");
    assert.deepEqual([named?.code, named?.status], ["CAPTURE_SLOT_GONE", 409], code);
    assert.match(named!.message, /^the backup stopped: its change capture slot is gone or in use \(.*\); the next backup is a full one$/);
  }
  assert.equal(fromPostgres(pgError("42704", 'type "public.mood" does not exist'), "the backup")?.code, "ROWS_REFUSED");
});
