import assert from "node:assert/strict";
import {
  type CliOptions,
  DEFAULT_INTERFACE,
  DEFAULT_NETWORK,
  type InterfaceAddress,
  parseCli,
  resolveOverlay,
  UsageError,
} from "../../lib/cli/args.ts";

/** Runs parseCli and returns the UsageError it must throw. */
function usageError(args: string[]): UsageError {
  try {
    parseCli(args);
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected a UsageError, got ${err}`);
    return err;
  }
  assert.fail(`expected ${JSON.stringify(args)} to be rejected`);
}

/** The options of the CLI contract checked here (other options are tested elsewhere). */
function contract(o: CliOptions): Record<string, unknown> {
  return {
    help: o.help,
    version: o.version,
    networks: o.networks.map(String),
    addresses: o.addresses,
    interface: o.interface,
    counters: o.counters,
    output: o.output,
    logLevel: o.logLevel,
    netns: o.netns,
  };
}

Deno.test("parseCli() returns the defaults for an empty command line", () => {
  assert.deepEqual(contract(parseCli([])), {
    help: false,
    version: false,
    networks: [],
    addresses: [],
    interface: undefined,
    counters: false,
    output: "-",
    logLevel: "info",
    netns: undefined,
  });
});

Deno.test("parseCli() reads every option in long form", () => {
  const o = parseCli([
    "--network",
    "100.64.0.0/10",
    "--address",
    "100.64.0.7",
    "--interface",
    "nb0",
    "--counters",
    "--output",
    "/var/log/netbird-ct.jsonl",
    "--log-level",
    "debug",
    "--netns",
    "blue",
    "--help",
    "--version",
  ]);
  assert.deepEqual(contract(o), {
    help: true,
    version: true,
    networks: ["100.64.0.0/10"],
    addresses: ["100.64.0.7"],
    interface: "nb0",
    counters: true,
    output: "/var/log/netbird-ct.jsonl",
    logLevel: "debug",
    netns: "blue",
  });
});

Deno.test("parseCli() reads the short options -n -a -i -o -h -V", () => {
  const o = parseCli([
    "-n",
    "fd00::/8",
    "-a",
    "fd00::7",
    "-i",
    "wt1",
    "-o",
    "out.jsonl",
    "-h",
    "-V",
  ]);
  assert.deepEqual(
    [o.networks.map(String), o.addresses, o.interface, o.output, o.help, o.version],
    [["fd00::/8"], ["fd00::7"], "wt1", "out.jsonl", true, true],
  );
});

Deno.test("parseCli() collects repeated --network and --address in order", () => {
  const o = parseCli([
    "-n",
    "100.64.0.0/10",
    "--network",
    "fd00:4e42::/64",
    "-a",
    "100.64.0.7",
    "--address",
    "fd00:4e42::7",
  ]);
  assert.deepEqual(o.networks.map(String), ["100.64.0.0/10", "fd00:4e42::/64"]);
  assert.deepEqual(o.addresses, ["100.64.0.7", "fd00:4e42::7"]);
});

Deno.test("parseCli() canonicalises prefixes and addresses", () => {
  const o = parseCli(["-n", "100.64.9.9/10", "-n", "FD00:4E42:0::1/64", "-a", "FD00:0:0::0007"]);
  assert.deepEqual(o.networks.map(String), ["100.64.0.0/10", "fd00:4e42::/64"]);
  assert.deepEqual(o.addresses, ["fd00::7"]);
});

Deno.test("parseCli() accepts every documented log level", async (t) => {
  for (const level of ["debug", "info", "warning", "error"]) {
    await t.step(level, () => {
      assert.equal(parseCli(["--log-level", level]).logLevel, level);
    });
  }
});

Deno.test("parseCli() rejects bad input with a one-line UsageError naming the flag", async (t) => {
  const cases: [args: string[], names: string][] = [
    [["--network", "300.1.1.1/33"], "--network"],
    [["--network", "1.2.3.4/33"], "--network"],
    [["-n", "fd00::/129"], "--network"],
    [["--address", "x"], "--address"],
    [["-a", "100.64.0.0/10"], "--address"],
    [["--log-level", "loud"], "--log-level"],
    [["--log-level", "INFO"], "--log-level"],
    [["--bogus"], "--bogus"],
    [["-x"], "-x"],
    [["--network"], "--network"],
    [["--address"], "--address"],
    [["--output"], "--output"],
    [["--counters=yes"], "--counters"],
    [["positional"], "positional"],
    [["-n", "100.64.0.0/10", "extra"], "extra"],
    [["--netns", "../etc"], "--netns"],
    [["--netns", "a b"], "--netns"],
    [["--netns", "x".repeat(65)], "--netns"],
    [["--interface", "eth/0"], "--interface"],
    [["--interface", "a-very-long-name"], "--interface"],
    [["--output", ""], "--output"],
    [["--rcvbuf", "lots"], "--rcvbuf"],
    [["--rcvbuf", "3G"], "--rcvbuf"],
    [["--stats-interval", "soon"], "--stats-interval"],
    [["--stats-interval", "50ms"], "--stats-interval"],
  ];
  for (const [args, names] of cases) {
    await t.step(JSON.stringify(args).slice(0, 60), () => {
      const err = usageError(args);
      assert.ok(err.message.includes(names), `"${err.message}" should mention ${names}`);
      assert.ok(!err.message.includes("\n"), `"${err.message}" should be one line`);
      assert.equal(err.name, "UsageError");
    });
  }
});

Deno.test("parseCli() names the bad value in an invalid --network message", () => {
  assert.equal(
    usageError(["--network", "300.1.1.1/33"]).message,
    'invalid --network "300.1.1.1/33": expected a prefix such as 100.64.0.0/10 or fd00::/8',
  );
});

function options(overrides: Partial<CliOptions> = {}): CliOptions {
  return { ...parseCli([]), ...overrides };
}

const WT0: InterfaceAddress[] = [
  { name: "lo", address: "127.0.0.1", cidr: "127.0.0.1/8" },
  { name: "eth0", address: "192.168.1.20", cidr: "192.168.1.20/24" },
  { name: "wt0", address: "100.92.14.7", cidr: "100.92.14.7/16" },
  { name: "wt0", address: "fe80::a8bb:ccff:fedd:eeff", cidr: "fe80::a8bb:ccff:fedd:eeff/64" },
  { name: "wt0", address: "fd00:4e42:0:0::7", cidr: "fd00:4e42:0:0::7/64" },
  { name: "nb1", address: "100.100.0.3", cidr: "100.100.0.3/24" },
];

function resolved(o: CliOptions, interfaces: readonly InterfaceAddress[]): {
  networks: string[];
  addresses: string[];
  origin: string;
} {
  const r = resolveOverlay(o, interfaces);
  return { networks: r.networks.map(String), addresses: r.addresses, origin: r.origin };
}

Deno.test("resolveOverlay() defaults are wt0 and 100.64.0.0/10", () => {
  assert.equal(DEFAULT_INTERFACE, "wt0");
  assert.equal(DEFAULT_NETWORK, "100.64.0.0/10");
});

Deno.test("resolveOverlay() prefers explicit --network and --address over the interface", () => {
  const o = parseCli(["-n", "10.8.0.0/24", "-a", "10.8.0.1"]);
  assert.deepEqual(resolved(o, WT0), {
    networks: ["10.8.0.0/24"],
    addresses: ["10.8.0.1"],
    origin: "--network",
  });
});

Deno.test("resolveOverlay() takes prefixes and addresses from wt0 when present", () => {
  assert.deepEqual(resolved(options(), WT0), {
    networks: ["100.92.0.0/16", "fd00:4e42::/64"],
    addresses: ["100.92.14.7", "fd00:4e42::7"],
    origin: "interface wt0",
  });
});

Deno.test("resolveOverlay() ignores link-local fe80:: addresses of the interface", () => {
  const linkLocalOnly: InterfaceAddress[] = [
    { name: "wt0", address: "fe80::1", cidr: "fe80::1/64" },
  ];
  assert.deepEqual(resolved(options(), linkLocalOnly), {
    networks: ["100.64.0.0/10"],
    addresses: [],
    origin: "default",
  });
});

Deno.test("resolveOverlay() takes the addresses of wt0 when only --network is given", () => {
  const o = parseCli(["-n", "100.92.0.0/16"]);
  assert.deepEqual(resolved(o, WT0), {
    networks: ["100.92.0.0/16"],
    addresses: ["100.92.14.7", "fd00:4e42::7"],
    origin: "--network",
  });
});

Deno.test("resolveOverlay() falls back to 100.64.0.0/10 without addresses when wt0 is absent", () => {
  const noWt0 = WT0.filter((i) => i.name !== "wt0");
  assert.deepEqual(resolved(options(), noWt0), {
    networks: ["100.64.0.0/10"],
    addresses: [],
    origin: "default",
  });
});

Deno.test("resolveOverlay() reads the interface named by --interface", () => {
  assert.deepEqual(resolved(parseCli(["--interface", "nb1"]), WT0), {
    networks: ["100.100.0.0/24"],
    addresses: ["100.100.0.3"],
    origin: "interface nb1",
  });
});

Deno.test("resolveOverlay() rejects an --interface that does not exist with a UsageError", () => {
  assert.throws(
    () => resolveOverlay(parseCli(["--interface", "wg9"]), WT0),
    (err: unknown) =>
      err instanceof UsageError && err.message.includes("--interface") &&
      err.message.includes("wg9") && !err.message.includes("\n"),
  );
});

Deno.test("resolveOverlay() does not use the interface with --netns", () => {
  assert.deepEqual(resolved(parseCli(["--netns", "blue"]), WT0), {
    networks: ["100.64.0.0/10"],
    addresses: [],
    origin: "default",
  });
});

Deno.test("resolveOverlay() uses explicit flags with --netns", () => {
  const o = parseCli(["--netns", "blue", "-n", "10.8.0.0/24", "-a", "10.8.0.1"]);
  assert.deepEqual(resolved(o, WT0), {
    networks: ["10.8.0.0/24"],
    addresses: ["10.8.0.1"],
    origin: "--network",
  });
});
