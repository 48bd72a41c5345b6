import assert from "node:assert/strict";
import { aggregate, AggregatingStore, aggregationKey } from "../../lib/aggregate.ts";
import { type FlowRecord, type RecordType, toJsonLine } from "../../lib/record.ts";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
const at = (ms: number): Date => new Date(T0 + ms);

/** An injectable clock for the store. */
class Clock {
  ms = T0;
  readonly now = (): Date => new Date(this.ms);
}

/** rxPackets, txPackets, rxBytes, txBytes. */
type Counters = readonly [bigint, bigint, bigint, bigint];

/**
 * Counters of the first and second record of each generated flow: random-looking u64 values near
 * 2^64, so every two-record sum wraps. `sum` is written out (mod 2^64), not computed.
 */
const COUNTERS: readonly { events: readonly [Counters, Counters]; sum: Counters }[] = [
  {
    events: [
      [18442510653749236174n, 18441071982212507552n, 18438696846269102013n, 18442854853844476377n],
      [18444096445426085434n, 18444583787245993169n, 18446004954425211664n, 18444864228048410686n],
    ],
    sum: [
      18439863025465769992n,
      18438911695748949105n,
      18437957726984762061n,
      18440975008183335447n,
    ],
  },
  {
    events: [
      [18442353938729050671n, 18446216237088876258n, 18439157343225934147n, 18440066502113237181n],
      [18438990395280477737n, 18439500073563063695n, 18440962820555228302n, 18441920379409089502n],
    ],
    sum: [
      18434600260299976792n,
      18438972236942388337n,
      18433376090071610833n,
      18435242807812775067n,
    ],
  },
  {
    events: [
      [18440528788099672962n, 18441439990008804823n, 18439755641007933701n, 18442727285749525259n],
      [18442934325043153723n, 18445923709661364789n, 18445376543160366732n, 18443445371224628128n],
    ],
    sum: [
      18436719039433275069n,
      18440619625960617996n,
      18438388110458748817n,
      18439428583264601771n,
    ],
  },
];

const FLOW_IDS = [
  "3bd1bd56-e54d-5779-95ba-5ded2bfbf180",
  "3bd1bd56-e54d-5779-95ba-5ded2bfbf181",
  "3bd1bd56-e54d-5779-95ba-5ded2bfbf182",
];
const SOURCE_PORTS = [51234, 40988, 33071];
const DEST_PORT = 34197;

const PROTOCOLS: readonly [name: string, protocol: number][] = [
  ["ICMP", 1],
  ["ICMPv6", 58],
  ["TCP", 6],
  ["UDP", 17],
];
const ICMP_PROTOCOLS = PROTOCOLS.slice(0, 2);

/** §7.3 scenarios with the counts each aggregate must carry: starts, ends, drops, updates. */
const SCENARIOS: readonly { types: readonly RecordType[]; counts: readonly number[] }[] = [
  { types: ["start", "end"], counts: [1, 1, 0, 0] },
  { types: ["start", "drop"], counts: [1, 0, 1, 0] },
  { types: ["start"], counts: [1, 0, 0, 0] },
  { types: ["drop"], counts: [0, 0, 1, 0] },
];

/** What distinguishes one generated flow. */
interface FlowSpec {
  /** Index into COUNTERS, FLOW_IDS and SOURCE_PORTS. */
  index: number;
  protocol: number;
  sourceIp: string;
  destIp: string;
  destPort: number;
  icmpType: number;
}

/** The fields every record of a flow shares (the §7.3 generator). */
function flowFields(s: FlowSpec): Omit<FlowRecord, "eventId" | "timestamp" | "type"> {
  return {
    flowId: FLOW_IDS[s.index]!,
    direction: "ingress",
    protocol: s.protocol,
    sourceIp: s.sourceIp,
    destIp: s.destIp,
    sourcePort: SOURCE_PORTS[s.index]!,
    destPort: s.destPort,
    icmpType: s.icmpType,
    icmpCode: 0,
    rxPackets: 0n,
    txPackets: 0n,
    rxBytes: 0n,
    txBytes: 0n,
    conntrackId: 1000 + s.index,
    sourceResourceId: "source-resource-id",
    destResourceId: "dest-resource-id",
  };
}

const withCounters = (r: FlowRecord, c: Counters): FlowRecord => ({
  ...r,
  rxPackets: c[0],
  txPackets: c[1],
  rxBytes: c[2],
  txBytes: c[3],
});

/** One record per type, timestamps T0 + i seconds, event IDs `event-<flow>-<i>`. */
function generateFlow(s: FlowSpec, types: readonly RecordType[]): FlowRecord[] {
  return types.map((type, i) =>
    withCounters(
      { ...flowFields(s), eventId: `event-${s.index}-${i}`, timestamp: at(i * 1000), type },
      COUNTERS[s.index]!.events[i]!,
    )
  );
}

/** The aggregate §7.3 expects for a flow: the first record's ID and time, wrapped sums, counts. */
function expectedAggregate(
  s: FlowSpec,
  scenario: (typeof SCENARIOS)[number],
  windowStart: Date,
  windowEnd: Date,
): FlowRecord {
  const c = COUNTERS[s.index]!;
  const [numOfStarts, numOfEnds, numOfDrops, numOfUpdates] = scenario.counts;
  return withCounters({
    ...flowFields(s),
    eventId: `event-${s.index}-0`,
    timestamp: at(0),
    type: "window",
    window: {
      windowStart,
      windowEnd,
      numOfStarts: numOfStarts!,
      numOfEnds: numOfEnds!,
      numOfDrops: numOfDrops!,
      numOfUpdates: numOfUpdates!,
    },
  }, scenario.types.length === 1 ? c.events[0] : c.sum);
}

/** Records of several flows, interleaved: first records of all flows, then second records. */
function interleave(flows: FlowRecord[][]): FlowRecord[] {
  const out: FlowRecord[] = [];
  for (let i = 0; i < Math.max(...flows.map((f) => f.length)); i++) {
    for (const f of flows) if (f[i] !== undefined) out.push(f[i]!);
  }
  return out;
}

/** Stores the records at T0 and aggregates the window at T0 + 5 s. */
function aggregateInStore(records: FlowRecord[]): FlowRecord[] {
  const clock = new Clock();
  const store = new AggregatingStore({ now: clock.now });
  for (const r of records) assert.equal(store.store(r), true);
  clock.ms = T0 + 5000;
  return store.getAggregatedEvents();
}

/** A plain TCP record for the smaller tests. */
function record(fields: Partial<FlowRecord> = {}): FlowRecord {
  return {
    eventId: "e1",
    timestamp: at(0),
    flowId: "f1",
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
    conntrackId: 1,
    ...fields,
  };
}

const W_START = at(0);
const W_END = at(10_000);

Deno.test("§7.3 TestFlowAggregation: two flows to the same port give two aggregates with first ID, wrapped sums and counts (type window; NetBird: TYPE_UNKNOWN)", async (t) => {
  for (const [name, protocol] of PROTOCOLS) {
    for (const scenario of SCENARIOS) {
      await t.step(`${name} [${scenario.types.join(", ")}]`, () => {
        const a: FlowSpec = {
          index: 0,
          protocol,
          sourceIp: "1.1.1.1",
          destIp: "2.2.2.2",
          destPort: DEST_PORT,
          icmpType: 0,
        };
        const b: FlowSpec = { ...a, index: 1, sourceIp: "3.3.3.3" };
        const out = aggregateInStore(
          interleave([generateFlow(a, scenario.types), generateFlow(b, scenario.types)]),
        );
        assert.deepEqual(out, [
          expectedAggregate(a, scenario, at(0), at(5000)),
          expectedAggregate(b, scenario, at(0), at(5000)),
        ]);
      });
    }
  }
});

Deno.test("§7.3 TestIcmpEventAggregation: one aggregate per ICMP type of one address pair", async (t) => {
  for (const [name, protocol] of ICMP_PROTOCOLS) {
    for (const scenario of SCENARIOS) {
      await t.step(`${name} [${scenario.types.join(", ")}]`, () => {
        const specs: FlowSpec[] = [1, 2, 3].map((icmpType, index) => ({
          index,
          protocol,
          sourceIp: "1.1.1.1",
          destIp: "2.2.2.2",
          destPort: 0,
          icmpType,
        }));
        const out = aggregateInStore(interleave(specs.map((s) => generateFlow(s, scenario.types))));
        assert.deepEqual(out, specs.map((s) => expectedAggregate(s, scenario, at(0), at(5000))));
      });
    }
  }
});

Deno.test("§7.3 TestFlowAggregationOfUnknownProtocols: protocol 0 gives one aggregate per record", async (t) => {
  for (const scenario of SCENARIOS) {
    await t.step(`[${scenario.types.join(", ")}]`, () => {
      const a: FlowSpec = {
        index: 0,
        protocol: 0,
        sourceIp: "1.1.1.1",
        destIp: "2.2.2.2",
        destPort: DEST_PORT,
        icmpType: 0,
      };
      const b: FlowSpec = { ...a, index: 1, sourceIp: "3.3.3.3" };
      const records = interleave([
        generateFlow(a, scenario.types),
        generateFlow(b, scenario.types),
      ]);
      const out = aggregateInStore(records);
      const countsOf = (type: RecordType): number[] => [
        type === "start" ? 1 : 0,
        type === "end" ? 1 : 0,
        type === "drop" ? 1 : 0,
        0,
      ];
      assert.deepEqual(
        out.map((r) => [r.eventId, r.timestamp, r.type, r.rxPackets, r.txBytes]),
        records.map((r) => [r.eventId, r.timestamp, "window", r.rxPackets, r.txBytes]),
      );
      assert.deepEqual(
        out.map((r) => [
          r.window?.numOfStarts,
          r.window?.numOfEnds,
          r.window?.numOfDrops,
          r.window?.numOfUpdates,
        ]),
        records.map((r) => countsOf(r.type)),
      );
    });
  }
});

Deno.test("aggregate() never merges SCTP or GRE records, as NetBird", async (t) => {
  for (const [name, protocol] of [["SCTP", 132], ["GRE", 47]] as const) {
    await t.step(name, () => {
      const records = [
        record({ eventId: "a", protocol, type: "start" }),
        record({ eventId: "b", protocol, type: "end", rxBytes: 10n }),
        record({ eventId: "c", protocol, type: "end", rxBytes: 20n }),
      ];
      assert.equal(aggregationKey(records[0]!), undefined);
      const out = aggregate(records, W_START, W_END);
      assert.deepEqual(
        out.map((r) => [r.eventId, r.rxBytes, r.window?.numOfStarts, r.window?.numOfEnds]),
        [["a", 0n, 1, 0], ["b", 10n, 0, 1], ["c", 20n, 0, 1]],
      );
    });
  }
});

Deno.test("§7.3 TestResetAggregationWindow: resetWindow() returns the old window and starts a new one at now", () => {
  const clock = new Clock();
  const store = new AggregatingStore({ now: clock.now });
  const r = record({ eventId: "e1", flowId: "f1" });
  store.store(r);
  clock.ms = T0 + 1000;
  const closed = store.resetWindow();
  assert.notEqual(closed.windowStart.getTime(), store.windowStart.getTime());
  assert.deepEqual(closed.windowStart, at(0));
  assert.deepEqual(store.windowStart, at(1000));
  assert.deepEqual(closed.windowEnd, store.windowStart);
  assert.deepEqual(closed.records, [r]);
  assert.equal(store.size, 0);
  assert.deepEqual(store.getEvents(), []);
});

Deno.test("aggregate() counts each record type in its own counter and window records in none", async (t) => {
  const cases: [RecordType, number[]][] = [
    ["start", [1, 0, 0, 0]],
    ["end", [0, 1, 0, 0]],
    ["drop", [0, 0, 1, 0]],
    ["update", [0, 0, 0, 1]],
    ["window", [0, 0, 0, 0]],
  ];
  for (const [type, counts] of cases) {
    await t.step(type, () => {
      const [out] = aggregate([record({ type })], W_START, W_END);
      const w = out!.window!;
      assert.deepEqual([w.numOfStarts, w.numOfEnds, w.numOfDrops, w.numOfUpdates], counts);
    });
  }
});

Deno.test("aggregate() counts update records in numOfUpdates and sums their deltas (netbird-ct: NetBird has no updates)", () => {
  const records = [
    record({ eventId: "a", type: "start", timestamp: at(0) }),
    record({ eventId: "b", type: "update", timestamp: at(1000), txPackets: 10n, txBytes: 1000n }),
    record({ eventId: "c", type: "update", timestamp: at(2000), txPackets: 5n, txBytes: 500n }),
    record({ eventId: "d", type: "end", timestamp: at(3000), txPackets: 1n, txBytes: 40n }),
  ];
  const out = aggregate(records, W_START, W_END);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0]!.window, {
    windowStart: W_START,
    windowEnd: W_END,
    numOfStarts: 1,
    numOfEnds: 1,
    numOfDrops: 0,
    numOfUpdates: 2,
  });
  assert.deepEqual([out[0]!.txPackets, out[0]!.txBytes], [16n, 1540n]);
});

Deno.test("aggregate() sums counters as given, without subtracting earlier records (netbird-ct: the tracker's records are deltas)", () => {
  const out = aggregate(
    [
      record({ eventId: "a", type: "update", rxPackets: 3n, txPackets: 4n, rxBytes: 300n }),
      record({ eventId: "b", type: "end", rxPackets: 3n, txPackets: 2n, rxBytes: 100n }),
    ],
    W_START,
    W_END,
  );
  assert.deepEqual(
    [out[0]!.rxPackets, out[0]!.txPackets, out[0]!.rxBytes, out[0]!.txBytes],
    [6n, 6n, 400n, 0n],
  );
});

Deno.test("aggregate() merges only records equal in source, destination, destination port, direction, protocol and ICMP type", async (t) => {
  const cases: [field: string, second: Partial<FlowRecord>, aggregates: number][] = [
    ["sourceIp", { sourceIp: "100.64.0.3" }, 2],
    ["destIp", { destIp: "100.64.0.3" }, 2],
    ["destPort", { destPort: 8443 }, 2],
    ["direction", { direction: "ingress" }, 2],
    ["protocol", { protocol: 17 }, 2],
    ["icmpType", { icmpType: 8 }, 2],
    ["sourcePort (not in the key)", { sourcePort: 40001 }, 1],
    ["icmpCode (not in the key)", { icmpCode: 3 }, 1],
    ["flowId (not in the key)", { flowId: "f2" }, 1],
    ["resource IDs (not in the key)", { sourceResourceId: "a", destResourceId: "b" }, 1],
    ["conntrackId (not in the key)", { conntrackId: 2 }, 1],
    ["type (not in the key)", { type: "end" }, 1],
  ];
  for (const [field, second, aggregates] of cases) {
    await t.step(field, () => {
      const out = aggregate(
        [record({ eventId: "a" }), record({ eventId: "b", timestamp: at(1000), ...second })],
        W_START,
        W_END,
      );
      assert.equal(out.length, aggregates);
    });
  }
});

Deno.test("aggregate() takes flow ID, ICMP code, resource IDs and conntrack id from the first record of a key", () => {
  const out = aggregate(
    [
      record({ eventId: "a", flowId: "f1", icmpCode: 1, sourceResourceId: "r1", conntrackId: 7 }),
      record({
        eventId: "b",
        timestamp: at(-1000),
        flowId: "f2",
        icmpCode: 2,
        sourceResourceId: "r2",
        conntrackId: 8,
      }),
    ],
    W_START,
    W_END,
  );
  assert.deepEqual(
    [out[0]!.flowId, out[0]!.icmpCode, out[0]!.sourceResourceId, out[0]!.conntrackId],
    ["f1", 1, "r1", 7],
  );
});

Deno.test("aggregate() takes the rule ID of a later record when the first has none (NetBird: empty RuleID takes the next non-empty one)", () => {
  // A kernel start (no rule ID) and an NFLOG drop of the same key: the window keeps the rule.
  const out = aggregate(
    [
      record({ eventId: "a", type: "start" }),
      record({ eventId: "b", type: "drop", ruleId: null, timestamp: at(500) }),
      record({ eventId: "c", type: "drop", ruleId: "", timestamp: at(700) }),
      record({ eventId: "d", type: "drop", ruleId: "deny-web", timestamp: at(1000) }),
      record({ eventId: "e", type: "drop", ruleId: "deny-other", timestamp: at(2000) }),
    ],
    W_START,
    W_END,
  );
  assert.equal(out.length, 1);
  assert.equal(out[0]!.ruleId, "deny-web");
  assert.deepEqual(
    [out[0]!.window!.numOfStarts, out[0]!.window!.numOfDrops],
    [1, 4],
  );
  assert.equal(JSON.parse(toJsonLine(out[0]!)).rule_id, "deny-web");
});

Deno.test("aggregate() keeps the first record's rule ID over later ones", () => {
  const out = aggregate(
    [
      record({ eventId: "a", type: "drop", ruleId: "first", timestamp: at(1000) }),
      record({ eventId: "b", type: "drop", ruleId: "second", timestamp: at(0) }),
    ],
    W_START,
    W_END,
  );
  assert.equal(out[0]!.ruleId, "first");
  assert.equal(out[0]!.eventId, "b", "the earliest record's ID still wins");
});

Deno.test("aggregate() leaves the rule ID null when no record of the key has one", () => {
  const out = aggregate(
    [record({ eventId: "a", ruleId: null }), record({ eventId: "b", type: "end" })],
    W_START,
    W_END,
  );
  assert.equal(out[0]!.ruleId ?? null, null);
  assert.equal(JSON.parse(toJsonLine(out[0]!)).rule_id, null);
});

Deno.test("aggregate() takes ID, timestamp and source port of the earliest record even when it arrives later", () => {
  const out = aggregate(
    [
      record({ eventId: "late", timestamp: at(2000), sourcePort: 1000 }),
      record({ eventId: "earliest", timestamp: at(0), sourcePort: 2000 }),
      record({ eventId: "middle", timestamp: at(1000), sourcePort: 3000 }),
    ],
    W_START,
    W_END,
  );
  assert.deepEqual(
    out.map((r) => [r.eventId, r.timestamp, r.sourcePort]),
    [["earliest", at(0), 2000]],
  );
});

Deno.test("aggregate() keeps the first record's ID when timestamps are equal", () => {
  const out = aggregate(
    [
      record({ eventId: "first", sourcePort: 1000 }),
      record({ eventId: "second", sourcePort: 2000 }),
    ],
    W_START,
    W_END,
  );
  assert.deepEqual([out[0]!.eventId, out[0]!.sourcePort], ["first", 1000]);
});

Deno.test("aggregate() keeps first-seen key order (netbird-ct: deterministic; NetBird: random map order)", () => {
  const b = { destPort: 2 };
  const a = { destPort: 1 };
  const c = { destPort: 3 };
  const records = [
    record({ eventId: "1", ...b }),
    record({ eventId: "2", ...a }),
    record({ eventId: "3", protocol: 47 }),
    record({ eventId: "4", ...b }),
    record({ eventId: "5", ...c }),
    record({ eventId: "6", ...a }),
    record({ eventId: "7", protocol: 47 }),
  ];
  const out = aggregate(records, W_START, W_END);
  assert.deepEqual(
    out.map((r) => [r.eventId, r.protocol, r.destPort]),
    [["1", 6, 2], ["2", 6, 1], ["3", 47, 443], ["5", 6, 3], ["7", 47, 443]],
  );
  assert.deepEqual(aggregate(records, W_START, W_END), out);
});

Deno.test("aggregate() leaves its input records unchanged", () => {
  const first = record({ eventId: "a", txBytes: 5n });
  const second = record({ eventId: "b", timestamp: at(-1000), txBytes: 7n, type: "end" });
  const before = structuredClone([first, second]);
  const out = aggregate([first, second], W_START, W_END);
  assert.equal(out[0]!.txBytes, 12n);
  assert.deepEqual([first, second], before);
});

Deno.test("aggregate() drops the reason of synthesized records (a window mixes kernel and synthesized records)", () => {
  const out = aggregate([record({ reason: "resync" })], W_START, W_END);
  assert.equal("reason" in out[0]!, false);
});

Deno.test("aggregate() returns nothing for an empty window", () => {
  assert.deepEqual(aggregate([], W_START, W_END), []);
});

Deno.test("aggregate() output serializes as a window record with its counts", () => {
  const out = aggregate(
    [
      record({ eventId: "a", type: "start", sourceResourceId: null, destResourceId: "web" }),
      record({ eventId: "b", type: "end", timestamp: at(1000), rxBytes: 900n, txBytes: 100n }),
    ],
    at(0),
    at(10_000),
  );
  const json = JSON.parse(toJsonLine(out[0]!));
  assert.deepEqual(
    [
      json.event_id,
      json.type,
      json.rx_bytes,
      json.tx_bytes,
      json.dest_resource_id,
      json.window_start,
      json.window_end,
      json.num_of_starts,
      json.num_of_ends,
      json.num_of_drops,
      json.num_of_updates,
    ],
    [
      "a",
      "window",
      900,
      100,
      "web",
      "2026-01-01T12:00:00.000Z",
      "2026-01-01T12:00:10.000Z",
      1,
      1,
      0,
      0,
    ],
  );
});

Deno.test("AggregatingStore.getEvents() returns the window's records in arrival order", () => {
  const store = new AggregatingStore();
  const records = ["c", "a", "b"].map((eventId) => record({ eventId }));
  for (const r of records) store.store(r);
  assert.deepEqual(store.getEvents().map((r) => r.eventId), ["c", "a", "b"]);
});

Deno.test("AggregatingStore.store() overwrites a record with the same event ID", () => {
  const store = new AggregatingStore();
  store.store(record({ eventId: "a", txBytes: 1n }));
  store.store(record({ eventId: "b" }));
  store.store(record({ eventId: "a", txBytes: 2n }));
  assert.deepEqual(store.getEvents().map((r) => [r.eventId, r.txBytes]), [["a", 2n], ["b", 0n]]);
  assert.equal(store.size, 2);
});

Deno.test("AggregatingStore.deleteEvents() removes the listed IDs and ignores unknown ones", () => {
  const store = new AggregatingStore();
  for (const eventId of ["a", "b", "c"]) store.store(record({ eventId }));
  store.deleteEvents(["b", "zz", "a"]);
  assert.deepEqual(store.getEvents().map((r) => r.eventId), ["c"]);
});

Deno.test("AggregatingStore.clear() empties the window but keeps its start (as NetBird's Close)", () => {
  const clock = new Clock();
  const store = new AggregatingStore({ now: clock.now });
  store.store(record());
  clock.ms = T0 + 3000;
  store.clear();
  assert.equal(store.size, 0);
  assert.deepEqual(store.windowStart, at(0));
});

Deno.test("AggregatingStore.store() returns false when full and keeps the stored records (netbird-ct: bounded; NetBird: unbounded)", () => {
  const store = new AggregatingStore({ maxEvents: 2 });
  assert.equal(store.store(record({ eventId: "a" })), true);
  assert.equal(store.isFull, false);
  assert.equal(store.store(record({ eventId: "b" })), true);
  assert.equal(store.isFull, true);
  assert.equal(store.store(record({ eventId: "c" })), false);
  assert.deepEqual(store.getEvents().map((r) => r.eventId), ["a", "b"]);
  assert.deepEqual(store.stats(), { stored: 2, earlyWindows: 0 });
});

Deno.test("AggregatingStore.store() still overwrites an existing event ID when full", () => {
  const store = new AggregatingStore({ maxEvents: 1 });
  store.store(record({ eventId: "a", txBytes: 1n }));
  assert.equal(store.store(record({ eventId: "a", txBytes: 2n })), true);
  assert.deepEqual(store.getEvents().map((r) => r.txBytes), [2n]);
});

Deno.test("AggregatingStore has a capacity of 100000 records by default", () => {
  assert.equal(new AggregatingStore().maxEvents, 100_000);
});

Deno.test("AggregatingStore.resetWindow(true) counts an early window", () => {
  const store = new AggregatingStore({ maxEvents: 1 });
  store.store(record());
  store.resetWindow(true);
  store.resetWindow();
  assert.equal(store.stats().earlyWindows, 1);
});

Deno.test("AggregatingStore.getAggregatedEvents() aggregates [windowStart, now) without closing the window", () => {
  const clock = new Clock();
  const store = new AggregatingStore({ now: clock.now });
  store.store(record({ eventId: "a", txBytes: 1n }));
  store.store(record({ eventId: "b", txBytes: 2n, type: "end" }));
  clock.ms = T0 + 4000;
  const out = store.getAggregatedEvents();
  assert.deepEqual(
    out.map((r) => [r.eventId, r.txBytes, r.window?.windowStart, r.window?.windowEnd]),
    [["a", 3n, at(0), at(4000)]],
  );
  assert.equal(store.size, 2);
  assert.deepEqual(store.windowStart, at(0));
});

Deno.test("AggregatingStore rejects a capacity below one record", () => {
  assert.throws(() => new AggregatingStore({ maxEvents: 0 }), RangeError);
  assert.throws(() => new AggregatingStore({ maxEvents: 1.5 }), RangeError);
});
