import assert from "node:assert/strict";
import { type CliOptions, DEFAULT_MAX_EVENTS, parseCli, UsageError } from "../../lib/cli/args.ts";
import { formatStats, type StatsSnapshot } from "../../lib/cli/stats.ts";
import { parseBytes, parseDuration } from "../../lib/cli/units.ts";
import type { TrackerStats } from "../../lib/tracker.ts";

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

/** The flow-logger options of the CLI. */
function flowOptions(o: CliOptions): Record<string, unknown> {
  return {
    routes: o.routes,
    dnsCollection: o.dnsCollection,
    dnsPorts: o.dnsPorts,
    exitNodeCollection: o.exitNodeCollection,
    windowMs: o.windowMs,
    maxEvents: o.maxEvents,
    activeTimeoutMs: o.activeTimeoutMs,
  };
}

Deno.test("parseCli() defaults the flow-logger options to one record per event, NetBird's DNS ports and no DNS or exit-node collection", () => {
  assert.deepEqual(flowOptions(parseCli([])), {
    routes: undefined,
    dnsCollection: false,
    dnsPorts: [53, 5353, 22054],
    exitNodeCollection: false,
    windowMs: undefined,
    maxEvents: 100_000,
    activeTimeoutMs: undefined,
  });
  assert.equal(DEFAULT_MAX_EVENTS, 100_000);
});

Deno.test("parseCli() reads every flow-logger option", () => {
  assert.deepEqual(
    flowOptions(parseCli([
      "--routes",
      "/etc/netbird-ct/routes.json",
      "--dns-collection",
      "--dns-ports",
      "53,853",
      "--exit-node-collection",
      "--window",
      "10s",
      "--max-events",
      "5000",
      "--active-timeout",
      "1m30s",
    ])),
    {
      routes: "/etc/netbird-ct/routes.json",
      dnsCollection: true,
      dnsPorts: [53, 853],
      exitNodeCollection: true,
      windowMs: 10_000,
      maxEvents: 5000,
      activeTimeoutMs: 90_000,
    },
  );
});

Deno.test("parseCli() accepts valid flow-logger values", async (t) => {
  const cases: [args: string[], key: keyof CliOptions, value: unknown][] = [
    [["--window", "10"], "windowMs", 10_000],
    [["--window", "1s"], "windowMs", 1000],
    [["--window", "1.5"], "windowMs", 1500],
    [["--window", "1000ms"], "windowMs", 1000],
    [["--window", "5m"], "windowMs", 300_000],
    [["--window=1h"], "windowMs", 3_600_000],
    [["--active-timeout", "60s"], "activeTimeoutMs", 60_000],
    [["--active-timeout", "1m30s"], "activeTimeoutMs", 90_000],
    [["--active-timeout", "1"], "activeTimeoutMs", 1000],
    [["--max-events", "1"], "maxEvents", 1],
    [["--max-events", "999999999"], "maxEvents", 999_999_999],
    [["--dns-ports", "53"], "dnsPorts", [53]],
    [["--dns-ports", "53, 853"], "dnsPorts", [53, 853]],
    [["--dns-ports", "0,65535"], "dnsPorts", [0, 65535]],
    [["--routes", "routes.json"], "routes", "routes.json"],
    [["--dns-collection"], "dnsCollection", true],
    [["--exit-node-collection"], "exitNodeCollection", true],
  ];
  for (const [args, key, value] of cases) {
    await t.step(args.join(" "), () => {
      assert.deepEqual(parseCli(args)[key], value);
    });
  }
});

Deno.test("parseCli() rejects bad flow-logger values with a one-line UsageError naming the flag", async (t) => {
  const cases: [args: string[], message: string][] = [
    [
      ["--window", "0.5"],
      'invalid --window "0.5": expected a duration of at least 1s, such as 10s or 1m',
    ],
    [
      ["--window", "999ms"],
      'invalid --window "999ms": expected a duration of at least 1s, such as 10s or 1m',
    ],
    [
      ["--window", "0"],
      'invalid --window "0": expected a duration of at least 1s, such as 10s or 1m',
    ],
    [
      ["--window", "soon"],
      'invalid --window "soon": expected a duration of at least 1s, such as 10s or 1m',
    ],
    [
      ["--window", ""],
      'invalid --window "": expected a duration of at least 1s, such as 10s or 1m',
    ],
    [
      ["--active-timeout", "500ms"],
      'invalid --active-timeout "500ms": expected a duration of at least 1s, such as 10s or 1m',
    ],
    [
      ["--active-timeout", "1d"],
      'invalid --active-timeout "1d": expected a duration of at least 1s, such as 10s or 1m',
    ],
    [["--max-events", "0"], 'invalid --max-events "0": expected a whole number from 1'],
    [["--max-events", "1.5"], 'invalid --max-events "1.5": expected a whole number from 1'],
    [["--max-events", "1e3"], 'invalid --max-events "1e3": expected a whole number from 1'],
    [
      ["--max-events", "1000000000"],
      'invalid --max-events "1000000000": expected a whole number from 1',
    ],
    [["--max-events", "many"], 'invalid --max-events "many": expected a whole number from 1'],
    [["--dns-ports", "70000"], 'invalid --dns-ports "70000": expected ports such as 53,5353'],
    [["--dns-ports", "65536"], 'invalid --dns-ports "65536": expected ports such as 53,5353'],
    [["--dns-ports", "53,"], 'invalid --dns-ports "53,": expected ports such as 53,5353'],
    [["--dns-ports", "53;853"], 'invalid --dns-ports "53;853": expected ports such as 53,5353'],
    [["--dns-ports", "dns"], 'invalid --dns-ports "dns": expected ports such as 53,5353'],
    [["--dns-ports="], 'invalid --dns-ports "": expected ports such as 53,5353'],
    [["--routes", ""], 'invalid --routes "": expected a file path'],
    [["--dns-collection=yes"], 'option "--dns-collection" takes no value'],
    [["--exit-node-collection=no"], 'option "--exit-node-collection" takes no value'],
  ];
  for (const [args, message] of cases) {
    await t.step(JSON.stringify(args), () => {
      const err = usageError(args);
      assert.equal(err.message, message);
      assert.equal(err.name, "UsageError");
    });
  }
});

Deno.test("parseCli() says a flow-logger option needs a value when it is missing", async (t) => {
  const cases: [args: string[], flag: string][] = [
    [["--window"], "--window"],
    [["--routes"], "--routes"],
    [["--max-events"], "--max-events"],
    [["--active-timeout", "--window", "10s"], "--active-timeout"],
    [["--max-events", "-1"], "--max-events"],
  ];
  for (const [args, flag] of cases) {
    await t.step(args.join(" "), () => {
      const message = usageError(args).message;
      assert.ok(message.startsWith(`option "${flag}`), message);
      assert.ok(message.includes("needs a value"), message);
      assert.ok(!message.includes("\n"), message);
    });
  }
});

Deno.test("parseCli() tells how to give a flow-logger value that starts with a dash", () => {
  assert.equal(
    usageError(["--max-events", "-1"]).message,
    'option "--max-events" needs a value (write --max-events=VALUE for one starting with "-")',
  );
  assert.equal(
    usageError(["--max-events=-1"]).message,
    'invalid --max-events "-1": expected a whole number from 1',
  );
});

Deno.test("parseBytes() reads whole numbers with binary units", async (t) => {
  const cases: [text: string, bytes: number | undefined][] = [
    ["0", 0],
    ["212992", 212992],
    ["1b", 1],
    ["1K", 1024],
    ["1kb", 1024],
    ["1KiB", 1024],
    ["64M", 67108864],
    ["64MiB", 67108864],
    ["64mb", 67108864],
    ["2G", 2147483648],
    ["1gib", 1073741824],
    [" 1 K ", 1024],
    ["64 M", 67108864],
    ["1.5M", undefined],
    ["-1", undefined],
    ["1T", undefined],
    ["M", undefined],
    ["", undefined],
    ["lots", undefined],
    ["9007199254740992", undefined],
    ["9007199254740991", 9007199254740991],
    ["9007199254740991K", undefined],
  ];
  for (const [text, bytes] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.equal(parseBytes(text), bytes);
    });
  }
});

Deno.test("parseDuration() reads Go-style durations and bare seconds", async (t) => {
  const cases: [text: string, ms: number | undefined][] = [
    ["0", 0],
    ["10", 10_000],
    ["0.5", 500],
    ["1.5", 1500],
    ["500ms", 500],
    ["10s", 10_000],
    ["1.5s", 1500],
    ["5m", 300_000],
    ["2h", 7_200_000],
    ["1m30s", 90_000],
    ["1h2m3s4ms", 3_723_004],
    ["1s1s", 2000],
    [" 10s ", 10_000],
    ["10S", undefined],
    ["1d", undefined],
    ["1m 30s", undefined],
    ["-1s", undefined],
    [".5s", undefined],
    ["1.s", undefined],
    ["1e3", undefined],
    ["s", undefined],
    ["", undefined],
    ["soon", undefined],
  ];
  for (const [text, ms] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.equal(parseDuration(text), ms);
    });
  }
});

Deno.test("parseDuration() is exact for decimal durations in whole milliseconds", async (t) => {
  const cases: [text: string, ms: number][] = [
    ["1.001s", 1001],
    ["1.1", 1100],
    ["1.007s", 1007],
    ["0.27m", 16_200],
    ["2.01m", 120_600],
    ["1.07m", 64_200],
    ["0.001h", 3600],
  ];
  for (const [text, ms] of cases) {
    await t.step(text, () => {
      assert.equal(parseDuration(text), ms);
    });
  }
});

const TRACKER: TrackerStats = {
  events: 1200,
  records: 400,
  ignored: 3,
  filtered: 797,
  reopens: 1,
  duplicates: 2,
  live: 17,
  existing: 5,
  resyncs: 4,
  resyncFailures: 0,
  synthesizedStarts: 6,
  synthesizedEnds: 7,
  updates: 8,
  source: { received: 1200, overruns: 9, kernelDrops: 10 },
};

const BASE_LINE = "events=1200 written=350 filtered=797 ignored=3 live=17 overruns=9 " +
  "kernel_drops=10 resyncs=4 resync_failures=0 synthesized_starts=6 synthesized_ends=7 " +
  "duplicates=2 updates=8 reopens=1";

Deno.test("formatStats() writes the tracker counters without a rate for the first snapshot", () => {
  assert.equal(formatStats({ tracker: TRACKER, written: 350, at: 5000 }), BASE_LINE);
});

Deno.test("formatStats() writes the event rate since the previous snapshot first", () => {
  const previous: StatsSnapshot = {
    tracker: { ...TRACKER, events: 200 },
    written: 0,
    at: 1000,
  };
  assert.equal(
    formatStats({ tracker: TRACKER, written: 350, at: 5000 }, previous),
    `events_per_s=250 ${BASE_LINE}`,
  );
});

Deno.test("formatStats() does not divide by zero for snapshots taken at the same time", () => {
  const line = formatStats(
    { tracker: TRACKER, written: 350, at: 5000 },
    { tracker: { ...TRACKER, events: 1199 }, written: 0, at: 5000 },
  );
  assert.ok(line.startsWith("events_per_s=1000 "), line);
});

Deno.test("formatStats() adds the flow logger and window counters when given", () => {
  const line = formatStats({
    tracker: TRACKER,
    written: 350,
    logger: {
      received: 400,
      logged: 380,
      dnsFiltered: 11,
      exitNodeFiltered: 12,
      disabledDrops: 13,
    },
    windows: { windows: 14, aggregates: 15, earlyWindows: 16, pending: 18 },
    at: 5000,
  });
  assert.equal(
    line,
    `${BASE_LINE} dns_filtered=11 exit_node_filtered=12 disabled_drops=13 ` +
      "windows=14 aggregates=15 early_windows=16 window_pending=18",
  );
});

Deno.test("formatStats() adds the logger counters without window counters when there is no --window", () => {
  const line = formatStats({
    tracker: TRACKER,
    written: 350,
    logger: { received: 400, logged: 400, dnsFiltered: 0, exitNodeFiltered: 0, disabledDrops: 0 },
    at: 5000,
  });
  assert.equal(line, `${BASE_LINE} dns_filtered=0 exit_node_filtered=0 disabled_drops=0`);
});

Deno.test("formatStats() ends with memory in MiB with one decimal when known", () => {
  const line = formatStats({
    tracker: TRACKER,
    written: 350,
    windows: { windows: 1, aggregates: 2, earlyWindows: 0, pending: 3 },
    at: 5000,
    rss: 52_428_800,
    heapUsed: 12_345_678,
  });
  assert.equal(
    line,
    `${BASE_LINE} windows=1 aggregates=2 early_windows=0 window_pending=3 rss_mb=50.0 heap_mb=11.8`,
  );
});

Deno.test("parseCli() reads the IPFIX flags and rejects bad values naming the flag", () => {
  const o = parseCli([
    "--ipfix",
    "192.0.2.10:4739",
    "--ipfix",
    "tcp://[2001:db8::1]:4739",
    "--ipfix-domain",
    "7",
    "--ipfix-counters",
    "initiator",
    "--ipfix-sequence",
    "nfdump",
  ]);
  assert.deepEqual(o.ipfix, ["192.0.2.10:4739", "tcp://[2001:db8::1]:4739"]);
  assert.deepEqual(
    [o.ipfixDomain, o.ipfixCounters, o.ipfixSequence, o.ipfixMtu, o.ipfixQueue],
    [7, "initiator", "nfdump", 1400, 65536],
  );
  const defaults = parseCli([]);
  assert.deepEqual([defaults.ipfix, defaults.ipfixSequence], [[], "rfc"]);
  for (
    const [args, flag] of [
      [["--ipfix", "nope"], "--ipfix"],
      [["--ipfix-domain", "-1"], "--ipfix-domain"],
      [["--ipfix-counters", "both"], "--ipfix-counters"],
      [["--ipfix-mtu", "100"], "--ipfix-mtu"],
      [["--ipfix-template-refresh", "10ms"], "--ipfix-template-refresh"],
      [["--ipfix-sequence", "x"], "--ipfix-sequence"],
    ] as const
  ) {
    assert.throws(
      () => parseCli([...args]),
      (e: unknown) =>
        e instanceof UsageError && e.message.includes(flag) && !e.message.includes("\n"),
      args.join(" "),
    );
  }
});
