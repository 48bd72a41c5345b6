import assert from "node:assert/strict";
import {
  DEFAULT_DNS_PORTS,
  FlowLogger,
  type FlowLoggerOptions,
  type LoggerStats,
  WindowAggregator,
} from "../../lib/logger.ts";
import { Overlay } from "../../lib/overlay.ts";
import type { FlowRecord } from "../../lib/record.ts";
import { RouteTable } from "../../lib/routes.ts";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const at = (ms: number): Date => new Date(T0 + ms);
const HOUR = 3_600_000;

class Clock {
  ms = T0;
  readonly now = (): Date => new Date(this.ms);
}

/** A sink that keeps every batch it is given. */
class Collect {
  batches: FlowRecord[][] = [];
  readonly write = (records: readonly FlowRecord[]): void => {
    this.batches.push([...records]);
  };
  get records(): FlowRecord[] {
    return this.batches.flat();
  }
}

const OVERLAY = new Overlay({ networks: ["100.64.0.0/16", "fd00:1::/64"] });

const ROUTES = RouteTable.fromJson({
  routes: [
    { network: "0.0.0.0/0", resource_id: "exit4" },
    { network: "::/0", resource_id: "exit6" },
    { network: "192.0.2.0/24", resource_id: "web" },
    { network: "2001:db8::/32", resource_id: "web6" },
    { network: "100.64.0.0/16", resource_id: "overlay-route" },
    { network: "fd00:1::/64", resource_id: "overlay-route6" },
  ],
  resolved: { "198.51.100.7": "api", "2001:DB8:ffff::0:7": "api6", "100.64.0.9": "overlay-api" },
});

let nextId = 0;

/** A record as the tracker writes it (no resource IDs yet). */
function record(fields: Partial<FlowRecord> = {}): FlowRecord {
  nextId++;
  return {
    eventId: `event-${nextId}`,
    timestamp: at(0),
    flowId: `flow-${nextId}`,
    type: "start",
    direction: "egress",
    protocol: 6,
    sourceIp: "100.64.0.1",
    destIp: "100.64.0.2",
    sourcePort: 40000,
    destPort: 443,
    icmpType: 0,
    icmpCode: 0,
    rxPackets: 0n,
    txPackets: 0n,
    rxBytes: 0n,
    txBytes: 0n,
    conntrackId: nextId,
    ...fields,
  };
}

const NO_DROPS: LoggerStats = {
  received: 0,
  logged: 0,
  dnsFiltered: 0,
  exitNodeFiltered: 0,
  disabledDrops: 0,
};

Deno.test("§7.2 TestStore adapted: an enabled logger stores into the window, a disabled one counts drops (netbird-ct: enable() is synchronous; NetBird loses the first events and drops silently)", () => {
  const out = new Collect();
  const aggregator = new WindowAggregator(out, { windowMs: HOUR });
  try {
    const logger = new FlowLogger(aggregator, { overlay: new Overlay({ networks: [] }) });
    const flowIds = (): string[] => aggregator.store.getEvents().map((r) => r.flowId);
    const x = "3bd1bd56-e54d-5779-95ba-5ded2bfbf188";
    const startX = (): FlowRecord[] => [
      record({ flowId: x, type: "start", direction: "ingress", protocol: 6 }),
    ];

    logger.enable();
    logger.write(startX());
    assert.deepEqual(flowIds(), [x]);

    logger.disable();
    assert.equal(logger.enabled, false);
    logger.write(startX());
    assert.deepEqual(flowIds(), [x]);
    assert.equal(logger.stats().disabledDrops, 1);

    logger.enable();
    logger.write(startX());
    assert.deepEqual(flowIds(), [x, x]);
    assert.deepEqual(logger.stats(), { ...NO_DROPS, received: 3, logged: 2, disabledDrops: 1 });
  } finally {
    aggregator.close();
  }
});

Deno.test("FlowLogger starts disabled with enabled: false and counts what it receives", () => {
  const out = new Collect();
  const logger = new FlowLogger(out, { overlay: OVERLAY, enabled: false });
  assert.equal(logger.enabled, false);
  logger.write([record(), record()]);
  assert.deepEqual(out.batches, []);
  assert.deepEqual(logger.stats(), { ...NO_DROPS, received: 2, disabledDrops: 2 });
});

Deno.test("FlowLogger uses NetBird's DNS ports 53, 5353 and 22054 by default", () => {
  assert.deepEqual(DEFAULT_DNS_PORTS, [53, 5353, 22054]);
});

interface PolicyCase {
  name: string;
  options?: Partial<FlowLoggerOptions>;
  record: Partial<FlowRecord>;
  /** `[sourceResourceId, destResourceId]` of the logged record, or the counter that dropped it. */
  expect: [string | null, string | null] | "dnsFiltered" | "exitNodeFiltered";
}

const UDP = 17;
const TCP = 6;

const POLICY_CASES: PolicyCase[] = [
  {
    name: "dns off: UDP to port 53 is dropped",
    record: { protocol: UDP, destPort: 53 },
    expect: "dnsFiltered",
  },
  {
    name: "dns off: UDP to port 5353 is dropped",
    record: { protocol: UDP, destPort: 5353 },
    expect: "dnsFiltered",
  },
  {
    name: "dns off: UDP to port 22054 is dropped",
    record: { protocol: UDP, destPort: 22054 },
    expect: "dnsFiltered",
  },
  {
    name: "dns off: UDP end records to port 53 are dropped too",
    record: { protocol: UDP, destPort: 53, type: "end" },
    expect: "dnsFiltered",
  },
  {
    name: "dns off: TCP to port 53 is kept",
    record: { protocol: TCP, destPort: 53 },
    expect: [null, null],
  },
  {
    name: "dns off: UDP from port 53 to another port is kept",
    record: { protocol: UDP, sourcePort: 53, destPort: 40000 },
    expect: [null, null],
  },
  {
    name: "dns off: UDP to port 853 is kept",
    record: { protocol: UDP, destPort: 853 },
    expect: [null, null],
  },
  {
    name: "--dns-collection: UDP to port 53 is kept",
    options: { dnsCollection: true },
    record: { protocol: UDP, destPort: 53 },
    expect: [null, null],
  },
  {
    name: "--dns-collection: UDP to port 5353 is kept",
    options: { dnsCollection: true },
    record: { protocol: UDP, destPort: 5353 },
    expect: [null, null],
  },
  {
    name: "--dns-collection: UDP to port 22054 is kept",
    options: { dnsCollection: true },
    record: { protocol: UDP, destPort: 22054 },
    expect: [null, null],
  },
  {
    name: "--dns-ports 853: UDP to port 853 is dropped",
    options: { dnsPorts: [853] },
    record: { protocol: UDP, destPort: 853 },
    expect: "dnsFiltered",
  },
  {
    name: "--dns-ports 853: UDP to port 53 is kept",
    options: { dnsPorts: [853] },
    record: { protocol: UDP, destPort: 53 },
    expect: [null, null],
  },
  {
    name: "exit off: destination matched only by 0.0.0.0/0 is dropped",
    record: { destIp: "8.8.8.8" },
    expect: "exitNodeFiltered",
  },
  {
    name: "exit off: destination matched only by ::/0 is dropped",
    record: { sourceIp: "fd00:1::1", destIp: "2606:4700::1111" },
    expect: "exitNodeFiltered",
  },
  {
    name: "exit off: source matched only by 0.0.0.0/0 is dropped",
    record: { direction: "ingress", sourceIp: "8.8.8.8", destIp: "100.64.0.1" },
    expect: "exitNodeFiltered",
  },
  {
    name: "exit off: UDP to 8.8.8.8:53 counts as DNS, checked first",
    record: { protocol: UDP, destIp: "8.8.8.8", destPort: 53 },
    expect: "dnsFiltered",
  },
  {
    name: "exit off: a more specific route keeps the record with its resource ID",
    record: { destIp: "192.0.2.10" },
    expect: [null, "web"],
  },
  {
    name: "exit off: a more specific IPv6 route keeps the record with its resource ID",
    record: { sourceIp: "fd00:1::1", destIp: "2001:db8::10" },
    expect: [null, "web6"],
  },
  {
    name: "exit off: a resolved address keeps the record with its resource ID",
    record: { destIp: "198.51.100.7" },
    expect: [null, "api"],
  },
  {
    name: "exit off: a resolved IPv6 address (non-canonical in the file) keeps the record",
    record: { sourceIp: "fd00:1::1", destIp: "2001:db8:ffff::7" },
    expect: [null, "api6"],
  },
  {
    name: "exit off: a routed source gets its resource ID",
    record: { direction: "ingress", sourceIp: "192.0.2.5", destIp: "100.64.0.1" },
    expect: ["web", null],
  },
  {
    name: "--exit-node-collection: a 0.0.0.0/0 destination is kept and labelled",
    options: { exitNodeCollection: true },
    record: { destIp: "8.8.8.8" },
    expect: [null, "exit4"],
  },
  {
    name: "--exit-node-collection: a ::/0 destination is kept and labelled",
    options: { exitNodeCollection: true },
    record: { sourceIp: "fd00:1::1", destIp: "2606:4700::1111" },
    expect: [null, "exit6"],
  },
  {
    name: "--exit-node-collection: a 0.0.0.0/0 source is kept and labelled",
    options: { exitNodeCollection: true },
    record: { direction: "ingress", sourceIp: "8.8.8.8", destIp: "100.64.0.1" },
    expect: ["exit4", null],
  },
  {
    name: "overlay addresses get no resource ID though a route covers them",
    record: { sourceIp: "100.64.0.1", destIp: "100.64.0.2" },
    expect: [null, null],
  },
  {
    name: "overlay IPv6 addresses get no resource ID though a route covers them",
    record: { sourceIp: "fd00:1::1", destIp: "fd00:1::2" },
    expect: [null, null],
  },
  {
    name: "an overlay address gets no resource ID though it is a resolved address",
    record: { destIp: "100.64.0.9" },
    expect: [null, null],
  },
  {
    name: "without routes a non-overlay address is kept without a resource ID",
    options: { routes: RouteTable.EMPTY },
    record: { destIp: "8.8.8.8" },
    expect: [null, null],
  },
];

Deno.test("§7.11 derived: FlowLogger applies the DNS and exit-node policy and sets resource IDs", async (t) => {
  for (const c of POLICY_CASES) {
    await t.step(c.name, () => {
      const out = new Collect();
      const logger = new FlowLogger(out, { overlay: OVERLAY, routes: ROUTES, ...c.options });
      const r = record(c.record);
      logger.write([r]);
      if (typeof c.expect === "string") {
        assert.deepEqual(out.batches, []);
        assert.deepEqual(logger.stats(), { ...NO_DROPS, received: 1, [c.expect]: 1 });
      } else {
        assert.deepEqual(out.batches, [[r]]);
        assert.deepEqual([r.sourceResourceId, r.destResourceId], c.expect);
        assert.deepEqual(logger.stats(), { ...NO_DROPS, received: 1, logged: 1 });
      }
    });
  }
});

Deno.test("FlowLogger.write() passes the kept records on in one batch, in order", () => {
  const out = new Collect();
  const logger = new FlowLogger(out, { overlay: OVERLAY, routes: ROUTES });
  const a = record({ destPort: 1 });
  const dns = record({ protocol: UDP, destPort: 53 });
  const b = record({ destPort: 2 });
  const exit = record({ destIp: "8.8.8.8" });
  const c = record({ destPort: 3 });
  logger.write([a, dns, b, exit, c]);
  assert.deepEqual(out.batches, [[a, b, c]]);
  assert.deepEqual(logger.stats(), {
    ...NO_DROPS,
    received: 5,
    logged: 3,
    dnsFiltered: 1,
    exitNodeFiltered: 1,
  });
});

Deno.test("FlowLogger.write() does not call the sink when every record is filtered", () => {
  let calls = 0;
  const logger = new FlowLogger({ write: () => calls++ }, { overlay: OVERLAY, routes: ROUTES });
  logger.write([record({ protocol: UDP, destPort: 53 }), record({ destIp: "8.8.8.8" })]);
  logger.write([]);
  assert.equal(calls, 0);
});

Deno.test("FlowLogger.setRoutes() applies to later records only", () => {
  const out = new Collect();
  const logger = new FlowLogger(out, { overlay: OVERLAY });
  const before = record({ destIp: "192.0.2.10" });
  logger.write([before]);
  logger.setRoutes(ROUTES);
  const after = record({ destIp: "192.0.2.10" });
  const exit = record({ destIp: "8.8.8.8" });
  logger.write([after, exit]);
  assert.deepEqual(out.records.map((r) => [r.eventId, r.destResourceId]), [
    [before.eventId, null],
    [after.eventId, "web"],
  ]);
  assert.equal(logger.stats().exitNodeFiltered, 1);
});

Deno.test("FlowLogger.updateConfig() switches DNS and exit-node collection for later records", () => {
  const out = new Collect();
  const logger = new FlowLogger(out, { overlay: OVERLAY, routes: ROUTES });
  const batch = (): FlowRecord[] => [
    record({ protocol: UDP, destPort: 53 }),
    record({ destIp: "8.8.8.8" }),
  ];
  logger.write(batch());
  logger.updateConfig(true, false);
  logger.write(batch());
  logger.updateConfig(false, true);
  logger.write(batch());
  logger.updateConfig(true, true);
  logger.write(batch());
  assert.deepEqual(
    out.batches.map((b) => b.map((r) => r.protocol === UDP ? "dns" : "exit")),
    [["dns"], ["exit"], ["dns", "exit"]],
  );
  assert.deepEqual(logger.stats(), {
    ...NO_DROPS,
    received: 8,
    logged: 4,
    dnsFiltered: 2,
    exitNodeFiltered: 2,
  });
});

Deno.test("FlowLogger.stats() returns a copy", () => {
  const logger = new FlowLogger(new Collect(), { overlay: OVERLAY });
  const s = logger.stats();
  s.received = 99;
  assert.equal(logger.stats().received, 0);
});

Deno.test("WindowAggregator writes one aggregate per key for each window closed by flush()", () => {
  const clock = new Clock();
  const out = new Collect();
  const agg = new WindowAggregator(out, { windowMs: HOUR, now: clock.now });
  try {
    agg.write([
      record({ eventId: "a1", destPort: 1, type: "start" }),
      record({ eventId: "b1", destPort: 2, type: "start", txBytes: 5n }),
      record({ eventId: "a2", destPort: 1, type: "end", txBytes: 100n }),
    ]);
    clock.ms = T0 + 10_000;
    agg.flush();
    agg.write([record({ eventId: "b2", destPort: 2, type: "end", txBytes: 7n })]);
    clock.ms = T0 + 20_000;
    agg.flush();
    assert.deepEqual(
      out.batches.map((b) =>
        b.map((r) => [
          r.eventId,
          r.type,
          r.txBytes,
          r.window?.windowStart,
          r.window?.windowEnd,
          r.window?.numOfStarts,
          r.window?.numOfEnds,
        ])
      ),
      [
        [
          ["a1", "window", 100n, at(0), at(10_000), 1, 1],
          ["b1", "window", 5n, at(0), at(10_000), 1, 0],
        ],
        [["b2", "window", 7n, at(10_000), at(20_000), 0, 1]],
      ],
    );
    assert.deepEqual(agg.stats(), { windows: 2, aggregates: 3, earlyWindows: 0, pending: 0 });
  } finally {
    agg.close();
  }
});

Deno.test("WindowAggregator closes the window early when maxEvents is exceeded and loses nothing (netbird-ct: bounded; NetBird: unbounded)", () => {
  const clock = new Clock();
  const out = new Collect();
  const agg = new WindowAggregator(out, { windowMs: HOUR, maxEvents: 2, now: clock.now });
  const records = [1, 2, 3, 4, 5].map((i) =>
    record({ eventId: `e${i}`, type: "update", txPackets: BigInt(i), txBytes: BigInt(i * 100) })
  );
  try {
    agg.write(records);
    assert.deepEqual(agg.stats(), { windows: 2, aggregates: 2, earlyWindows: 2, pending: 1 });
  } finally {
    agg.close();
  }
  const written = out.records;
  assert.deepEqual(
    written.map((r) => [r.eventId, r.window?.numOfUpdates, r.txPackets, r.txBytes]),
    [["e1", 2, 3n, 300n], ["e3", 2, 7n, 700n], ["e5", 1, 5n, 500n]],
  );
  assert.equal(written.reduce((s, r) => s + r.window!.numOfUpdates, 0), records.length);
  assert.deepEqual(agg.stats(), { windows: 3, aggregates: 3, earlyWindows: 2, pending: 0 });
});

Deno.test("WindowAggregator.close() writes the last partial window and is idempotent", () => {
  const clock = new Clock();
  const out = new Collect();
  const agg = new WindowAggregator(out, { windowMs: HOUR, now: clock.now });
  agg.write([record({ eventId: "a" })]);
  clock.ms = T0 + 2500;
  agg.close();
  agg.close();
  assert.deepEqual(
    out.batches.map((b) => b.map((r) => [r.eventId, r.window?.windowStart, r.window?.windowEnd])),
    [[["a", at(0), at(2500)]]],
  );
  assert.equal(agg.stats().windows, 1);
});

Deno.test("WindowAggregator disposes like close()", () => {
  const out = new Collect();
  {
    using agg = new WindowAggregator(out, { windowMs: HOUR });
    agg.write([record({ eventId: "a" })]);
  }
  assert.deepEqual(out.records.map((r) => r.eventId), ["a"]);
});

Deno.test("WindowAggregator writes nothing for an empty window", () => {
  let calls = 0;
  const agg = new WindowAggregator({ write: () => calls++ }, { windowMs: HOUR });
  agg.flush();
  agg.close();
  assert.equal(calls, 0);
  assert.deepEqual(agg.stats(), { windows: 0, aggregates: 0, earlyWindows: 0, pending: 0 });
});

Deno.test("WindowAggregator writes the window when its timer fires", async () => {
  const out = new Collect();
  const agg = new WindowAggregator(out, { windowMs: 20 });
  try {
    agg.write([record({ eventId: "a" }), record({ eventId: "b", type: "end" })]);
    const deadline = Date.now() + 2000;
    while (out.batches.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(
      out.records.map((r) => [r.eventId, r.window?.numOfStarts, r.window?.numOfEnds]),
      [["a", 1, 1]],
    );
  } finally {
    agg.close();
  }
});

Deno.test("FlowLogger in front of a WindowAggregator aggregates only the logged records", () => {
  const clock = new Clock();
  const out = new Collect();
  const agg = new WindowAggregator(out, { windowMs: HOUR, now: clock.now });
  const logger = new FlowLogger(agg, { overlay: OVERLAY, routes: ROUTES });
  logger.write([
    record({ eventId: "a", destIp: "192.0.2.10", type: "start" }),
    record({ eventId: "dns", protocol: UDP, destPort: 53 }),
    record({ eventId: "b", destIp: "192.0.2.10", type: "end", rxBytes: 64n }),
  ]);
  clock.ms = T0 + 1000;
  agg.close();
  assert.deepEqual(
    out.records.map((r) => [r.eventId, r.destResourceId, r.rxBytes, r.window?.numOfEnds]),
    [["a", "web", 64n, 1]],
  );
});

Deno.test("WindowAggregator.write() after close() writes at once instead of holding records", () => {
  const out: FlowRecord[] = [];
  const agg = new WindowAggregator({ write: (r) => out.push(...r) }, { windowMs: 3_600_000 });
  agg.close();
  agg.write([record({ eventId: "late" })]);
  assert.equal(out.length, 1);
  assert.equal(out[0]!.eventId, "late");
  assert.equal(agg.store.size, 0);
});
