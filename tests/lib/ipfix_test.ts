import assert from "node:assert/strict";
import type { Flow } from "../../lib/flow.ts";
import {
  type CounterEncoding,
  dataTemplates,
  directionCode,
  dropTemplates,
  endReasonCode,
  endReasonOf,
  flowIdFromUuid,
  type IpfixDrop,
  IpfixEncoder,
  type IpfixEncoderOptions,
  IpfixError,
  type IpfixFlow,
  ipfixFlowFromFlow,
  type IpfixRecord,
  STATS_TEMPLATE,
} from "../../lib/ipfix.ts";
import { ruleIdBytes } from "../../lib/ipfix_wire.ts";
import { formatIp } from "../../lib/net.ts";
import {
  DROP_TEMPLATE_IDS,
  type ParsedRecord,
  parseMessage,
  parseStream,
  parseWithDrops,
  type RecordValues,
  TemplateCache,
} from "../_fakes/ipfix_parse.ts";

// ---------------------------------------------------------------------------------------------
// Helpers and fixtures

/** Bytes from hex fragments (whitespace ignored). */
function hex(...parts: string[]): Uint8Array {
  const s = parts.join("").replace(/\s+/g, "");
  if (s.length % 2 !== 0 || !/^[0-9a-f]*$/.test(s)) throw new Error(`bad hex: ${s}`);
  return Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function assertBytes(actual: Uint8Array, expected: Uint8Array): void {
  assert.equal(toHex(actual), toHex(expected));
}

const T0 = 1_700_000_000_000; // 0x0000018bcfe56800
const NOW = T0 + 5100;

const TCP4: IpfixFlow = {
  family: 4,
  source: "100.64.0.1",
  destination: "100.64.0.2",
  protocol: 6,
  sourcePort: 40000,
  destinationPort: 22,
  icmpType: 0,
  icmpCode: 0,
  originalPackets: 10n,
  originalBytes: 1000n,
  replyPackets: 8n,
  replyBytes: 4000n,
  startMs: T0,
  endMs: T0 + 5000, // 0x0000018bcfe57b88
  direction: "egress",
  endReason: "end",
  flowId: 0x1122334455667788n,
};

const UDP6: IpfixFlow = {
  ...TCP4,
  family: 6,
  source: "fd00::1",
  destination: "2001:db8::53",
  protocol: 17,
  sourcePort: 5353,
  destinationPort: 53,
  direction: "ingress",
  endReason: "resync",
};

const ICMP4: IpfixFlow = {
  ...TCP4,
  protocol: 1,
  sourcePort: 0,
  destinationPort: 0,
  icmpType: 3,
  icmpCode: 1,
  direction: "unknown",
  endReason: "shutdown",
};

const ICMP6: IpfixFlow = {
  ...TCP4,
  family: 6,
  source: "fd00::1",
  destination: "fd00::2",
  protocol: 58,
  sourcePort: 0,
  destinationPort: 0,
  icmpType: 1,
  icmpCode: 4,
  endReason: "active-timeout",
};

const NAT4: IpfixFlow = {
  ...TCP4,
  postNat: {
    source: "203.0.113.7",
    destination: "100.64.0.2",
    sourcePort: 61000,
    destinationPort: 22,
  },
};

/** The common middle of every fixture record: times, flow ID. */
const TIMES_AND_ID = [
  "0000018bcfe56800", // flowStartMilliseconds 1700000000000
  "0000018bcfe57b88", // flowEndMilliseconds 1700000005000
  "1122334455667788", // flowId
];

/** The fixtures' counters in the rfc5103 encoding. */
const RFC5103_COUNTERS = [
  "00000000000003e8", // octetDeltaCount 1000 (original direction)
  "000000000000000a", // packetDeltaCount 10
  "0000000000000fa0", // reverseOctetDeltaCount 4000 (reply direction)
  "0000000000000008", // reversePacketDeltaCount 8
];

/**
 * A message sent after the templates (so it holds data only): templates go out first in a
 * message of their own, which does not advance the sequence number.
 */
function dataOnlyMessage(flows: IpfixFlow[], options: IpfixEncoderOptions = {}): Uint8Array {
  const enc = new IpfixEncoder({ observationDomainId: 7, ...options });
  enc.encodeTemplates(NOW);
  const out = enc.encode(flows, NOW + 1000);
  assert.equal(out.length, 1);
  return out[0]!;
}

/** Set IDs of a message, in order. */
function setIds(message: Uint8Array): number[] {
  return parseMessage(message, new TemplateCache()).sets.map((s) => s.id);
}

function hasTemplates(message: Uint8Array): boolean {
  const v = new DataView(message.buffer, message.byteOffset);
  for (let off = 16; off < message.length; off += v.getUint16(off + 2)) {
    if (v.getUint16(off) === 2) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Message header

Deno.test("IpfixEncoder writes the message header: version 10, length, export time, sequence, domain", () => {
  const enc = new IpfixEncoder({ observationDomainId: 7 });
  enc.encode([TCP4], NOW);
  const [m] = enc.encode([TCP4], NOW + 1000);
  assertBytes(
    m!,
    hex(
      "000a", // version 10
      "005c", // length 92 = 16 header + 76 data set
      "6553f106", // export time 1700000006 s (NOW + 1 s, truncated)
      "00000001", // sequence: 1 data record sent before this message
      "00000007", // observation domain 7
      "0100", // set ID 256 (ipv4-ports/rfc5103)
      "004c", // set length 76 = 4 + 71 + 1 padding
      "64400001", // sourceIPv4Address 100.64.0.1
      "64400002", // destinationIPv4Address 100.64.0.2
      "9c40", // sourceTransportPort 40000
      "0016", // destinationTransportPort 22
      "06", // protocolIdentifier TCP
      "01", // flowDirection egress
      "03", // flowEndReason end of flow detected
      ...TIMES_AND_ID,
      ...RFC5103_COUNTERS,
      "00", // padding to a 4-byte boundary
    ),
  );
});

Deno.test("IpfixEncoder export time is nowMs in whole seconds", () => {
  const enc = new IpfixEncoder();
  const [m] = enc.encode([TCP4], 1_700_000_005_999);
  assertBytes(m!.slice(4, 8), hex("6553f105")); // 1700000005
});

Deno.test("IpfixEncoder header length equals the message length for every message", () => {
  const enc = new IpfixEncoder({ mtu: 400 });
  const msgs = enc.encode(Array.from({ length: 30 }, () => UDP6), NOW);
  assert.ok(msgs.length > 3);
  for (const m of msgs) assert.equal(new DataView(m.buffer).getUint16(2), m.length);
});

// ---------------------------------------------------------------------------------------------
// Templates

Deno.test("IpfixEncoder's first message starts with the template set: template 256 field specifiers", () => {
  const [m] = new IpfixEncoder().encode([TCP4], NOW);
  assertBytes(
    m!.slice(16, 16 + 4 + 68),
    hex(
      "0002", // set ID 2: template set
      "0244", // set length 580 = 4 + the 8 template records (68+64+68+64+84+72+84+72)
      "0100", // template ID 256
      "000e", // 14 fields
      "0008 0004", // sourceIPv4Address, 4
      "000c 0004", // destinationIPv4Address, 4
      "0007 0002", // sourceTransportPort, 2
      "000b 0002", // destinationTransportPort, 2
      "0004 0001", // protocolIdentifier, 1
      "003d 0001", // flowDirection (61), 1
      "0088 0001", // flowEndReason (136), 1
      "0098 0008", // flowStartMilliseconds (152), 8
      "0099 0008", // flowEndMilliseconds (153), 8
      "0094 0008", // flowId (148), 8
      "0001 0008", // octetDeltaCount, 8
      "0002 0008", // packetDeltaCount, 8
      "8001 0008 00007279", // E bit + 1 (reverseOctetDeltaCount), 8, PEN 29305
      "8002 0008 00007279", // E bit + 2 (reversePacketDeltaCount), 8, PEN 29305
    ),
  );
});

Deno.test("IpfixEncoder rfc5103 reverse elements carry the enterprise bit and PEN 29305 in every template", () => {
  const [m] = new IpfixEncoder().encode([TCP4], NOW);
  const parsed = parseMessage(m!, new TemplateCache());
  const templates = parsed.sets.find((s) => s.id === 2)!.templates;
  assert.equal(templates.length, 8);
  for (const t of templates) {
    const enterprise = t.fields.filter((f) => f.enterprise !== undefined);
    assert.deepEqual(enterprise, [
      { id: 1, length: 8, enterprise: 29305 },
      { id: 2, length: 8, enterprise: 29305 },
    ]);
    assert.ok(t.fields.some((f) => f.id === 1 && f.enterprise === undefined));
  }
});

Deno.test("IpfixEncoder initiator encoding uses elements 231/232/298/299 and no enterprise elements", () => {
  const [m] = new IpfixEncoder({ counters: "initiator" }).encode([TCP4], NOW);
  assertBytes(
    m!.slice(16, 16 + 4 + 60),
    hex(
      "0002", // template set
      "0204", // set length 516 = 4 + 60+56+60+56+76+64+76+64
      "0108", // template ID 264 (ipv4-ports/initiator)
      "000e", // 14 fields
      "0008 0004 000c 0004 0007 0002 000b 0002", // addresses, ports
      "0004 0001 003d 0001 0088 0001", // protocol, direction, end reason
      "0098 0008 0099 0008 0094 0008", // start, end, flowId
      "00e7 0008", // initiatorOctets (231), 8
      "00e8 0008", // responderOctets (232), 8
      "012a 0008", // initiatorPackets (298), 8
      "012b 0008", // responderPackets (299), 8
    ),
  );
  const parsed = parseMessage(m!, new TemplateCache());
  for (const t of parsed.sets.find((s) => s.id === 2)!.templates) {
    assert.ok(t.fields.every((f) => f.enterprise === undefined));
  }
});

Deno.test("IpfixEncoder NAT template 260 appends the post-NAT address and port elements", () => {
  const [m] = new IpfixEncoder().encode([TCP4], NOW);
  const off = 20 + 68 + 64 + 68 + 64; // after templates 256-259
  assertBytes(
    m!.slice(off, off + 84),
    hex(
      "0104", // template ID 260 (ipv4-ports-nat/rfc5103)
      "0012", // 18 fields
      "0008 0004 000c 0004 0007 0002 000b 0002 0004 0001 003d 0001 0088 0001",
      "0098 0008 0099 0008 0094 0008 0001 0008 0002 0008",
      "8001 0008 00007279 8002 0008 00007279",
      "00e1 0004", // postNATSourceIPv4Address (225), 4
      "00e2 0004", // postNATDestinationIPv4Address (226), 4
      "00e3 0002", // postNAPTSourceTransportPort (227), 2
      "00e4 0002", // postNAPTDestinationTransportPort (228), 2
    ),
  );
});

Deno.test("IpfixEncoder's first message sends the options template after the data templates", () => {
  const [m] = new IpfixEncoder().encode([TCP4], NOW);
  const off = 16 + 580;
  assertBytes(
    m!.slice(off, off + 40),
    hex(
      "0003", // set ID 3: options template set
      "0028", // set length 40 = 4 + 34 + 2 padding
      "0110", // template ID 272
      "0007", // 7 fields
      "0001", // 1 scope field
      "0095 0004", // scope: observationDomainId (149), 4
      "00a0 0008", // systemInitTimeMilliseconds (160), 8
      "0029 0008", // exportedMessageTotalCount (41), 8
      "0028 0008", // exportedOctetTotalCount (40), 8
      "002a 0008", // exportedFlowRecordTotalCount (42), 8
      "00a6 0008", // notSentFlowTotalCount (166), 8
      "00a4 0008", // ignoredPacketTotalCount (164): lost conntrack events, 8
      "0000", // padding
    ),
  );
  assert.deepEqual(setIds(m!), [2, 3, 256]);
});

Deno.test("dataTemplates() pins the IDs and field layouts of both encodings", () => {
  const names = (c: CounterEncoding): string[] =>
    dataTemplates(c).map((t) => `${t.id} ${t.name} ${t.fields.map((f) => f.ie.name).join(",")}`);
  const head4 = "sourceIPv4Address,destinationIPv4Address";
  const head6 = "sourceIPv6Address,destinationIPv6Address";
  const ports = "sourceTransportPort,destinationTransportPort";
  const mid = "protocolIdentifier,flowDirection,flowEndReason," +
    "flowStartMilliseconds,flowEndMilliseconds,flowId";
  const rfc = "octetDeltaCount,packetDeltaCount,reverseOctetDeltaCount,reversePacketDeltaCount";
  const ini = "initiatorOctets,responderOctets,initiatorPackets,responderPackets";
  const nat4 = "postNATSourceIPv4Address,postNATDestinationIPv4Address";
  const nat6 = "postNATSourceIPv6Address,postNATDestinationIPv6Address";
  const napt = "postNAPTSourceTransportPort,postNAPTDestinationTransportPort";
  const layout = (base: number, enc: string, c: string): string[] => [
    `${base} ipv4-ports/${enc} ${head4},${ports},${mid},${c}`,
    `${base + 1} ipv4-icmp/${enc} ${head4},icmpTypeCodeIPv4,${mid},${c}`,
    `${base + 2} ipv6-ports/${enc} ${head6},${ports},${mid},${c}`,
    `${base + 3} ipv6-icmp/${enc} ${head6},icmpTypeCodeIPv6,${mid},${c}`,
    `${base + 4} ipv4-ports-nat/${enc} ${head4},${ports},${mid},${c},${nat4},${napt}`,
    `${base + 5} ipv4-icmp-nat/${enc} ${head4},icmpTypeCodeIPv4,${mid},${c},${nat4}`,
    `${base + 6} ipv6-ports-nat/${enc} ${head6},${ports},${mid},${c},${nat6},${napt}`,
    `${base + 7} ipv6-icmp-nat/${enc} ${head6},icmpTypeCodeIPv6,${mid},${c},${nat6}`,
  ];
  assert.deepEqual(names("rfc5103"), layout(256, "rfc5103", rfc));
  assert.deepEqual(names("initiator"), layout(264, "initiator", ini));
  assert.equal(STATS_TEMPLATE.id, 272);
});

// ---------------------------------------------------------------------------------------------
// Data records

Deno.test("IpfixEncoder encodes an IPv6 UDP record with template 258", () => {
  const m = dataOnlyMessage([UDP6]);
  assertBytes(
    m.slice(16),
    hex(
      "0102", // set ID 258 (ipv6-ports/rfc5103)
      "0064", // set length 100 = 4 + 95 + 1 padding
      "fd000000000000000000000000000001", // sourceIPv6Address fd00::1
      "20010db8000000000000000000000053", // destinationIPv6Address 2001:db8::53
      "14e9", // sourceTransportPort 5353
      "0035", // destinationTransportPort 53
      "11", // protocolIdentifier UDP
      "00", // flowDirection ingress
      "05", // flowEndReason lack of resources (resync)
      ...TIMES_AND_ID,
      ...RFC5103_COUNTERS,
      "00", // padding
    ),
  );
});

Deno.test("IpfixEncoder encodes an ICMP record as icmpTypeCodeIPv4 = type * 256 + code", () => {
  const m = dataOnlyMessage([ICMP4]);
  assertBytes(
    m.slice(16),
    hex(
      "0101", // set ID 257 (ipv4-icmp/rfc5103)
      "004c", // set length 76 = 4 + 69 + 3 padding
      "64400001", // sourceIPv4Address
      "64400002", // destinationIPv4Address
      "0301", // icmpTypeCodeIPv4: type 3 (unreachable) * 256 + code 1
      "01", // protocolIdentifier ICMP
      "ff", // flowDirection unknown (0xff, not an IANA value)
      "04", // flowEndReason forced end (shutdown)
      ...TIMES_AND_ID,
      ...RFC5103_COUNTERS,
      "000000", // padding
    ),
  );
});

Deno.test("IpfixEncoder encodes an ICMPv6 record as icmpTypeCodeIPv6 with template 259", () => {
  const m = dataOnlyMessage([ICMP6]);
  assertBytes(
    m.slice(16),
    hex(
      "0103", // set ID 259 (ipv6-icmp/rfc5103)
      "0064", // set length 100 = 4 + 93 + 3 padding
      "fd000000000000000000000000000001", // sourceIPv6Address fd00::1
      "fd000000000000000000000000000002", // destinationIPv6Address fd00::2
      "0104", // icmpTypeCodeIPv6: type 1 * 256 + code 4
      "3a", // protocolIdentifier ICMPv6 (58)
      "01", // flowDirection egress
      "02", // flowEndReason active timeout
      ...TIMES_AND_ID,
      ...RFC5103_COUNTERS,
      "000000", // padding
    ),
  );
});

Deno.test("IpfixEncoder encodes a NATed flow with template 260 and its post-NAT fields", () => {
  const m = dataOnlyMessage([NAT4]);
  assertBytes(
    m.slice(16),
    hex(
      "0104", // set ID 260 (ipv4-ports-nat/rfc5103)
      "0058", // set length 88 = 4 + 83 + 1 padding
      "64400001 64400002 9c40 0016 06 01 03", // original tuple, protocol, direction, reason
      ...TIMES_AND_ID,
      ...RFC5103_COUNTERS,
      "cb007107", // postNATSourceIPv4Address 203.0.113.7
      "64400002", // postNATDestinationIPv4Address 100.64.0.2 (unchanged)
      "ee48", // postNAPTSourceTransportPort 61000
      "0016", // postNAPTDestinationTransportPort 22
      "00", // padding
    ),
  );
});

Deno.test("IpfixEncoder uses the plain template for a flow without postNat", () => {
  const enc = new IpfixEncoder();
  assert.equal(enc.templateFor(TCP4).id, 256);
  assert.equal(enc.templateFor(NAT4).id, 260);
  assert.equal(enc.templateFor({ ...ICMP4, postNat: NAT4.postNat! }).id, 261);
  assert.equal(enc.templateFor({ ...UDP6, protocol: 47 }).id, 258); // GRE: ports template
});

Deno.test("IpfixEncoder initiator encoding writes initiator/responder octets, then packets", () => {
  const m = dataOnlyMessage([TCP4], { counters: "initiator" });
  assertBytes(
    m.slice(16),
    hex(
      "0108", // set ID 264 (ipv4-ports/initiator)
      "004c", // set length 76
      "64400001 64400002 9c40 0016 06 01 03",
      ...TIMES_AND_ID,
      "00000000000003e8", // initiatorOctets 1000
      "0000000000000fa0", // responderOctets 4000
      "000000000000000a", // initiatorPackets 10
      "0000000000000008", // responderPackets 8
      "00", // padding
    ),
  );
});

Deno.test("IpfixEncoder groups records by template and keeps input order within a template", () => {
  const a = { ...UDP6, flowId: 1n };
  const b = { ...TCP4, flowId: 2n };
  const c = { ...UDP6, flowId: 3n };
  const cache = new TemplateCache();
  const enc = new IpfixEncoder();
  parseMessage(enc.encodeTemplates(NOW)[0]!, cache);
  const [m] = enc.encode([a, b, c], NOW);
  const parsed = parseMessage(m!, cache);
  assert.deepEqual(parsed.sets.map((s) => s.id), [256, 258]);
  assert.deepEqual(parsed.sets.flatMap((s) => s.records.map((r) => r.values.flowId)), [2n, 1n, 3n]);
});

// ---------------------------------------------------------------------------------------------
// Padding

Deno.test("IpfixEncoder pads each data set with zeros to a 4-byte boundary", () => {
  const m = dataOnlyMessage([TCP4, TCP4]);
  // 2 records of 71 bytes: 4 + 142 = 146, padded to 148.
  assertBytes(m.slice(16, 20), hex("0100 0094"));
  assert.equal(m.length, 16 + 148);
  assertBytes(m.slice(-2), hex("0000"));
});

Deno.test("IpfixEncoder without padding writes sets of their exact length", () => {
  const m = dataOnlyMessage([TCP4, TCP4], { padding: false });
  assertBytes(m.slice(0, 4), hex("000a 00a2")); // length 162 = 16 + 146
  assertBytes(m.slice(16, 20), hex("0100 0092")); // set length 146 = 4 + 2 * 71
  const [first] = new IpfixEncoder({ padding: false }).encode([TCP4], NOW);
  const sets = parseMessage(first!, new TemplateCache()).sets;
  assert.deepEqual(sets.map((s) => [s.id, s.length, s.padding]), [[2, 580, 0], [3, 38, 0], [
    256,
    75,
    0,
  ]]);
});

// ---------------------------------------------------------------------------------------------
// Options (exporter statistics)

Deno.test("IpfixEncoder.encodeStats() writes one options data record with the exporter counters", () => {
  const enc = new IpfixEncoder({ observationDomainId: 7 });
  const [first] = enc.encode([TCP4], T0);
  assert.equal(first!.length, 712);
  const msgs = enc.encodeStats({ notSentFlowRecords: 3, lostEvents: 42n }, T0 + 1000);
  assert.equal(msgs.length, 1);
  assertBytes(
    msgs[0]!,
    hex(
      "000a", // version
      "0048", // length 72 = 16 + 56
      "6553f101", // export time 1700000001
      "00000001", // sequence: 1 flow record before
      "00000007", // domain 7
      "0110", // set ID 272 (options data)
      "0038", // set length 56 = 4 + 52, no padding needed
      "00000007", // scope observationDomainId 7
      "0000018bcfe56800", // systemInitTimeMilliseconds: first nowMs seen (T0)
      "0000000000000001", // exportedMessageTotalCount 1 (excludes this message)
      "00000000000002c8", // exportedOctetTotalCount 712
      "0000000000000001", // exportedFlowRecordTotalCount 1
      "0000000000000003", // notSentFlowTotalCount 3
      "000000000000002a", // ignoredPacketTotalCount: 42 conntrack events lost
    ),
  );
});

Deno.test("IpfixEncoder.encodeStats() uses exported counts and init time given by the caller", () => {
  const enc = new IpfixEncoder();
  enc.encodeTemplates(T0);
  const cache = new TemplateCache();
  parseMessage(enc.encodeTemplates(T0)[0]!, cache);
  const [m] = enc.encodeStats({
    notSentFlowRecords: 0,
    lostEvents: 0,
    exportedMessages: 10,
    exportedOctets: 2n ** 64n - 1n,
    exportedFlowRecords: 99n,
    systemInitTimeMs: 1000,
  }, T0);
  const { values } = parseMessage(m!, cache).sets[0]!.records[0]!;
  assert.equal(values.exportedMessageTotalCount, 10n);
  assert.equal(values.exportedOctetTotalCount, 2n ** 64n - 1n);
  assert.equal(values.exportedFlowRecordTotalCount, 99n);
  assert.equal(values.systemInitTimeMilliseconds, 1000n);
});

Deno.test("IpfixEncoder.encodeStats() rejects a negative counter and keeps its state", () => {
  const enc = new IpfixEncoder();
  assert.throws(
    () => enc.encodeStats({ notSentFlowRecords: 0, lostEvents: -1 }, NOW),
    (e: unknown) => e instanceof IpfixError && /ignoredPacketTotalCount -1/.test(e.message),
  );
  assert.equal(enc.messages, 0);
  assert.ok(hasTemplates(enc.encode([TCP4], NOW)[0]!));
});

// ---------------------------------------------------------------------------------------------
// Sequence numbers

function sequences(msgs: Uint8Array[]): number[] {
  return msgs.map((m) => new DataView(m.buffer).getUint32(8));
}

Deno.test("IpfixEncoder sequence numbers count data records, not messages", () => {
  const enc = new IpfixEncoder();
  const a = enc.encode([TCP4, UDP6, ICMP4], NOW);
  const b = enc.encode([TCP4, TCP4], NOW);
  const c = enc.encode([NAT4], NOW);
  assert.deepEqual(sequences([...a, ...b, ...c]), [0, 3, 5]);
  assert.equal(enc.sequence, 6);
});

Deno.test("IpfixEncoder template-only messages do not advance the sequence number", () => {
  const enc = new IpfixEncoder();
  enc.encode([TCP4, TCP4], NOW);
  const t = enc.encodeTemplates(NOW);
  const d = enc.encode([TCP4], NOW);
  assert.deepEqual(sequences(t), [2]);
  assert.deepEqual(sequences(d), [2]);
});

Deno.test("IpfixEncoder counts options data records in the sequence number by default", () => {
  const enc = new IpfixEncoder();
  enc.encode([TCP4], NOW);
  const s = enc.encodeStats({ notSentFlowRecords: 0, lostEvents: 0 }, NOW);
  const d = enc.encode([TCP4], NOW);
  assert.deepEqual(sequences([...s, ...d]), [1, 2]);
});

Deno.test("IpfixEncoder with countOptionsRecords false counts flow records only (nfdump)", () => {
  const enc = new IpfixEncoder({ countOptionsRecords: false });
  enc.encode([TCP4], NOW);
  const s = enc.encodeStats({ notSentFlowRecords: 0, lostEvents: 0 }, NOW);
  const d = enc.encode([TCP4], NOW);
  assert.deepEqual(sequences([...s, ...d]), [1, 1]);
});

Deno.test("IpfixEncoder sequence numbers of split messages are the records before each message", () => {
  const enc = new IpfixEncoder({ mtu: 300 });
  const msgs = enc.encode(
    Array.from({ length: 40 }, (_, i) => ({ ...TCP4, flowId: BigInt(i) })),
    NOW,
  );
  const { messages } = parseStream(msgs);
  let before = 0;
  for (const m of messages) {
    assert.equal(m.sequence, before);
    before += m.sets.reduce((n, s) => n + s.records.length, 0);
  }
  assert.equal(before, 40);
});

// ---------------------------------------------------------------------------------------------
// MTU

Deno.test("IpfixEncoder splits many records into messages of at most mtu bytes without splitting a record", () => {
  const flows = randomFlows(500, 7);
  for (const mtu of [152, 512, 1400, 9000]) {
    const enc = new IpfixEncoder({ mtu });
    const msgs = enc.encode(flows, NOW);
    for (const m of msgs) assert.ok(m.length <= mtu, `${m.length} > ${mtu}`);
    const { records } = parseStream(msgs); // strict: a split record would not parse
    assert.equal(records.length, 500);
    if (mtu < 9000) assert.ok(msgs.length > 1);
  }
});

Deno.test("IpfixEncoder fills a message before starting the next one", () => {
  const enc = new IpfixEncoder({ mtu: 512 });
  enc.encodeTemplates(NOW);
  // 6 records fit (16 + 4 + 6 * 71 = 446, padded 448); a 7th would need 16 + 4 + 7 * 71 = 517.
  const msgs = enc.encode(Array.from({ length: 12 }, () => TCP4), NOW);
  assert.deepEqual(msgs.map((m) => m.length), [16 + 4 + 6 * 71 + 2, 16 + 4 + 6 * 71 + 2]);
});

Deno.test("IpfixEncoder constructor rejects an MTU too small for the largest record", () => {
  assert.throws(
    () => new IpfixEncoder({ mtu: 151 }),
    (e: unknown) => e instanceof IpfixError && /Cannot use an MTU of 151 bytes/.test(e.message),
  );
  // 16 header + 4 set header + 131-byte ipv6-ports-nat record padded to 132.
  assert.equal(new IpfixEncoder({ mtu: 152 }).minimumMtu(), 152);
  assert.equal(new IpfixEncoder({ mtu: 151, padding: false }).minimumMtu(), 151);
  assert.throws(() => new IpfixEncoder({ mtu: 65536 }), IpfixError);
});

Deno.test("IpfixEncoder with the smallest MTU sends the largest record in a full message", () => {
  const enc = new IpfixEncoder({ mtu: 152 });
  enc.encodeTemplates(NOW);
  const big: IpfixFlow = {
    ...UDP6,
    postNat: {
      source: "2001:db8::7",
      destination: "2001:db8::53",
      sourcePort: 1,
      destinationPort: 53,
    },
  };
  const msgs = enc.encode([big, big], NOW);
  assert.deepEqual(msgs.map((m) => m.length), [152, 152]);
});

Deno.test("IpfixEncoder spreads templates over several messages, all before the data", () => {
  const enc = new IpfixEncoder({ mtu: 152 });
  const msgs = enc.encode([TCP4, NAT4, UDP6], NOW);
  const { messages } = parseStream(msgs); // throws if data came before its template
  const kinds = messages.map((m) => m.sets.some((s) => s.id < 256) ? "t" : "d").join("");
  assert.match(kinds, /^t+d+$/);
  const templates = messages.flatMap((m) => m.sets.flatMap((s) => s.templates.map((t) => t.id)));
  assert.deepEqual(templates, [256, 257, 258, 259, 260, 261, 262, 263, 272]);
  for (const m of msgs) assert.ok(m.length <= 152);
});

// ---------------------------------------------------------------------------------------------
// Template refresh

Deno.test("IpfixEncoder re-sends templates after templateRefreshMs", () => {
  const enc = new IpfixEncoder();
  const at = (ms: number): boolean => hasTemplates(enc.encode([TCP4], T0 + ms)[0]!);
  assert.deepEqual([at(0), at(59_999), at(60_000), at(60_001), at(119_999), at(120_000)], [
    true,
    false,
    true,
    false,
    false,
    true,
  ]);
});

Deno.test("IpfixEncoder re-sends templates every templateRefreshPackets messages", () => {
  const enc = new IpfixEncoder({ templateRefreshPackets: 3, templateRefreshMs: Infinity });
  const flags = Array.from({ length: 8 }, (_, i) => hasTemplates(enc.encode([TCP4], T0 + i)[0]!));
  assert.deepEqual(flags, [true, false, false, true, false, false, true, false]);
});

Deno.test("IpfixEncoder counts messages within one encode() call for the refresh", () => {
  const enc = new IpfixEncoder({
    templateRefreshPackets: 4,
    templateRefreshMs: Infinity,
    mtu: 1400,
  });
  const msgs = enc.encode(randomFlows(200, 3), NOW);
  const idx = msgs.flatMap((m, i) => hasTemplates(m) ? [i] : []);
  assert.ok(msgs.length > 8);
  assert.deepEqual(idx, Array.from({ length: Math.ceil(msgs.length / 4) }, (_, k) => k * 4));
  parseStream(msgs);
});

Deno.test("IpfixEncoder re-sends templates when the clock goes backwards", () => {
  const enc = new IpfixEncoder();
  enc.encode([TCP4], T0);
  assert.ok(hasTemplates(enc.encode([TCP4], T0 - 1)[0]!));
});

Deno.test("IpfixEncoder.resetTemplates() makes the next message carry the templates", () => {
  const enc = new IpfixEncoder();
  assert.ok(hasTemplates(enc.encode([TCP4], T0)[0]!));
  assert.ok(!hasTemplates(enc.encode([TCP4], T0 + 1)[0]!));
  enc.resetTemplates();
  const [m] = enc.encode([TCP4], T0 + 2);
  assert.deepEqual(setIds(m!), [2, 3, 256]);
  assert.ok(!hasTemplates(enc.encode([TCP4], T0 + 3)[0]!));
});

Deno.test("IpfixEncoder.encodeTemplates() returns template-only messages and restarts the schedule", () => {
  const enc = new IpfixEncoder();
  enc.encode([TCP4], T0);
  const t = enc.encodeTemplates(T0 + 50_000);
  assert.equal(t.length, 1);
  assert.deepEqual(setIds(t[0]!), [2, 3]);
  assert.ok(!hasTemplates(enc.encode([TCP4], T0 + 60_000)[0]!));
  assert.ok(hasTemplates(enc.encode([TCP4], T0 + 110_000)[0]!));
});

Deno.test("IpfixEncoder.encode() of no flows returns no message and keeps the templates due", () => {
  const enc = new IpfixEncoder();
  assert.deepEqual(enc.encode([], NOW), []);
  assert.equal(enc.messages, 0);
  assert.ok(hasTemplates(enc.encode([TCP4], NOW)[0]!));
});

// ---------------------------------------------------------------------------------------------
// Errors and options

Deno.test("IpfixEncoder.encode() rejects a bad record and leaves its state unchanged", () => {
  const enc = new IpfixEncoder();
  const bad: IpfixFlow[] = [
    { ...TCP4, source: "fd00::1" },
    { ...UDP6, destination: "100.64.0.2" },
    { ...TCP4, sourcePort: 65536 },
    { ...TCP4, originalBytes: -1n },
    { ...TCP4, replyPackets: 2n ** 64n },
    { ...TCP4, flowId: -5n },
    { ...ICMP4, icmpType: 256 },
    { ...TCP4, protocol: 300 },
    { ...TCP4, startMs: NaN },
  ];
  for (const flow of bad) {
    assert.throws(
      () => enc.encode([TCP4, flow], NOW),
      IpfixError,
      JSON.stringify(flow, (_, v) => typeof v === "bigint" ? String(v) : v),
    );
  }
  assert.throws(
    () => enc.encode([{ ...TCP4, source: "fd00::1" }], NOW),
    /Cannot encode sourceIPv4Address "fd00::1": not an IPv4 address/,
  );
  assert.deepEqual([enc.sequence, enc.messages, enc.octets, enc.flowRecords], [0, 0, 0, 0]);
  const [m] = enc.encode([TCP4], NOW);
  assert.ok(hasTemplates(m!));
  assert.equal(new DataView(m!.buffer).getUint32(8), 0);
});

Deno.test("IpfixEncoder constructor rejects bad options", () => {
  assert.throws(() => new IpfixEncoder({ observationDomainId: -1 }), IpfixError);
  assert.throws(() => new IpfixEncoder({ observationDomainId: 2 ** 32 }), IpfixError);
  assert.throws(() => new IpfixEncoder({ templateRefreshMs: 0 }), IpfixError);
  assert.throws(() => new IpfixEncoder({ templateRefreshPackets: 0 }), IpfixError);
  assert.throws(() => new IpfixEncoder({ templateRefreshPackets: 1.5 }), IpfixError);
  assert.throws(() => new IpfixEncoder({ counters: "v9" as CounterEncoding }), IpfixError);
  assert.throws(() => new IpfixEncoder().encode([TCP4], -1), IpfixError);
});

Deno.test("IpfixEncoder keeps exporter counters: messages, octets, flow records", () => {
  const enc = new IpfixEncoder({ mtu: 400 });
  const msgs = enc.encode(randomFlows(50, 11), NOW);
  assert.equal(enc.messages, msgs.length);
  assert.equal(enc.octets, msgs.reduce((n, m) => n + m.length, 0));
  assert.equal(enc.flowRecords, 50);
  enc.encodeStats({ notSentFlowRecords: 0, lostEvents: 0 }, NOW);
  assert.equal(enc.flowRecords, 50);
});

// ---------------------------------------------------------------------------------------------
// Mappings and the Flow converter

Deno.test("endReasonCode() and directionCode() use the IANA values", () => {
  assert.deepEqual(
    (["idle-timeout", "active-timeout", "end", "shutdown", "resync"] as const).map(endReasonCode),
    [0x01, 0x02, 0x03, 0x04, 0x05],
  );
  assert.deepEqual((["ingress", "egress", "unknown"] as const).map(directionCode), [0, 1, 0xff]);
});

Deno.test("endReasonOf() maps tracker records to end reasons", () => {
  assert.equal(endReasonOf("end"), "end");
  assert.equal(endReasonOf("end", "resync"), "resync");
  assert.equal(endReasonOf("update"), "active-timeout");
  assert.equal(endReasonOf("window"), "active-timeout");
  assert.equal(endReasonOf("start"), undefined);
  assert.equal(endReasonOf("start", "startup"), undefined);
  assert.equal(endReasonOf("drop"), undefined);
});

Deno.test("flowIdFromUuid() takes the UUID's first 8 bytes", () => {
  assert.equal(flowIdFromUuid("1cc4bb85-0ca9-5a5d-a913-81b334076105"), 0x1cc4bb850ca95a5dn);
  assert.equal(flowIdFromUuid("ffffffff-ffff-5fff-bfff-ffffffffffff"), 0xffffffffffff5fffn);
  assert.throws(() => flowIdFromUuid("not-a-uuid"), TypeError);
});

function kernelFlow(over: {
  family?: 4 | 6;
  proto?: number;
  orig: [string, string, number, number];
  reply: [string, string, number, number];
  icmp?: [number, number, number];
  timestamps?: { start: bigint; stop?: bigint };
}): Flow {
  const protocol = over.proto ?? 6;
  const l4 = (sp: number, dp: number, icmpId: number) => ({
    protocol,
    sourcePort: sp,
    destinationPort: dp,
    icmpType: over.icmp?.[0] ?? 0,
    icmpCode: over.icmp?.[1] ?? 0,
    icmpId,
  });
  const flow: Flow = {
    id: 9,
    family: over.family ?? 4,
    original: {
      source: over.orig[0],
      destination: over.orig[1],
      proto: l4(over.orig[2], over.orig[3], 7),
    },
    reply: {
      source: over.reply[0],
      destination: over.reply[1],
      proto: l4(over.reply[2], over.reply[3], over.icmp?.[2] ?? 7),
    },
    mark: 0,
    zone: 0,
    status: 0,
    countersOriginal: { packets: 3n, bytes: 180n },
    countersReply: { packets: 2n, bytes: 120n },
    hasCounters: true,
  };
  return over.timestamps === undefined ? flow : { ...flow, timestamps: over.timestamps };
}

const CTX = { direction: "egress", endReason: "end", flowId: 5n, endMs: T0 + 9000 } as const;

Deno.test("ipfixFlowFromFlow() without NAT copies the original tuple and sets no postNat", () => {
  const r = ipfixFlowFromFlow(
    kernelFlow({
      orig: ["100.64.0.1", "100.64.0.2", 40000, 22],
      reply: ["100.64.0.2", "100.64.0.1", 22, 40000],
    }),
    { ...CTX, startMs: T0 },
  );
  assert.deepEqual(r, {
    family: 4,
    source: "100.64.0.1",
    destination: "100.64.0.2",
    protocol: 6,
    sourcePort: 40000,
    destinationPort: 22,
    icmpType: 0,
    icmpCode: 0,
    originalPackets: 3n,
    originalBytes: 180n,
    replyPackets: 2n,
    replyBytes: 120n,
    startMs: T0,
    endMs: T0 + 9000,
    direction: "egress",
    endReason: "end",
    flowId: 5n,
  });
});

Deno.test("ipfixFlowFromFlow() detects source NAT from the reply destination", () => {
  const r = ipfixFlowFromFlow(
    kernelFlow({
      orig: ["100.64.0.1", "192.0.2.1", 40000, 443],
      reply: ["192.0.2.1", "203.0.113.7", 443, 61000],
    }),
    CTX,
  );
  assert.deepEqual(r.postNat, {
    source: "203.0.113.7",
    destination: "192.0.2.1",
    sourcePort: 61000,
    destinationPort: 443,
  });
});

Deno.test("ipfixFlowFromFlow() detects destination NAT from the reply source", () => {
  const r = ipfixFlowFromFlow(
    kernelFlow({
      orig: ["192.0.2.9", "203.0.113.7", 5000, 80],
      reply: ["100.64.0.5", "192.0.2.9", 8080, 5000],
    }),
    CTX,
  );
  assert.deepEqual(r.postNat, {
    source: "192.0.2.9",
    destination: "100.64.0.5",
    sourcePort: 5000,
    destinationPort: 8080,
  });
});

Deno.test("ipfixFlowFromFlow() detects a port-only translation", () => {
  const r = ipfixFlowFromFlow(
    kernelFlow({
      orig: ["100.64.0.1", "192.0.2.1", 40000, 443],
      reply: ["192.0.2.1", "100.64.0.1", 443, 40001],
    }),
    CTX,
  );
  assert.equal(r.postNat?.sourcePort, 40001);
});

Deno.test("ipfixFlowFromFlow() for ICMP takes type and code, zeroes ports, and ignores the echo ID", () => {
  const r = ipfixFlowFromFlow(
    kernelFlow({
      proto: 1,
      orig: ["100.64.0.1", "100.64.0.2", 0, 0],
      reply: ["100.64.0.2", "100.64.0.1", 0, 0],
      icmp: [8, 0, 99], // reply carries a different echo ID
    }),
    CTX,
  );
  assert.deepEqual([r.icmpType, r.icmpCode, r.sourcePort, r.destinationPort], [8, 0, 0, 0]);
  assert.equal(r.postNat, undefined);
  const natted = ipfixFlowFromFlow(
    kernelFlow({
      proto: 1,
      orig: ["100.64.0.1", "192.0.2.1", 0, 0],
      reply: ["192.0.2.1", "203.0.113.7", 0, 0],
      icmp: [8, 0, 7],
    }),
    CTX,
  );
  assert.deepEqual(natted.postNat, {
    source: "203.0.113.7",
    destination: "192.0.2.1",
    sourcePort: 0,
    destinationPort: 0,
  });
});

Deno.test("ipfixFlowFromFlow() prefers kernel timestamps (ns, truncated to ms)", () => {
  const tuple = {
    orig: ["fd00::1", "fd00::2", 1, 2] as [string, string, number, number],
    reply: ["fd00::2", "fd00::1", 2, 1] as [string, string, number, number],
    family: 6 as const,
  };
  const both = ipfixFlowFromFlow(
    kernelFlow({
      ...tuple,
      timestamps: { start: 1_700_000_000_123_999_999n, stop: 1_700_000_001_000_000_001n },
    }),
    { ...CTX, startMs: 1 },
  );
  assert.deepEqual([both.startMs, both.endMs], [1_700_000_000_123, 1_700_000_001_000]);
  const live = ipfixFlowFromFlow(kernelFlow({ ...tuple, timestamps: { start: 2_000_000n } }), CTX);
  assert.deepEqual([live.startMs, live.endMs], [2, T0 + 9000]);
  const none = ipfixFlowFromFlow(kernelFlow(tuple), CTX);
  assert.deepEqual([none.startMs, none.endMs], [T0 + 9000, T0 + 9000]);
});

Deno.test("ipfixFlowFromFlow() output encodes into the NAT template", () => {
  const enc = new IpfixEncoder();
  const r = ipfixFlowFromFlow(
    kernelFlow({
      orig: ["100.64.0.1", "192.0.2.1", 40000, 443],
      reply: ["192.0.2.1", "203.0.113.7", 443, 61000],
    }),
    CTX,
  );
  const [rec] = parseStream(enc.encode([r], NOW)).records;
  assert.equal(rec!.templateId, 260);
  assert.equal(rec!.values.postNATSourceIPv4Address, "203.0.113.7");
  assert.equal(rec!.values.postNAPTSourceTransportPort, 61000);
});

// ---------------------------------------------------------------------------------------------
// Round trips

/** Deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomFlows(n: number, seed: number): IpfixFlow[] {
  const r = rng(seed);
  const int = (max: number): number => Math.floor(r() * (max + 1));
  const u64 = (): bigint => {
    const pick = r();
    if (pick < 0.05) return 0n;
    if (pick < 0.1) return 2n ** 64n - 1n;
    return (BigInt(int(0xffffffff)) << 32n | BigInt(int(0xffffffff))) >> BigInt(int(63));
  };
  const addr = (family: 4 | 6): string =>
    formatIp(Uint8Array.from({ length: family === 4 ? 4 : 16 }, () => int(255)));
  const protocols = [6, 17, 132, 1, 58, 47, 50];
  const directions = ["ingress", "egress", "unknown"] as const;
  const reasons = ["idle-timeout", "active-timeout", "end", "shutdown", "resync"] as const;
  return Array.from({ length: n }, (_, i): IpfixFlow => {
    const family: 4 | 6 = r() < 0.5 ? 4 : 6;
    const protocol = protocols[int(protocols.length - 1)]!;
    const icmp = protocol === 1 || protocol === 58;
    const startMs = T0 + int(1e9);
    const flow: IpfixFlow = {
      family,
      source: addr(family),
      destination: addr(family),
      protocol,
      sourcePort: icmp ? 0 : int(65535),
      destinationPort: icmp ? 0 : int(65535),
      icmpType: icmp ? int(255) : 0,
      icmpCode: icmp ? int(255) : 0,
      originalPackets: u64(),
      originalBytes: u64(),
      replyPackets: u64(),
      replyBytes: u64(),
      startMs,
      endMs: startMs + int(1e7),
      direction: directions[int(2)]!,
      endReason: reasons[int(4)]!,
      flowId: (BigInt(i) << 40n) | BigInt(int(0xffffff)),
    };
    if (r() < 0.3) {
      flow.postNat = {
        source: addr(family),
        destination: addr(family),
        sourcePort: icmp ? 0 : int(65535),
        destinationPort: icmp ? 0 : int(65535),
      };
    }
    return flow;
  });
}

/** Rebuilds an IpfixFlow from a parsed record (the inverse mapping, written independently). */
function fromRecord(rec: ParsedRecord, counters: CounterEncoding): IpfixFlow {
  const v = rec.values;
  const v6 = "sourceIPv6Address" in v;
  const icmpTC = (v6 ? v.icmpTypeCodeIPv6 : v.icmpTypeCodeIPv4) as number | undefined;
  const dir = v.flowDirection === 0 ? "ingress" : v.flowDirection === 1 ? "egress" : "unknown";
  const reasons = ["", "idle-timeout", "active-timeout", "end", "shutdown", "resync"] as const;
  const flow: IpfixFlow = {
    family: v6 ? 6 : 4,
    source: (v6 ? v.sourceIPv6Address : v.sourceIPv4Address) as string,
    destination: (v6 ? v.destinationIPv6Address : v.destinationIPv4Address) as string,
    protocol: v.protocolIdentifier as number,
    sourcePort: (v.sourceTransportPort ?? 0) as number,
    destinationPort: (v.destinationTransportPort ?? 0) as number,
    icmpType: icmpTC === undefined ? 0 : icmpTC >> 8,
    icmpCode: icmpTC === undefined ? 0 : icmpTC & 0xff,
    originalPackets: (counters === "rfc5103" ? v.packetDeltaCount : v.initiatorPackets) as bigint,
    originalBytes: (counters === "rfc5103" ? v.octetDeltaCount : v.initiatorOctets) as bigint,
    replyPackets:
      (counters === "rfc5103" ? v.reversePacketDeltaCount : v.responderPackets) as bigint,
    replyBytes: (counters === "rfc5103" ? v.reverseOctetDeltaCount : v.responderOctets) as bigint,
    startMs: Number(v.flowStartMilliseconds),
    endMs: Number(v.flowEndMilliseconds),
    direction: dir,
    endReason: reasons[v.flowEndReason as number] as IpfixFlow["endReason"],
    flowId: v.flowId as bigint,
  };
  const natSource = v6 ? v.postNATSourceIPv6Address : v.postNATSourceIPv4Address;
  if (natSource !== undefined) {
    flow.postNat = {
      source: natSource as string,
      destination:
        (v6 ? v.postNATDestinationIPv6Address : v.postNATDestinationIPv4Address) as string,
      sourcePort: (v.postNAPTSourceTransportPort ?? 0) as number,
      destinationPort: (v.postNAPTDestinationTransportPort ?? 0) as number,
    };
  }
  return flow;
}

for (const counters of ["rfc5103", "initiator"] as const) {
  Deno.test(`IpfixEncoder round-trips 2000 random records through a parser (${counters})`, () => {
    const flows = randomFlows(2000, counters === "rfc5103" ? 1 : 2);
    const enc = new IpfixEncoder({ counters, mtu: 1400, observationDomainId: 3 });
    const msgs: Uint8Array[] = [];
    for (let i = 0; i < flows.length; i += 137) {
      msgs.push(...enc.encode(flows.slice(i, i + 137), NOW + i * 1000));
    }
    const { messages, records } = parseStream(msgs);
    assert.ok(messages.every((m) => m.domain === 3 && m.length <= 1400));
    const byId = new Map(records.map((rec) => [rec.values.flowId as bigint, rec]));
    assert.equal(byId.size, flows.length);
    for (const flow of flows) {
      const rec = byId.get(flow.flowId)!;
      assert.equal(rec.templateId, enc.templateFor(flow).id);
      assert.deepEqual(fromRecord(rec, counters), flow);
    }
  });
}

Deno.test("IpfixEncoder round-trips without padding as well", () => {
  const flows = randomFlows(300, 5);
  const enc = new IpfixEncoder({ padding: false, mtu: 700 });
  const { records } = parseStream(enc.encode(flows, NOW));
  assert.deepEqual(
    records.map((rec) => fromRecord(rec, "rfc5103")).sort((a, b) => Number(a.flowId - b.flowId)),
    [...flows].sort((a, b) => Number(a.flowId - b.flowId)),
  );
});

// ---------------------------------------------------------------------------------------------
// Drop records

const DROP4: IpfixDrop = {
  kind: "drop",
  family: 4,
  source: "100.64.0.2",
  destination: "100.64.0.1",
  protocol: 6,
  sourcePort: 41000,
  destinationPort: 9099,
  icmpType: 0,
  icmpCode: 0,
  packets: 1n,
  bytes: 60n,
  timeMs: T0 + 5000, // 0x0000018bcfe57b88
  direction: "ingress",
  flowId: 0x1122334455667788n,
  ruleId: "rule-abc",
};

const DROP_ICMP6: IpfixDrop = {
  ...DROP4,
  family: 6,
  source: "fd00::1",
  destination: "fd00::2",
  protocol: 58,
  sourcePort: 0,
  destinationPort: 0,
  icmpType: 128,
  icmpCode: 0,
  bytes: 104n,
  direction: "egress",
  ruleId: null,
};

/** `n` zero bytes as hex. */
const zeros = (n: number): string => "00".repeat(n);

/** A drop message sent after the drop templates were announced (so it holds data only). */
function dropDataMessage(drops: IpfixRecord[]): Uint8Array {
  const enc = new IpfixEncoder({ observationDomainId: 7 });
  enc.encode([DROP4], NOW); // announces the drop templates
  const out = enc.encode(drops, NOW + 1000);
  assert.equal(out.length, 1);
  return out[0]!;
}

/** Template IDs announced in a message, in order. */
function templateIds(message: Uint8Array): number[] {
  return parseMessage(message, new TemplateCache()).sets.flatMap((s) =>
    s.templates.map((t) => t.id)
  );
}

/** Drop template IDs announced in a message. */
function dropTemplateIds(message: Uint8Array): number[] {
  return templateIds(message).filter((id) => DROP_TEMPLATE_IDS.has(id));
}

/** Set IDs of a message, in order, without decoding anything. */
function rawSetIds(message: Uint8Array): number[] {
  const v = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const ids: number[] = [];
  for (let off = 16; off < message.length; off += v.getUint16(off + 2)) ids.push(v.getUint16(off));
  return ids;
}

/** Rebuilds an IpfixDrop from decoded values (the inverse mapping, written independently). */
function fromDropValues(v: RecordValues): IpfixDrop {
  const v6 = "sourceIPv6Address" in v;
  const icmpTC = (v6 ? v.icmpTypeCodeIPv6 : v.icmpTypeCodeIPv4) as number | undefined;
  assert.equal(v.flowStartMilliseconds, v.flowEndMilliseconds, "one time for start and end");
  return {
    kind: "drop",
    family: v6 ? 6 : 4,
    source: (v6 ? v.sourceIPv6Address : v.sourceIPv4Address) as string,
    destination: (v6 ? v.destinationIPv6Address : v.destinationIPv4Address) as string,
    protocol: v.protocolIdentifier as number,
    sourcePort: (v.sourceTransportPort ?? 0) as number,
    destinationPort: (v.destinationTransportPort ?? 0) as number,
    icmpType: icmpTC === undefined ? 0 : icmpTC >> 8,
    icmpCode: icmpTC === undefined ? 0 : icmpTC & 0xff,
    packets: v.packetDeltaCount as bigint,
    bytes: v.octetDeltaCount as bigint,
    timeMs: Number(v.flowStartMilliseconds),
    direction: v.flowDirection === 0 ? "ingress" : v.flowDirection === 1 ? "egress" : "unknown",
    flowId: v.flowId as bigint,
    ruleId: v.ruleId === "" ? null : v.ruleId as string,
  };
}

function randomDrops(n: number, seed: number): IpfixDrop[] {
  const r = rng(seed);
  const int = (max: number): number => Math.floor(r() * (max + 1));
  const addr = (family: 4 | 6): string =>
    formatIp(Uint8Array.from({ length: family === 4 ? 4 : 16 }, () => int(255)));
  const protocols = [6, 17, 132, 1, 58, 47];
  const directions = ["ingress", "egress", "unknown"] as const;
  const rules = [null, "rule-abc", "ACL 7 / Überweisung", "cs1tnh0hhcjnqoiuebf0", "x".repeat(48)];
  return Array.from({ length: n }, (_, i): IpfixDrop => {
    const family: 4 | 6 = r() < 0.5 ? 4 : 6;
    const protocol = protocols[int(protocols.length - 1)]!;
    const icmp = protocol === 1 || protocol === 58;
    return {
      kind: "drop",
      family,
      source: addr(family),
      destination: addr(family),
      protocol,
      sourcePort: icmp ? 0 : int(65535),
      destinationPort: icmp ? 0 : int(65535),
      icmpType: icmp ? int(255) : 0,
      icmpCode: icmp ? int(255) : 0,
      packets: BigInt(1 + int(3)),
      bytes: BigInt(int(65535)),
      timeMs: T0 + int(1e9),
      direction: directions[int(2)]!,
      flowId: (BigInt(i) << 40n) | BigInt(int(0xffffff)),
      ruleId: rules[int(rules.length - 1)]!,
    };
  });
}

Deno.test("dropTemplates() pins the IDs and field layouts of the drop templates", () => {
  const mid = "protocolIdentifier,flowDirection,firewallEvent,forwardingStatus," +
    "flowStartMilliseconds,flowEndMilliseconds,flowId,octetDeltaCount,packetDeltaCount,ruleId";
  const ports = "sourceTransportPort,destinationTransportPort";
  assert.deepEqual(
    dropTemplates().map((t) =>
      `${t.id} ${t.name} ${t.fields.map((f) => f.ie.name).join(",")} ${t.recordLength}`
    ),
    [
      `273 ipv4-ports-drop sourceIPv4Address,destinationIPv4Address,${ports},${mid} 104`,
      `274 ipv4-icmp-drop sourceIPv4Address,destinationIPv4Address,icmpTypeCodeIPv4,${mid} 102`,
      `275 ipv6-ports-drop sourceIPv6Address,destinationIPv6Address,${ports},${mid} 128`,
      `276 ipv6-icmp-drop sourceIPv6Address,destinationIPv6Address,icmpTypeCodeIPv6,${mid} 126`,
    ],
  );
  // Both counter encodings share them: a drop has one direction only.
  assert.deepEqual(
    new IpfixEncoder({ counters: "initiator" }).dropTemplates.map((t) => t.id),
    [273, 274, 275, 276],
  );
});

Deno.test("IpfixEncoder announces the drop templates with the first drop record: template 273 field specifiers", () => {
  const [m] = new IpfixEncoder().encode([DROP4], NOW);
  assertBytes(m!.slice(16, 20), hex("0002", "033c")); // set length 828 = 4 + 576 + 64+60+64+60
  const off = 20 + 576; // after the eight flow templates
  assertBytes(
    m!.slice(off, off + 64),
    hex(
      "0111", // template ID 273 (ipv4-ports-drop)
      "000e", // 14 fields
      "0008 0004", // sourceIPv4Address, 4
      "000c 0004", // destinationIPv4Address, 4
      "0007 0002", // sourceTransportPort, 2
      "000b 0002", // destinationTransportPort, 2
      "0004 0001", // protocolIdentifier, 1
      "003d 0001", // flowDirection (61), 1
      "00e9 0001", // firewallEvent (233), 1
      "0059 0001", // forwardingStatus (89), 1
      "0098 0008", // flowStartMilliseconds (152), 8
      "0099 0008", // flowEndMilliseconds (153), 8
      "0094 0008", // flowId (148), 8
      "0001 0008", // octetDeltaCount, 8
      "0002 0008", // packetDeltaCount, 8
      "8001 0030 00007ed9", // E bit + 1 (rule ID), 48 bytes, PEN 32473
    ),
  );
  assert.deepEqual(templateIds(m!), [
    256,
    257,
    258,
    259,
    260,
    261,
    262,
    263,
    273,
    274,
    275,
    276,
    272,
  ]);
  assert.deepEqual(rawSetIds(m!), [2, 3, 273]);
});

Deno.test("IpfixEncoder encodes a TCP drop with template 273: firewallEvent 3, forwardingStatus 0x81, the rule ID zero-padded", () => {
  assertBytes(
    dropDataMessage([DROP4]),
    hex(
      "000a", // version 10
      "007c", // length 124 = 16 header + 108 data set
      "6553f106", // export time
      "00000001", // sequence: the announcing drop record went before
      "00000007", // observation domain 7
      "0111", // set ID 273 (ipv4-ports-drop)
      "006c", // set length 108 = 4 + 104, no padding
      "64400002", // sourceIPv4Address 100.64.0.2
      "64400001", // destinationIPv4Address 100.64.0.1
      "a028", // sourceTransportPort 41000
      "238b", // destinationTransportPort 9099
      "06", // protocolIdentifier TCP
      "00", // flowDirection ingress
      "03", // firewallEvent: flow denied
      "81", // forwardingStatus: dropped (0b10), ACL deny (1)
      "0000018bcfe57b88", // flowStartMilliseconds = the drop's time
      "0000018bcfe57b88", // flowEndMilliseconds = the same
      "1122334455667788", // flowId
      "000000000000003c", // octetDeltaCount 60
      "0000000000000001", // packetDeltaCount 1
      "72756c652d616263", // rule ID "rule-abc"
      zeros(40), // zero padding to 48 bytes
    ),
  );
});

Deno.test("IpfixEncoder encodes an ICMPv6 drop with template 276, type/code, and an all-zero rule ID for null", () => {
  assertBytes(
    dropDataMessage([DROP_ICMP6]),
    hex(
      "000a 0094 6553f106 00000001 00000007", // length 148 = 16 + 132
      "0114", // set ID 276 (ipv6-icmp-drop)
      "0084", // set length 132 = 4 + 126 + 2 padding
      "fd000000000000000000000000000001", // sourceIPv6Address
      "fd000000000000000000000000000002", // destinationIPv6Address
      "8000", // icmpTypeCodeIPv6: echo request (128), code 0
      "3a", // protocolIdentifier ICMPv6
      "01", // flowDirection egress
      "03 81", // firewallEvent, forwardingStatus
      "0000018bcfe57b88 0000018bcfe57b88 1122334455667788",
      "0000000000000068", // octetDeltaCount 104
      "0000000000000001", // packetDeltaCount 1
      zeros(48), // no rule ID
      "0000", // set padding
    ),
  );
});

Deno.test("IpfixEncoder cuts a rule ID longer than 48 bytes at a UTF-8 character boundary", () => {
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const long = "a".repeat(47) + "ü" + "tail"; // "ü" (2 bytes) would straddle byte 48
  assert.equal(utf8.decode(ruleIdBytes(long, 48).subarray(0, 47)), "a".repeat(47));
  assert.equal(ruleIdBytes(long, 48)[47], 0);
  assert.deepEqual(
    Array.from(ruleIdBytes("€", 2)), // 3 bytes: nothing of it fits
    [0, 0],
  );
  const exact = "b".repeat(46) + "ü";
  assert.equal(utf8.decode(ruleIdBytes(exact, 48)), exact);
  const { drops } = parseWithDrops(
    new IpfixEncoder().encode([{ ...DROP4, ruleId: long }], NOW),
  );
  assert.equal(drops[0]!.ruleId, "a".repeat(47));
});

Deno.test("IpfixEncoder never sends the drop templates before a drop record, and refreshes them with the others afterwards", () => {
  const enc = new IpfixEncoder();
  assert.deepEqual(templateIds(enc.encode([TCP4], T0)[0]!), [
    256,
    257,
    258,
    259,
    260,
    261,
    262,
    263,
    272,
  ]);
  assert.deepEqual(
    dropTemplateIds(enc.encodeTemplates(T0 + 1)[0]!),
    [],
  );
  assert.equal(enc.dropsAnnounced, false);
  // The first drop brings all templates, although a refresh is not due.
  const [first] = enc.encode([TCP4, DROP4], T0 + 2);
  assert.deepEqual(dropTemplateIds(first!), [273, 274, 275, 276]);
  assert.deepEqual(rawSetIds(first!), [2, 3, 256, 273]);
  assert.equal(enc.dropsAnnounced, true);
  assert.ok(!hasTemplates(enc.encode([DROP4], T0 + 3)[0]!), "no second announcement");
  // From now on every refresh (time, reset, TCP reconnect) carries them.
  assert.deepEqual(
    dropTemplateIds(enc.encode([TCP4], T0 + 60_002)[0]!),
    [273, 274, 275, 276],
  );
  enc.resetTemplates();
  assert.deepEqual(
    dropTemplateIds(enc.encode([TCP4], T0 + 60_003)[0]!),
    [273, 274, 275, 276],
  );
  assert.deepEqual(
    dropTemplateIds(enc.encodeTemplates(T0 + 60_004)[0]!),
    [273, 274, 275, 276],
  );
});

Deno.test("IpfixEncoder keeps its state when the first drop record cannot be encoded: the announcement is retried", () => {
  const enc = new IpfixEncoder();
  enc.encode([TCP4], T0);
  assert.throws(() => enc.encode([{ ...DROP4, source: "fd00::1" }], T0 + 1), IpfixError);
  assert.throws(() => enc.encode([{ ...DROP4, sourcePort: 70000 }], T0 + 1), /sourceTransportPort/);
  assert.throws(() => enc.encode([{ ...DROP4, bytes: -1n }], T0 + 1), /octetDeltaCount/);
  assert.equal(enc.dropsAnnounced, false);
  assert.deepEqual([enc.sequence, enc.flowRecords], [1, 1]);
  const [m] = enc.encode([DROP4], T0 + 2);
  assert.deepEqual(dropTemplateIds(m!), [273, 274, 275, 276]);
});

Deno.test("IpfixEncoder puts drops after flows and counts them as data records in sequence numbers and flowRecords", () => {
  const enc = new IpfixEncoder();
  const a = enc.encode([DROP4, TCP4, DROP_ICMP6, UDP6], NOW);
  assert.deepEqual(rawSetIds(a[0]!), [2, 3, 256, 258, 273, 276]);
  const b = enc.encode([DROP4], NOW);
  assert.deepEqual(sequences([...a, ...b]), [0, 4]);
  assert.deepEqual([enc.sequence, enc.flowRecords], [5, 5]);
});

Deno.test("IpfixEncoder's smallest MTU also holds the largest drop record (ipv6-ports-drop, 128 bytes)", () => {
  assert.equal(new IpfixEncoder({ mtu: 152 }).minimumMtu(), 152);
  const enc = new IpfixEncoder({ mtu: 152 });
  const big: IpfixDrop = { ...DROP4, family: 6, source: "fd00::1", destination: "fd00::2" };
  const msgs = enc.encode([big, big, big], NOW);
  for (const m of msgs) assert.ok(m.length <= 152, `${m.length}`);
  const { drops, messages } = parseWithDrops(msgs); // strict: a split record would not parse
  assert.equal(drops.length, 3);
  assert.match(messages.map((m) => m.sets.some((s) => s.id < 256) ? "t" : "d").join(""), /^t+d+$/);
});

Deno.test("IpfixEncoder round-trips 1000 random drop records mixed with flows through a decoder", () => {
  const drops = randomDrops(1000, 9);
  const flows = randomFlows(500, 10);
  const enc = new IpfixEncoder({ mtu: 1400, observationDomainId: 3 });
  const msgs: Uint8Array[] = [];
  // Drops and flows interleaved: stepping by 7 (coprime to 1500) visits every record once.
  const all: IpfixRecord[] = [...drops, ...flows];
  const mixed = all.map((_, i) => all[(i * 7) % all.length]!);
  for (let i = 0; i < mixed.length; i += 101) {
    msgs.push(...enc.encode(mixed.slice(i, i + 101), NOW + i));
  }
  const parsed = parseWithDrops(msgs);
  assert.ok(parsed.messages.every((m) => m.domain === 3));
  assert.ok(msgs.every((m) => m.length <= 1400));
  // Continuous sequence numbers over flows and drops.
  let expected = 0;
  parsed.messages.forEach((m, i) => {
    assert.equal(m.sequence, expected, `sequence of message ${i}`);
    expected += m.sets.reduce((n, s) => n + s.records.length, 0);
  });
  assert.equal(expected, 1500);
  const byId = new Map(parsed.drops.map((v) => [v.flowId as bigint, v]));
  assert.equal(byId.size, drops.length);
  for (const drop of drops) {
    const v = byId.get(drop.flowId)!;
    assert.deepEqual([v.firewallEvent, v.forwardingStatus], [3, 0x81]);
    assert.deepEqual(fromDropValues(v), drop);
  }
  const flowsById = new Map(parsed.records.map((rec) => [rec.values.flowId as bigint, rec]));
  for (const flow of flows) {
    assert.deepEqual(fromRecord(flowsById.get(flow.flowId)!, "rfc5103"), flow);
  }
});
