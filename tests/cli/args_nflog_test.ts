import assert from "node:assert/strict";
import { HELP, packetSourceArgs, parseCli, UsageError } from "../../lib/cli/args.ts";

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

Deno.test("--source: conntrack by default, nflog needs --nflog-group, bad values name the flag", () => {
  assert.equal(parseCli([]).source, "conntrack");
  assert.equal(parseCli(["--source", "nflog", "--nflog-group", "7"]).source, "nflog");
  assert.equal(parseCli(["--source=conntrack", "--nflog-group", "7"]).source, "conntrack");
  const cases: [string[], RegExp][] = [
    [["--source", "nflog"], /^--source nflog needs --nflog-group N$/],
    [["--source", "pcap"], /^invalid --source "pcap": expected conntrack, nflog or packet$/],
    [["--capture-interface", "wt0"], /^--capture-interface needs --source packet$/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => parseCli(args), (err: unknown) => {
      assert.ok(err instanceof UsageError, args.join(" "));
      assert.match(err.message, message);
      return true;
    });
  }
  assert.match(HELP, /--source SOURCE/);
});

Deno.test("--source packet --capture-interface IFACE becomes the capture subcommand's -i IFACE", () => {
  assert.equal(packetSourceArgs(["-n", "100.64.0.0/10"]), undefined);
  assert.equal(packetSourceArgs(["--source", "nflog", "--nflog-group", "1"]), undefined);
  assert.deepEqual(
    packetSourceArgs(["--source", "packet", "--capture-interface", "wt0", "-n", "100.64.0.0/10"]),
    ["-i", "wt0", "-n", "100.64.0.0/10"],
  );
  assert.deepEqual(
    packetSourceArgs(["--capture-interface=eth1", "--source=packet", "-o", "x"]),
    ["--interface=eth1", "-o", "x"],
  );
});
