import assert from "node:assert/strict";
import type { FlowRecord } from "../../lib/record.ts";
import { icmpConnKeyString } from "../../lib/userspace/common.ts";
import { ICMP_DEFAULTS, IcmpTracker } from "../../lib/userspace/icmp.ts";
import type { TrackerPacket } from "../../lib/userspace/packet.ts";
import { fixture, icmp, udp } from "./_harness.ts";

Deno.test("icmpConnKeyString() formats keys as NetBird's ICMPConnKey.String()", async (t) => {
  const cases = [
    {
      name: "IPv4",
      key: { source: "192.168.1.1", destination: "10.0.0.1", id: 1234 },
      expected: "192.168.1.1 → 10.0.0.1 (id 1234)",
    },
    {
      name: "IPv6",
      key: { source: "2001:db8::1", destination: "2001:db8::2", id: 5678 },
      expected: "2001:db8::1 → 2001:db8::2 (id 5678)",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => assert.equal(icmpConnKeyString(c.key), c.expected));
  }
});

const A = "100.64.0.1"; // this host
const B = "100.64.0.2";
const A6 = "fd00::1";
const B6 = "fd00::2";

interface IcmpStep {
  /** `out` trackOutbound, `in` trackInbound, `valid` isValidInbound. */
  op: "out" | "in" | "valid" | "advance" | "cleanup";
  packet?: TrackerPacket;
  ruleId?: string;
  ok?: boolean;
  ms?: number;
}

interface IcmpCase {
  name: string;
  steps: IcmpStep[];
  /** Table size at the end. */
  entries: number;
  /** Records, summarized by {@linkcode summary}. */
  records: string[];
}

function summary(r: FlowRecord): string {
  return `${r.type} ${r.direction} proto ${r.protocol} type ${r.icmpType}/${r.icmpCode} ` +
    `tx ${r.txPackets}/${r.txBytes} rx ${r.rxPackets}/${r.rxBytes} rule ${r.ruleId ?? "-"}`;
}

const CASES: IcmpCase[] = [
  {
    name: "IPv4 echo: request out, reply in, end at timeout with both directions counted",
    steps: [
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "valid", packet: icmp(B, A, 0, 7, 84), ok: true },
      { op: "advance", ms: 30_001 },
      { op: "cleanup" },
    ],
    entries: 0,
    records: [
      "start egress proto 1 type 8/0 tx 1/84 rx 0/0 rule -",
      "end egress proto 1 type 8/0 tx 1/84 rx 1/84 rule -",
    ],
  },
  {
    name: "ICMPv6 echo keeps its real type 128 (netbird-ct; NetBird reports the mapped 8)",
    steps: [
      { op: "out", packet: icmp(A6, B6, 128, 9, 104) },
      { op: "valid", packet: icmp(B6, A6, 129, 9, 104), ok: true },
      { op: "advance", ms: 30_001 },
      { op: "cleanup" },
    ],
    entries: 0,
    records: [
      "start egress proto 58 type 128/0 tx 1/104 rx 0/0 rule -",
      "end egress proto 58 type 128/0 tx 1/104 rx 1/104 rule -",
    ],
  },
  {
    name: "a reply with another identifier is not valid",
    steps: [
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "valid", packet: icmp(B, A, 0, 8, 84), ok: false },
    ],
    entries: 1,
    records: ["start egress proto 1 type 8/0 tx 1/84 rx 0/0 rule -"],
  },
  {
    name: "a reply from another address is not valid",
    steps: [
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "valid", packet: icmp("100.64.0.3", A, 0, 7, 84), ok: false },
    ],
    entries: 1,
    records: ["start egress proto 1 type 8/0 tx 1/84 rx 0/0 rule -"],
  },
  {
    name: "only echo replies are valid inbound (an echo request is not)",
    steps: [
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "valid", packet: icmp(B, A, 8, 7, 84), ok: false },
      { op: "valid", packet: icmp(B, A, 3, 7, 84), ok: false },
    ],
    entries: 1,
    records: ["start egress proto 1 type 8/0 tx 1/84 rx 0/0 rule -"],
  },
  {
    name:
      "ICMPv4 type 129 is no echo reply (netbird-ct checks per protocol; NetBird takes 0 or 129 for both)",
    steps: [
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "valid", packet: icmp(B, A, 129, 7, 84), ok: false },
    ],
    entries: 1,
    records: ["start egress proto 1 type 8/0 tx 1/84 rx 0/0 rule -"],
  },
  {
    name: "derived: a reply at exactly the timeout is valid, 1 ms later it is not",
    steps: [
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "advance", ms: 30_000 },
      { op: "valid", packet: icmp(B, A, 0, 7, 84), ok: true },
      { op: "advance", ms: 30_001 },
      { op: "valid", packet: icmp(B, A, 0, 7, 84), ok: false },
    ],
    entries: 1,
    records: ["start egress proto 1 type 8/0 tx 1/84 rx 0/0 rule -"],
  },
  {
    name: "a non-echo message gets a one-off start, no entry and never an end",
    steps: [
      { op: "in", packet: icmp(B, A, 3, 0, 56, 1), ruleId: "r-icmp" },
      { op: "advance", ms: 60_000 },
      { op: "cleanup" },
    ],
    entries: 0,
    records: ["start ingress proto 1 type 3/1 tx 0/0 rx 1/56 rule r-icmp"],
  },
  {
    name: "an ICMPv6 non-echo message keeps its raw type (packet too big)",
    steps: [{ op: "out", packet: icmp(A6, B6, 2, 0, 1280) }],
    entries: 0,
    records: ["start egress proto 58 type 2/0 tx 1/1280 rx 0/0 rule -"],
  },
  {
    name: "an outbound echo reply without entry is a one-off start",
    steps: [{ op: "out", packet: icmp(A, B, 0, 7, 84) }],
    entries: 0,
    records: ["start egress proto 1 type 0/0 tx 1/84 rx 0/0 rule -"],
  },
  {
    name: "an inbound echo request carries its rule; this host's reply refreshes the entry",
    steps: [
      { op: "in", packet: icmp(B, A, 8, 7, 84), ruleId: "r-ping" },
      { op: "out", packet: icmp(A, B, 0, 7, 84) },
      { op: "advance", ms: 30_001 },
      { op: "cleanup" },
    ],
    entries: 0,
    records: [
      "start ingress proto 1 type 8/0 tx 0/0 rx 1/84 rule r-ping",
      "end ingress proto 1 type 8/0 tx 1/84 rx 1/84 rule -",
    ],
  },
  {
    name: "repeated echo requests with one identifier share one entry",
    steps: [
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
      { op: "out", packet: icmp(A, B, 8, 7, 84) },
    ],
    entries: 1,
    records: ["start egress proto 1 type 8/0 tx 1/84 rx 0/0 rule -"],
  },
  {
    name: "packets of other protocols are ignored",
    steps: [
      { op: "out", packet: udp(A, B, 1, 2) },
      { op: "in", packet: udp(B, A, 2, 1) },
      { op: "valid", packet: udp(B, A, 2, 1), ok: false },
    ],
    entries: 0,
    records: [],
  },
];

Deno.test("IcmpTracker tracks echo flows and reports other messages once", async (t) => {
  for (const c of CASES) {
    await t.step(c.name, () => {
      const f = fixture();
      const tracker = new IcmpTracker(f.options);
      c.steps.forEach((s, i) => {
        const p = s.packet!;
        switch (s.op) {
          case "out":
            tracker.trackOutbound(p);
            break;
          case "in":
            tracker.trackInbound(p, s.ruleId === undefined ? {} : { ruleId: s.ruleId });
            break;
          case "valid":
            assert.equal(tracker.isValidInbound(p), s.ok, `step ${i + 1}: isValidInbound`);
            break;
          case "advance":
            f.now += s.ms!;
            break;
          case "cleanup":
            tracker.cleanup();
            break;
        }
      });
      assert.equal(tracker.size, c.entries, "entries");
      assert.deepEqual(f.records.map(summary), c.records);
    });
  }
});

Deno.test("IcmpTracker uses NetBird's defaults", () => {
  const tracker = new IcmpTracker({ timeoutMs: 0 });
  assert.deepEqual(
    [tracker.timeoutMs, tracker.cleanupIntervalMs, tracker.maxEntries],
    [30_000, 15_000, 2_048],
  );
  assert.deepEqual(ICMP_DEFAULTS, {
    timeoutMs: 30_000,
    cleanupIntervalMs: 15_000,
    maxEntries: 2_048,
  });
});

Deno.test("IcmpTracker.getConnection() shows the request that created the entry", () => {
  const f = fixture();
  const tracker = new IcmpTracker(f.options);
  tracker.trackOutbound(icmp(A6, B6, 128, 42, 104));
  const conn = tracker.getConnection({ source: A6, destination: B6, id: 42 });
  assert.deepEqual(
    [conn?.protocol, conn?.icmpType, conn?.icmpCode, conn?.id, conn?.direction, conn?.lastSeen],
    [58, 128, 0, 42, "egress", 1_000],
  );
  assert.equal(tracker.getConnection({ source: B6, destination: A6, id: 42 }), undefined);
});
