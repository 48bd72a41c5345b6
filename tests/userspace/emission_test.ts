import assert from "node:assert/strict";
import type { FlowRecord } from "../../lib/record.ts";
import { UserspaceTracker } from "../../lib/userspace/tracker.ts";
import {
  ACK,
  C,
  FIN,
  type Fixture,
  fixture,
  icmp,
  RST,
  S,
  SYN,
  tcp,
  udp,
  view,
  WALL,
} from "./_harness.ts";

const P = "100.64.0.9"; // a peer that opens connections to this host (C)
const C6 = "fd00::1";
const P6 = "fd00::9";

/** Records without event ID and timestamp, flow IDs renamed F1, F2, … by first appearance. */
function normalize(records: FlowRecord[]): Record<string, unknown>[] {
  const names = new Map<string, string>();
  return records.map((r) => {
    if (!names.has(r.flowId)) names.set(r.flowId, `F${names.size + 1}`);
    return { ...view(r), flowId: names.get(r.flowId) };
  });
}

const base = {
  conntrackId: 0,
  icmpType: 0,
  icmpCode: 0,
};
const tcpOut = { ...base, protocol: 6, sourceIp: C, destIp: S, sourcePort: 12345, destPort: 80 };
const tcpIn = { ...base, protocol: 6, sourceIp: P, destIp: C, sourcePort: 50000, destPort: 22 };
const counters = (tx: number, txBytes: number, rx: number, rxBytes: number) => ({
  txPackets: BigInt(tx),
  txBytes: BigInt(txBytes),
  rxPackets: BigInt(rx),
  rxBytes: BigInt(rxBytes),
});

interface EmissionCase {
  name: string;
  run: (tracker: UserspaceTracker, f: Fixture) => void;
  expected: Record<string, unknown>[];
}

const CASES: EmissionCase[] = [
  {
    name: "outbound TCP: start after the SYN, end at TIME-WAIT with totals, one flow ID, no rule",
    run: (tr) => {
      tr.trackOutbound(tcp(C, S, 12345, 80, SYN, 60));
      tr.inbound(tcp(S, C, 80, 12345, SYN | ACK, 60));
      tr.trackOutbound(tcp(C, S, 12345, 80, ACK, 52));
      tr.trackOutbound(tcp(C, S, 12345, 80, FIN | ACK, 52));
      tr.inbound(tcp(S, C, 80, 12345, ACK, 52));
      tr.inbound(tcp(S, C, 80, 12345, FIN | ACK, 52));
      tr.trackOutbound(tcp(C, S, 12345, 80, ACK, 52));
    },
    expected: [
      { ...tcpOut, flowId: "F1", type: "start", direction: "egress", ...counters(1, 60, 0, 0) },
      { ...tcpOut, flowId: "F1", type: "end", direction: "egress", ...counters(3, 164, 3, 164) },
    ],
  },
  {
    name: "inbound TCP: the start carries the allowing rule, the end (RST) does not",
    run: (tr) => {
      const rule = { ruleId: "policy-ssh" };
      assert.equal(tr.inbound(tcp(P, C, 50000, 22, SYN, 60), rule), "accepted");
      tr.trackOutbound(tcp(C, P, 22, 50000, SYN | ACK, 60));
      assert.equal(tr.inbound(tcp(P, C, 50000, 22, ACK, 52), rule), "accepted");
      tr.inbound(tcp(P, C, 50000, 22, RST, 40), rule);
    },
    expected: [
      {
        ...tcpIn,
        flowId: "F1",
        type: "start",
        direction: "ingress",
        ...counters(0, 0, 1, 60),
        ruleId: "policy-ssh",
      },
      { ...tcpIn, flowId: "F1", type: "end", direction: "ingress", ...counters(1, 60, 3, 152) },
    ],
  },
  {
    name: "UDP: inbound-opened flow with its rule, ended at timeout",
    run: (tr, f) => {
      tr.inbound(udp(P, C, 40000, 53, 70), { ruleId: "policy-dns" });
      tr.trackOutbound(udp(C, P, 53, 40000, 150));
      f.now += 30_001;
      tr.cleanup();
    },
    expected: [
      {
        ...base,
        protocol: 17,
        sourceIp: P,
        destIp: C,
        sourcePort: 40000,
        destPort: 53,
        flowId: "F1",
        type: "start",
        direction: "ingress",
        ...counters(0, 0, 1, 70),
        ruleId: "policy-dns",
      },
      {
        ...base,
        protocol: 17,
        sourceIp: P,
        destIp: C,
        sourcePort: 40000,
        destPort: 53,
        flowId: "F1",
        type: "end",
        direction: "ingress",
        ...counters(1, 150, 1, 70),
      },
    ],
  },
  {
    name: "ICMPv6 echo is reported as type 128 (netbird-ct; NetBird reports 8)",
    run: (tr, f) => {
      tr.trackOutbound(icmp(C6, P6, 128, 1, 104));
      assert.equal(tr.inbound(icmp(P6, C6, 129, 1, 104)), "established");
      f.now += 30_001;
      tr.tick();
    },
    expected: [
      {
        ...base,
        protocol: 58,
        sourceIp: C6,
        destIp: P6,
        sourcePort: 0,
        destPort: 0,
        icmpType: 128,
        flowId: "F1",
        type: "start",
        direction: "egress",
        ...counters(1, 104, 0, 0),
      },
      {
        ...base,
        protocol: 58,
        sourceIp: C6,
        destIp: P6,
        sourcePort: 0,
        destPort: 0,
        icmpType: 128,
        flowId: "F1",
        type: "end",
        direction: "egress",
        ...counters(1, 104, 1, 104),
      },
    ],
  },
  {
    name: "a denied TCP SYN: drop with a fresh flow ID, the rule, ports and one received packet",
    run: (tr) => {
      assert.equal(
        tr.inbound(tcp(P, C, 50000, 22, SYN, 60), { allowed: false, ruleId: "deny-ssh" }),
        "dropped",
      );
      tr.inbound(tcp(P, C, 50000, 22, SYN, 60), { allowed: false, ruleId: "deny-ssh" });
    },
    expected: [
      {
        ...tcpIn,
        flowId: "F1",
        type: "drop",
        direction: "ingress",
        ...counters(0, 0, 1, 60),
        ruleId: "deny-ssh",
      },
      {
        ...tcpIn,
        flowId: "F2",
        type: "drop",
        direction: "ingress",
        ...counters(0, 0, 1, 60),
        ruleId: "deny-ssh",
      },
    ],
  },
  {
    name: "a denied ICMP packet: drop with its type and code (netbird-ct; NetBird leaves them 0)",
    run: (tr) => {
      tr.drop(icmp(P, C, 3, 0, 56, 3), { ruleId: "deny-icmp" });
    },
    expected: [
      {
        ...base,
        protocol: 1,
        sourceIp: P,
        destIp: C,
        sourcePort: 0,
        destPort: 0,
        icmpType: 3,
        icmpCode: 3,
        flowId: "F1",
        type: "drop",
        direction: "ingress",
        ...counters(0, 0, 1, 56),
        ruleId: "deny-icmp",
      },
    ],
  },
  {
    name: "an outbound drop counts as sent (netbird-ct; NetBird never reports outbound drops)",
    run: (tr) => {
      tr.drop(udp(C, P, 5000, 6000, 99), { direction: "egress" });
    },
    expected: [
      {
        ...base,
        protocol: 17,
        sourceIp: C,
        destIp: P,
        sourcePort: 5000,
        destPort: 6000,
        flowId: "F1",
        type: "drop",
        direction: "egress",
        ...counters(1, 99, 0, 0),
      },
    ],
  },
  {
    name: "a drop of another protocol keeps its number (netbird-ct; NetBird reports 0)",
    run: (tr) => {
      tr.drop({ ...udp(P, C, 1, 2, 80), protocol: 47 });
    },
    expected: [
      {
        ...base,
        protocol: 47,
        sourceIp: P,
        destIp: C,
        sourcePort: 0,
        destPort: 0,
        flowId: "F1",
        type: "drop",
        direction: "ingress",
        ...counters(0, 0, 1, 80),
      },
    ],
  },
  {
    name: "close ends every live flow (netbird-ct; NetBird's Close reports nothing), once",
    run: (tr) => {
      // Live TCP, TCP already ended in TIME-WAIT, TCP closed by RST, live UDP, live ICMP echo.
      tr.trackOutbound(tcp(C, S, 1, 80, SYN, 60));
      tr.trackOutbound(tcp(C, S, 2, 80, SYN, 60));
      tr.inbound(tcp(S, C, 80, 2, SYN | ACK, 60));
      tr.trackOutbound(tcp(C, S, 2, 80, FIN | ACK, 60));
      tr.inbound(tcp(S, C, 80, 2, FIN | ACK, 60));
      tr.trackOutbound(tcp(C, S, 3, 80, SYN, 60));
      tr.inbound(tcp(S, C, 80, 3, RST | ACK, 40));
      tr.trackOutbound(udp(C, S, 4, 53, 70));
      tr.trackOutbound(icmp(C, S, 8, 5, 84));
      tr.close();
      tr.close();
      tr.trackOutbound(tcp(C, S, 6, 80, SYN, 60));
      tr.drop(udp(P, C, 7, 7, 50));
    },
    expected: [
      {
        ...tcpOut,
        sourcePort: 1,
        flowId: "F1",
        type: "start",
        direction: "egress",
        ...counters(1, 60, 0, 0),
      },
      {
        ...tcpOut,
        sourcePort: 2,
        flowId: "F2",
        type: "start",
        direction: "egress",
        ...counters(1, 60, 0, 0),
      },
      {
        ...tcpOut,
        sourcePort: 2,
        flowId: "F2",
        type: "end",
        direction: "egress",
        ...counters(2, 120, 2, 120),
      },
      {
        ...tcpOut,
        sourcePort: 3,
        flowId: "F3",
        type: "start",
        direction: "egress",
        ...counters(1, 60, 0, 0),
      },
      {
        ...tcpOut,
        sourcePort: 3,
        flowId: "F3",
        type: "end",
        direction: "egress",
        ...counters(1, 60, 1, 40),
      },
      {
        ...base,
        protocol: 17,
        sourceIp: C,
        destIp: S,
        sourcePort: 4,
        destPort: 53,
        flowId: "F4",
        type: "start",
        direction: "egress",
        ...counters(1, 70, 0, 0),
      },
      {
        ...base,
        protocol: 1,
        sourceIp: C,
        destIp: S,
        sourcePort: 0,
        destPort: 0,
        icmpType: 8,
        flowId: "F5",
        type: "start",
        direction: "egress",
        ...counters(1, 84, 0, 0),
      },
      {
        ...tcpOut,
        sourcePort: 1,
        flowId: "F1",
        type: "end",
        direction: "egress",
        ...counters(1, 60, 0, 0),
      },
      {
        ...base,
        protocol: 17,
        sourceIp: C,
        destIp: S,
        sourcePort: 4,
        destPort: 53,
        flowId: "F4",
        type: "end",
        direction: "egress",
        ...counters(1, 70, 0, 0),
      },
      {
        ...base,
        protocol: 1,
        sourceIp: C,
        destIp: S,
        sourcePort: 0,
        destPort: 0,
        icmpType: 8,
        flowId: "F5",
        type: "end",
        direction: "egress",
        ...counters(1, 84, 0, 0),
      },
    ],
  },
];

Deno.test("UserspaceTracker emits NetBird's start/end/drop records", async (t) => {
  for (const c of CASES) {
    await t.step(c.name, () => {
      const f = fixture();
      const tracker = new UserspaceTracker(f.options);
      c.run(tracker, f);
      assert.deepEqual(normalize(f.records), c.expected);
      tracker.close();
    });
  }
});

Deno.test("UserspaceTracker gives every record a fresh event ID and the wall-clock time", () => {
  const f = fixture();
  const tracker = new UserspaceTracker(f.options);
  tracker.trackOutbound(tcp(C, S, 1, 80, SYN));
  tracker.drop(icmp(P, C, 8, 1));
  tracker.close();
  assert.equal(f.records.length, 3);
  assert.equal(new Set(f.records.map((r) => r.eventId)).size, 3);
  assert.equal(
    new Set([...f.records.map((r) => r.eventId), ...f.records.map((r) => r.flowId)]).size,
    5,
  );
  for (const r of f.records) assert.equal(r.timestamp, WALL);
});

Deno.test("UserspaceTracker uses random UUIDv4 flow and event IDs by default", () => {
  const records: FlowRecord[] = [];
  const tracker = new UserspaceTracker({
    clock: () => 0,
    sink: { write: (b) => void records.push(...b) },
  });
  tracker.trackOutbound(udp(C, S, 1, 53));
  const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(records[0]!.flowId, v4);
  assert.match(records[0]!.eventId, v4);
  assert.notEqual(records[0]!.flowId, records[0]!.eventId);
  tracker.close();
});

Deno.test("UserspaceTracker.inbound() accepts replies to outbound flows without the ACL", async (t) => {
  const cases = [
    { name: "TCP", out: tcp(C, S, 1, 80, SYN), reply: tcp(S, C, 80, 1, SYN | ACK) },
    { name: "UDP", out: udp(C, S, 1, 53), reply: udp(S, C, 53, 1) },
    { name: "ICMP", out: icmp(C, S, 8, 1), reply: icmp(S, C, 0, 1) },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const f = fixture();
      const tracker = new UserspaceTracker(f.options);
      tracker.trackOutbound(c.out);
      assert.equal(tracker.inbound(c.reply, { allowed: false, ruleId: "deny-all" }), "established");
      assert.deepEqual(f.records.map((r) => r.type), ["start"]);
      tracker.close();
    });
  }
});

Deno.test("UserspaceTracker passes per-protocol options to its trackers", () => {
  const tracker = new UserspaceTracker({
    tcp: { timeoutMs: 100, maxEntries: 4 },
    udp: { timeoutMs: 1_000 },
    icmp: { maxEntries: 3 },
  });
  assert.deepEqual(
    [tracker.tcp.timeoutMs, tracker.tcp.maxEntries, tracker.udp.timeoutMs, tracker.icmp.maxEntries],
    [100, 4, 1_000, 3],
  );
});
