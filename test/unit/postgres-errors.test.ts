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
