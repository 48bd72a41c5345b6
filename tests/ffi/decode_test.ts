import assert from "node:assert/strict";
import { ATTR, type Attr } from "../../ffi/constants.ts";
import {
  decodeEvent,
  decodeFlow,
  eventType,
  HOST_IS_LITTLE_ENDIAN,
  ipv4FromRaw,
  ntohs,
} from "../../ffi/decode.ts";
import type { Flow, ProtoTuple } from "../../lib/flow.ts";
import { parseIp } from "../../lib/net.ts";
import {
  type AttrValue,
  FakeAttrReader,
  ipv4Attrs,
  rawIpv4,
  rawPort,
} from "../_fakes/fake_attr_reader.ts";

const ZERO = { packets: 0n, bytes: 0n };

function l4(protocol: number, fields: Partial<Omit<ProtoTuple, "protocol">> = {}): ProtoTuple {
  return {
    protocol,
    sourcePort: 0,
    destinationPort: 0,
    icmpType: 0,
    icmpCode: 0,
    icmpId: 0,
    ...fields,
  };
}

function v6(text: string): Uint8Array {
  const bytes = parseIp(text);
  assert.ok(bytes?.length === 16, `bad IPv6 test address ${text}`);
  return bytes;
}

interface CorpusEntry {
  name: string;
  attrs: Map<Attr, AttrValue> | [Attr, AttrValue][];
  expected: Flow;
}

const CORPUS: CorpusEntry[] = [
  {
    name: "IPv4 TCP with ports in network order",
    attrs: ipv4Attrs({
      src: "100.64.0.5",
      dst: "100.64.0.9",
      proto: 6,
      sport: 40000,
      dport: 22,
      id: 42,
    }),
    expected: {
      id: 42,
      family: 4,
      original: {
        source: "100.64.0.5",
        destination: "100.64.0.9",
        proto: l4(6, { sourcePort: 40000, destinationPort: 22 }),
      },
      reply: {
        source: "100.64.0.9",
        destination: "100.64.0.5",
        proto: l4(6, { sourcePort: 22, destinationPort: 40000 }),
      },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "IPv4 UDP with DNAT: the reply tuple keeps its own addresses and ports",
    attrs: [
      [ATTR.ORIG_L3PROTO, 2],
      [ATTR.ORIG_L4PROTO, 17],
      [ATTR.ORIG_IPV4_SRC, rawIpv4("100.64.0.9")],
      [ATTR.ORIG_IPV4_DST, rawIpv4("192.0.2.10")],
      [ATTR.REPL_IPV4_SRC, rawIpv4("10.0.0.3")],
      [ATTR.REPL_IPV4_DST, rawIpv4("100.64.0.9")],
      [ATTR.ORIG_PORT_SRC, rawPort(5353)],
      [ATTR.ORIG_PORT_DST, rawPort(8080)],
      [ATTR.REPL_PORT_SRC, rawPort(80)],
      [ATTR.REPL_PORT_DST, rawPort(5353)],
      [ATTR.ID, 7],
    ],
    expected: {
      id: 7,
      family: 4,
      original: {
        source: "100.64.0.9",
        destination: "192.0.2.10",
        proto: l4(17, { sourcePort: 5353, destinationPort: 8080 }),
      },
      reply: {
        source: "10.0.0.3",
        destination: "100.64.0.9",
        proto: l4(17, { sourcePort: 80, destinationPort: 5353 }),
      },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "IPv6 UDP with addresses from the 16-byte attributes",
    attrs: [
      [ATTR.ORIG_L3PROTO, 10],
      [ATTR.ORIG_L4PROTO, 17],
      [ATTR.ORIG_IPV6_SRC, v6("fd00:4e42::5")],
      [ATTR.ORIG_IPV6_DST, v6("2001:db8:0:0:1:0:0:1")],
      [ATTR.REPL_IPV6_SRC, v6("2001:db8::1:0:0:1")],
      [ATTR.REPL_IPV6_DST, v6("fd00:4e42::5")],
      [ATTR.ORIG_PORT_SRC, rawPort(51820)],
      [ATTR.ORIG_PORT_DST, rawPort(443)],
      [ATTR.REPL_PORT_SRC, rawPort(443)],
      [ATTR.REPL_PORT_DST, rawPort(51820)],
      [ATTR.ID, 9],
    ],
    expected: {
      id: 9,
      family: 6,
      original: {
        source: "fd00:4e42::5",
        destination: "2001:db8::1:0:0:1",
        proto: l4(17, { sourcePort: 51820, destinationPort: 443 }),
      },
      reply: {
        source: "2001:db8::1:0:0:1",
        destination: "fd00:4e42::5",
        proto: l4(17, { sourcePort: 443, destinationPort: 51820 }),
      },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "ICMP echo with type, code and id; the reply keeps the id only",
    attrs: [
      ...ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 1, id: 11 }),
      [ATTR.ICMP_TYPE, 8],
      [ATTR.ICMP_CODE, 0],
      [ATTR.ICMP_ID, rawPort(0x1234)],
    ],
    expected: {
      id: 11,
      family: 4,
      original: {
        source: "100.64.0.5",
        destination: "100.64.0.9",
        proto: l4(1, { icmpType: 8, icmpCode: 0, icmpId: 0x1234 }),
      },
      reply: {
        source: "100.64.0.9",
        destination: "100.64.0.5",
        proto: l4(1, { icmpId: 0x1234 }),
      },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "ICMP destination unreachable with a non-zero code",
    attrs: [
      ...ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 1, id: 12 }),
      [ATTR.ICMP_TYPE, 3],
      [ATTR.ICMP_CODE, 13],
    ],
    expected: {
      id: 12,
      family: 4,
      original: {
        source: "100.64.0.5",
        destination: "100.64.0.9",
        proto: l4(1, { icmpType: 3, icmpCode: 13 }),
      },
      reply: { source: "100.64.0.9", destination: "100.64.0.5", proto: l4(1) },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "ICMPv6 (protocol 58) echo request",
    attrs: [
      [ATTR.ORIG_L3PROTO, 10],
      [ATTR.ORIG_L4PROTO, 58],
      [ATTR.ORIG_IPV6_SRC, v6("fd00::5")],
      [ATTR.ORIG_IPV6_DST, v6("fd00::9")],
      [ATTR.REPL_IPV6_SRC, v6("fd00::9")],
      [ATTR.REPL_IPV6_DST, v6("fd00::5")],
      [ATTR.ICMP_TYPE, 128],
      [ATTR.ICMP_CODE, 0],
      [ATTR.ICMP_ID, rawPort(0xbeef)],
      [ATTR.ID, 13],
    ],
    expected: {
      id: 13,
      family: 6,
      original: {
        source: "fd00::5",
        destination: "fd00::9",
        proto: l4(58, { icmpType: 128, icmpId: 0xbeef }),
      },
      reply: { source: "fd00::9", destination: "fd00::5", proto: l4(58, { icmpId: 0xbeef }) },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "counters as bigint, including a byte count above 2^32",
    attrs: ipv4Attrs({
      src: "100.64.0.9",
      dst: "100.64.0.5",
      proto: 6,
      sport: 50000,
      dport: 22,
      id: 14,
      counters: { op: 3_000_000n, ob: 5_000_000_000n, rp: 2n, rb: 2n ** 63n + 5n },
    }),
    expected: {
      id: 14,
      family: 4,
      original: {
        source: "100.64.0.9",
        destination: "100.64.0.5",
        proto: l4(6, { sourcePort: 50000, destinationPort: 22 }),
      },
      reply: {
        source: "100.64.0.5",
        destination: "100.64.0.9",
        proto: l4(6, { sourcePort: 22, destinationPort: 50000 }),
      },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: { packets: 3_000_000n, bytes: 5_000_000_000n },
      countersReply: { packets: 2n, bytes: 2n ** 63n + 5n },
      hasCounters: true,
    },
  },
  {
    name: "counters of one direction only: the other direction is zero",
    attrs: [
      ...ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 47, id: 15 }),
      [ATTR.ORIG_COUNTER_PACKETS, 4n],
      [ATTR.ORIG_COUNTER_BYTES, 400n],
    ],
    expected: {
      id: 15,
      family: 4,
      original: { source: "100.64.0.5", destination: "100.64.0.9", proto: l4(47) },
      reply: { source: "100.64.0.9", destination: "100.64.0.5", proto: l4(47) },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: { packets: 4n, bytes: 400n },
      countersReply: ZERO,
      hasCounters: true,
    },
  },
  {
    name: "mark, zone, status and id in host order",
    attrs: [
      ...ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 6, id: 0xdeadbeef }),
      [ATTR.MARK, 0x1bd10],
      [ATTR.ZONE, 0x0102],
      [ATTR.STATUS, 0x18e],
    ],
    expected: {
      id: 0xdeadbeef,
      family: 4,
      original: { source: "100.64.0.5", destination: "100.64.0.9", proto: l4(6) },
      reply: { source: "100.64.0.9", destination: "100.64.0.5", proto: l4(6) },
      mark: 0x1bd10,
      zone: 0x0102,
      status: 0x18e,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "timestamps: start and stop in nanoseconds",
    attrs: [
      ...ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 6, id: 16 }),
      [ATTR.TIMESTAMP_START, 1_753_108_096_123_456_789n],
      [ATTR.TIMESTAMP_STOP, 1_753_108_100_000_000_001n],
    ],
    expected: {
      id: 16,
      family: 4,
      original: { source: "100.64.0.5", destination: "100.64.0.9", proto: l4(6) },
      reply: { source: "100.64.0.9", destination: "100.64.0.5", proto: l4(6) },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
      timestamps: { start: 1_753_108_096_123_456_789n, stop: 1_753_108_100_000_000_001n },
    },
  },
  {
    name: "timestamps: start only while the entry lives",
    attrs: [
      ...ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 6, id: 17 }),
      [ATTR.TIMESTAMP_START, 1_753_108_096_123_456_789n],
    ],
    expected: {
      id: 17,
      family: 4,
      original: { source: "100.64.0.5", destination: "100.64.0.9", proto: l4(6) },
      reply: { source: "100.64.0.9", destination: "100.64.0.5", proto: l4(6) },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
      timestamps: { start: 1_753_108_096_123_456_789n },
    },
  },
  {
    name: "unknown protocol (GRE, 47) has zero ports even when port attributes are set",
    attrs: ipv4Attrs({
      src: "100.64.0.5",
      dst: "100.64.0.9",
      proto: 47,
      sport: 1234,
      dport: 80,
      id: 18,
    }),
    expected: {
      id: 18,
      family: 4,
      original: { source: "100.64.0.5", destination: "100.64.0.9", proto: l4(47) },
      reply: { source: "100.64.0.9", destination: "100.64.0.5", proto: l4(47) },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "SCTP (132) has ports",
    attrs: ipv4Attrs({
      src: "100.64.0.5",
      dst: "100.64.0.9",
      proto: 132,
      sport: 36412,
      dport: 38412,
      id: 19,
    }),
    expected: {
      id: 19,
      family: 4,
      original: {
        source: "100.64.0.5",
        destination: "100.64.0.9",
        proto: l4(132, { sourcePort: 36412, destinationPort: 38412 }),
      },
      reply: {
        source: "100.64.0.9",
        destination: "100.64.0.5",
        proto: l4(132, { sourcePort: 38412, destinationPort: 36412 }),
      },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
  {
    name: "no attributes at all: IPv4 zero addresses, protocol 0, id 0",
    attrs: [],
    expected: {
      id: 0,
      family: 4,
      original: { source: "0.0.0.0", destination: "0.0.0.0", proto: l4(0) },
      reply: { source: "0.0.0.0", destination: "0.0.0.0", proto: l4(0) },
      mark: 0,
      zone: 0,
      status: 0,
      countersOriginal: ZERO,
      countersReply: ZERO,
      hasCounters: false,
    },
  },
];

Deno.test("decodeFlow() decodes the attribute corpus", async (t) => {
  for (const entry of CORPUS) {
    await t.step(entry.name, () => {
      assert.deepEqual(decodeFlow(new FakeAttrReader(entry.attrs)), entry.expected);
    });
  }
});

Deno.test("decodeFlow() converts ports from network byte order", () => {
  // Port 80 is 0x0050; in network order the bytes are 00 50, read as a host u16.
  const raw80 = HOST_IS_LITTLE_ENDIAN ? 0x5000 : 0x0050;
  const reader = new FakeAttrReader([
    [ATTR.ORIG_L4PROTO, 6],
    [ATTR.ORIG_PORT_SRC, raw80],
  ]);
  assert.equal(decodeFlow(reader).original.proto.sourcePort, 80);
});

Deno.test("decodeFlow() converts IPv4 addresses from network byte order", () => {
  // 192.168.1.100 is c0 a8 01 64 in memory, read as a host u32.
  const raw = HOST_IS_LITTLE_ENDIAN ? 0x6401a8c0 : 0xc0a80164;
  const reader = new FakeAttrReader([[ATTR.ORIG_IPV4_SRC, raw]]);
  assert.equal(decodeFlow(reader).original.source, "192.168.1.100");
});

Deno.test("decodeFlow() does not read the counters when the kernel sent none", () => {
  const reader = new FakeAttrReader(ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 6 }));
  decodeFlow(reader);
  const counters: Attr[] = [
    ATTR.ORIG_COUNTER_PACKETS,
    ATTR.ORIG_COUNTER_BYTES,
    ATTR.REPL_COUNTER_PACKETS,
    ATTR.REPL_COUNTER_BYTES,
  ];
  assert.deepEqual(reader.reads.filter((a) => counters.includes(a)), []);
});

Deno.test("eventType() maps NFCT_T_* message types to event types", async (t) => {
  const cases: [type: number, expected: string | undefined][] = [
    [1, "new"],
    [2, "update"],
    [4, "destroy"],
    [0, undefined],
    [3, undefined],
    [7, undefined],
    [0x80000000, undefined],
  ];
  for (const [type, expected] of cases) {
    await t.step(`${type} -> ${expected}`, () => {
      assert.equal(eventType(type), expected);
    });
  }
});

Deno.test("decodeEvent() pairs the event type with the decoded flow", () => {
  const attrs = ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 6, sport: 1, dport: 2 });
  assert.deepEqual(decodeEvent(4, new FakeAttrReader(attrs)), {
    type: "destroy",
    flow: decodeFlow(new FakeAttrReader(attrs)),
  });
});

Deno.test("decodeEvent() returns undefined for other message types without reading", () => {
  const reader = new FakeAttrReader(ipv4Attrs({ src: "100.64.0.5", dst: "100.64.0.9", proto: 6 }));
  assert.equal(decodeEvent(0, reader), undefined);
  assert.deepEqual(reader.reads, []);
});

Deno.test("ntohs() swaps bytes on little-endian hosts only", async (t) => {
  const cases: [raw: number, littleEndian: boolean, expected: number][] = [
    [0x5000, true, 80],
    [0x0050, false, 80],
    [0x3412, true, 0x1234],
    [0x1234, false, 0x1234],
    [0xffff, true, 0xffff],
    [0x0000, true, 0],
    [0x0100, true, 1],
    [0x00ff, true, 0xff00],
  ];
  for (const [raw, littleEndian, expected] of cases) {
    await t.step(`0x${raw.toString(16)} ${littleEndian ? "LE" : "BE"}`, () => {
      assert.equal(ntohs(raw, littleEndian), expected);
    });
  }
});

Deno.test("ipv4FromRaw() reads network-order addresses on both byte orders", async (t) => {
  const cases: [raw: number, littleEndian: boolean, expected: string][] = [
    [0x0100007f, true, "127.0.0.1"],
    [0x7f000001, false, "127.0.0.1"],
    [0x6401a8c0, true, "192.168.1.100"],
    [0xc0a80164, false, "192.168.1.100"],
    [0x01004064, true, "100.64.0.1"],
    [0x64400001, false, "100.64.0.1"],
    [0xffffffff, true, "255.255.255.255"],
    [0xffffffff, false, "255.255.255.255"],
    [0, true, "0.0.0.0"],
  ];
  for (const [raw, littleEndian, expected] of cases) {
    await t.step(`0x${raw.toString(16)} ${littleEndian ? "LE" : "BE"}`, () => {
      assert.equal(ipv4FromRaw(raw, littleEndian), expected);
    });
  }
});

Deno.test("ntohs() and ipv4FromRaw() default to this host's byte order", () => {
  assert.equal(ntohs(rawPort(8080)), 8080);
  assert.equal(ipv4FromRaw(rawIpv4("100.64.0.1")), "100.64.0.1");
});

Deno.test("decodeFlow() keeps the reply tuple's own addresses when NAT changed them", () => {
  const attrs = ipv4Attrs({
    src: "100.64.0.7",
    dst: "192.0.2.80",
    proto: 6,
    sport: 40000,
    dport: 80,
  });
  // DNAT 192.0.2.80 → 10.1.0.5, SNAT 100.64.0.7 → 10.1.0.1: replies come from 10.1.0.5 to 10.1.0.1.
  attrs.set(ATTR.REPL_IPV4_SRC, rawIpv4("10.1.0.5"));
  attrs.set(ATTR.REPL_IPV4_DST, rawIpv4("10.1.0.1"));
  const f = decodeFlow(new FakeAttrReader(attrs));
  assert.deepEqual([f.original.source, f.original.destination], ["100.64.0.7", "192.0.2.80"]);
  assert.deepEqual([f.reply.source, f.reply.destination], ["10.1.0.5", "10.1.0.1"]);
});

Deno.test("decodeFlow() reuses the original addresses for a reply tuple without NAT", () => {
  const f = decodeFlow(
    new FakeAttrReader(
      ipv4Attrs({ src: "100.64.0.7", dst: "100.64.0.9", proto: 17, sport: 1, dport: 2 }),
    ),
  );
  assert.deepEqual([f.reply.source, f.reply.destination], ["100.64.0.9", "100.64.0.7"]);
});
