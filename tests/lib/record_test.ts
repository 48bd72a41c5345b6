import assert from "node:assert/strict";
import { buildRecord, type FlowRecord, type RecordContext, toJsonLine } from "../../lib/record.ts";
import { flow } from "../_fakes/flows.ts";

const CONTEXT: RecordContext = {
  eventId: "0b6c2a3e-8f4e-4d4b-9a51-2f1d7c0e9a11",
  flowId: "3bd1bd56-e54d-5779-95ba-5ded2bfbf188",
  timestamp: new Date(Date.UTC(2025, 6, 21, 14, 28, 16, 123)),
};

Deno.test("buildRecord() takes ports, not ICMP fields, for TCP, UDP and SCTP", async (t) => {
  for (const protocol of [6, 17, 132]) {
    await t.step(`protocol ${protocol}`, () => {
      const f = flow({
        src: "100.64.0.5",
        dst: "100.64.0.9",
        proto: protocol,
        sport: 40000,
        dport: 22,
        icmpType: 8,
        icmpCode: 1,
      });
      const r = buildRecord("start", f, "egress", CONTEXT);
      assert.deepEqual(
        [r.protocol, r.sourcePort, r.destPort, r.icmpType, r.icmpCode],
        [protocol, 40000, 22, 0, 0],
      );
    });
  }
});

Deno.test("buildRecord() takes ICMP type and code, not ports, for ICMP and ICMPv6", async (t) => {
  const cases: [protocol: number, src: string, dst: string][] = [
    [1, "100.64.0.5", "100.64.0.9"],
    [58, "fd00::5", "fd00::9"],
  ];
  for (const [protocol, src, dst] of cases) {
    await t.step(`protocol ${protocol}`, () => {
      const f = flow({
        src,
        dst,
        proto: protocol,
        sport: 1234,
        dport: 80,
        icmpType: 3,
        icmpCode: 13,
      });
      const r = buildRecord("start", f, "egress", CONTEXT);
      assert.deepEqual(
        [r.protocol, r.sourcePort, r.destPort, r.icmpType, r.icmpCode],
        [protocol, 0, 0, 3, 13],
      );
    });
  }
});

Deno.test("buildRecord() zeroes ports and ICMP fields for other protocols such as GRE", () => {
  const f = flow({
    src: "100.64.0.5",
    dst: "100.64.0.9",
    proto: 47,
    sport: 1234,
    dport: 80,
    icmpType: 8,
    icmpCode: 1,
  });
  const r = buildRecord("start", f, "egress", CONTEXT);
  assert.deepEqual(
    [r.protocol, r.sourcePort, r.destPort, r.icmpType, r.icmpCode],
    [47, 0, 0, 0, 0],
  );
});

Deno.test("buildRecord() fills every field from the flow, direction and context", () => {
  const f = flow({
    id: 305419896,
    src: "100.64.0.9",
    dst: "100.64.0.5",
    proto: 6,
    sport: 50000,
    dport: 22,
    orig: [3n, 180n],
    reply: [2n, 120n],
  });
  assert.deepEqual(buildRecord("end", f, "ingress", CONTEXT), {
    eventId: CONTEXT.eventId,
    timestamp: CONTEXT.timestamp,
    flowId: CONTEXT.flowId,
    type: "end",
    direction: "ingress",
    protocol: 6,
    sourceIp: "100.64.0.9",
    destIp: "100.64.0.5",
    sourcePort: 50000,
    destPort: 22,
    icmpType: 0,
    icmpCode: 0,
    rxPackets: 3n,
    txPackets: 2n,
    rxBytes: 180n,
    txBytes: 120n,
    conntrackId: 305419896,
  });
});

Deno.test("buildRecord() maps counters by direction: egress tx is the original direction", () => {
  const f = flow({ src: "100.64.0.5", dst: "100.64.0.9", orig: [3n, 180n], reply: [2n, 120n] });
  const r = buildRecord("end", f, "egress", CONTEXT);
  assert.deepEqual(
    [r.rxPackets, r.txPackets, r.rxBytes, r.txBytes],
    [2n, 3n, 120n, 180n],
  );
});

Deno.test("buildRecord() takes addresses from the original tuple, not the reply", () => {
  const base = flow({ src: "100.64.0.9", dst: "192.0.2.10", proto: 6, sport: 1, dport: 2 });
  const natted = {
    ...base,
    reply: { ...base.reply, source: "10.0.0.3", destination: "192.0.2.1" },
  };
  const r = buildRecord("start", natted, "ingress", CONTEXT);
  assert.deepEqual([r.sourceIp, r.destIp], ["100.64.0.9", "192.0.2.10"]);
});

const RECORD: FlowRecord = {
  eventId: CONTEXT.eventId,
  timestamp: CONTEXT.timestamp,
  flowId: CONTEXT.flowId,
  type: "end",
  direction: "egress",
  protocol: 6,
  sourceIp: "100.64.0.5",
  destIp: "100.64.0.9",
  sourcePort: 40000,
  destPort: 22,
  icmpType: 0,
  icmpCode: 0,
  rxPackets: 2n,
  txPackets: 3n,
  rxBytes: 120n,
  txBytes: 5_000_000_000n,
  conntrackId: 7,
};

Deno.test("toJsonLine() writes the exact line of a record", () => {
  assert.equal(
    toJsonLine(RECORD),
    '{"event_id":"0b6c2a3e-8f4e-4d4b-9a51-2f1d7c0e9a11","timestamp":"2025-07-21T14:28:16.123Z",' +
      '"flow_id":"3bd1bd56-e54d-5779-95ba-5ded2bfbf188","type":"end","direction":"egress",' +
      '"protocol":6,"source_ip":"100.64.0.5","dest_ip":"100.64.0.9","source_port":40000,' +
      '"dest_port":22,"icmp_type":0,"icmp_code":0,"rx_packets":2,"tx_packets":3,"rx_bytes":120,' +
      '"tx_bytes":5000000000,"conntrack_id":7,"source_resource_id":null,"dest_resource_id":null,' +
      '"rule_id":null}\n',
  );
});

Deno.test("toJsonLine() writes the keys in the documented order", () => {
  assert.deepEqual(Object.keys(JSON.parse(toJsonLine(RECORD))), [
    "event_id",
    "timestamp",
    "flow_id",
    "type",
    "direction",
    "protocol",
    "source_ip",
    "dest_ip",
    "source_port",
    "dest_port",
    "icmp_type",
    "icmp_code",
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "conntrack_id",
    "source_resource_id",
    "dest_resource_id",
    "rule_id",
  ]);
});

Deno.test("toJsonLine() writes counters as JSON numbers", () => {
  const parsed = JSON.parse(toJsonLine(RECORD));
  assert.deepEqual(
    [parsed.rx_packets, parsed.tx_packets, parsed.rx_bytes, parsed.tx_bytes],
    [2, 3, 120, 5_000_000_000],
  );
});

Deno.test("toJsonLine() writes the timestamp as UTC ISO 8601 ending in Z", () => {
  const line = toJsonLine({ ...RECORD, timestamp: new Date("2025-07-21T16:28:16.5+02:00") });
  assert.equal(JSON.parse(line).timestamp, "2025-07-21T14:28:16.500Z");
});

Deno.test("toJsonLine() adds the reason key last on synthesized records only", () => {
  const keys = Object.keys(JSON.parse(toJsonLine({ ...RECORD, reason: "resync" })));
  assert.deepEqual(keys.slice(-2), ["rule_id", "reason"]);
  assert.equal(keys.length, 21);
  assert.equal(JSON.parse(toJsonLine({ ...RECORD, reason: "startup" })).reason, "startup");
});

Deno.test("buildRecord() copies a reason from the context and omits it otherwise", () => {
  const f = flow({ src: "100.64.0.5", dst: "100.64.0.9" });
  assert.equal(buildRecord("end", f, "egress", { ...CONTEXT, reason: "resync" }).reason, "resync");
  assert.equal("reason" in buildRecord("end", f, "egress", CONTEXT), false);
});

Deno.test("toJsonLine() writes the current time of a Date changed in place", () => {
  const timestamp = new Date(Date.UTC(2025, 6, 21, 14, 28, 16, 123));
  const first = JSON.parse(toJsonLine({ ...RECORD, timestamp })).timestamp;
  timestamp.setTime(Date.UTC(2025, 6, 21, 14, 28, 17, 0));
  const second = JSON.parse(toJsonLine({ ...RECORD, timestamp })).timestamp;
  assert.deepEqual([first, second], ["2025-07-21T14:28:16.123Z", "2025-07-21T14:28:17.000Z"]);
});

Deno.test("toJsonLine() writes the timestamps of consecutive records", () => {
  const times = [0, 1, 0].map((ms) =>
    JSON.parse(toJsonLine({ ...RECORD, timestamp: new Date(ms) })).timestamp
  );
  assert.deepEqual(times, [
    "1970-01-01T00:00:00.000Z",
    "1970-01-01T00:00:00.001Z",
    "1970-01-01T00:00:00.000Z",
  ]);
});

Deno.test("toJsonLine() writes IPv6 addresses and every direction as valid JSON", async (t) => {
  for (const direction of ["ingress", "egress", "unknown"] as const) {
    await t.step(direction, () => {
      const r = { ...RECORD, direction, sourceIp: "fd00::5", destIp: "::ffff:1.2.3.4" };
      const parsed = JSON.parse(toJsonLine(r));
      assert.deepEqual(
        [parsed.direction, parsed.source_ip, parsed.dest_ip],
        [direction, "fd00::5", "::ffff:1.2.3.4"],
      );
    });
  }
});

Deno.test("toJsonLine() ends with exactly one newline", () => {
  const line = toJsonLine(RECORD);
  assert.equal(line.indexOf("\n"), line.length - 1);
});

Deno.test("toJsonLine() writes resource IDs as JSON strings, escaped, or null", () => {
  const parsed = JSON.parse(
    toJsonLine({ ...RECORD, sourceResourceId: null, destResourceId: 'web "prod"\\x' }),
  );
  assert.equal(parsed.source_resource_id, null);
  assert.equal(parsed.dest_resource_id, 'web "prod"\\x');
});

Deno.test("toJsonLine() writes the window keys of an aggregated record after the resource IDs", () => {
  const line = toJsonLine({
    ...RECORD,
    type: "window",
    window: {
      windowStart: new Date(Date.UTC(2026, 0, 1, 0, 0, 0)),
      windowEnd: new Date(Date.UTC(2026, 0, 1, 0, 0, 10)),
      numOfStarts: 2,
      numOfEnds: 1,
      numOfDrops: 0,
      numOfUpdates: 3,
    },
  });
  const parsed = JSON.parse(line);
  assert.deepEqual(Object.keys(parsed).slice(-9), [
    "source_resource_id",
    "dest_resource_id",
    "rule_id",
    "window_start",
    "window_end",
    "num_of_starts",
    "num_of_ends",
    "num_of_drops",
    "num_of_updates",
  ]);
  assert.deepEqual(
    [
      parsed.type,
      parsed.window_start,
      parsed.window_end,
      parsed.num_of_starts,
      parsed.num_of_updates,
    ],
    ["window", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z", 2, 3],
  );
});

Deno.test("buildRecord() notes post-NAT addresses and ports only when the reply tuple shows NAT", () => {
  const plain = flow({ src: "100.64.0.5", dst: "100.64.0.9", sport: 40000, dport: 80 });
  assert.equal(buildRecord("end", plain, "egress", CONTEXT).postNat, undefined);
  const natted = {
    ...plain,
    reply: {
      source: "10.1.0.5",
      destination: "203.0.113.7",
      proto: { ...plain.reply.proto, sourcePort: 8080, destinationPort: 61000 },
    },
  };
  assert.deepEqual(buildRecord("end", natted, "egress", CONTEXT).postNat, {
    source: "203.0.113.7",
    destination: "10.1.0.5",
    sourcePort: 61000,
    destinationPort: 8080,
  });
});

Deno.test("buildRecord() takes flow start and end times from kernel timestamps", () => {
  const f = {
    ...flow({ src: "100.64.0.5", dst: "100.64.0.9" }),
    timestamps: { start: 1_700_000_000_123_456_789n, stop: 1_700_000_005_000_000_000n },
  };
  const r = buildRecord("end", f, "egress", CONTEXT);
  assert.equal(r.flowStart?.toISOString(), "2023-11-14T22:13:20.123Z");
  assert.equal(r.flowEnd?.toISOString(), "2023-11-14T22:13:25.000Z");
  assert.equal(
    buildRecord("end", flow({ src: "100.64.0.5", dst: "100.64.0.9" }), "egress", CONTEXT).flowStart,
    undefined,
  );
});
