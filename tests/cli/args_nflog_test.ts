import assert from "node:assert/strict";
import { HELP, parseCli, UsageError } from "../../lib/cli/args.ts";

Deno.test("--nflog-group takes a group 0-65535 and defaults to off", () => {
  assert.equal(parseCli([]).nflogGroup, undefined);
  assert.equal(parseCli(["--nflog-group", "7"]).nflogGroup, 7);
  assert.equal(parseCli(["--nflog-group=0"]).nflogGroup, 0);
  assert.equal(parseCli(["--nflog-group", "65535"]).nflogGroup, 65535);
  assert.match(HELP, /--nflog-group N/);
});

Deno.test("--nflog-group rejects bad values with one line naming the flag", () => {
  for (const bad of ["65536", "-1", "x", "", "1.5", "999999"]) {
    assert.throws(() => parseCli([`--nflog-group=${bad}`]), (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.match(err.message, /--nflog-group/);
      assert.ok(!err.message.includes("\n"));
      return true;
    });
  }
  assert.throws(() => parseCli(["--nflog-group"]), /--nflog-group/);
});
