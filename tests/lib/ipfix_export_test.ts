import assert from "node:assert/strict";
import dgram from "node:dgram";
import { IpfixError } from "../../lib/ipfix.ts";
import {
  type CollectorAddress,
  collectorLabel,
  IpfixExporter,
  type IpfixExporterOptions,
  parseCollector,
  recordToIpfixDrop,
  recordToIpfixFlow,
  recordToIpfixRecord,
} from "../../lib/ipfix_export.ts";
import type { FlowRecord } from "../../lib/record.ts";
import {
  DROP_TEMPLATE_IDS,
  type ParsedMessage,
  type ParsedRecord,
  parseMessage,
  parseStream,
  parseWithDrops,
  type RecordValues,
  TemplateCache,
} from "../_fakes/ipfix_parse.ts";

// ---------------------------------------------------------------------------------------------
// Fixtures and helpers

const T0 = 1_700_000_000_000;
const FLOW_ID = "1cc4bb85-0ca9-5a5d-a913-81b334076105";
const FLOW_ID_64 = 0x1cc4bb850ca95a5dn;

/** A record with every field set; override what the test is about. */
function rec(over: Partial<FlowRecord> = {}): FlowRecord {
  return {
    eventId: "00000000-0000-4000-8000-000000000000",
    timestamp: new Date(T0 + 9000),
    flowId: FLOW_ID,
    type: "end",
    direction: "egress",
    protocol: 6,
    sourceIp: "100.64.0.1",
    destIp: "100.64.0.2",
    sourcePort: 40000,
    destPort: 22,
    icmpType: 0,
    icmpCode: 0,
    rxPackets: 8n,
    txPackets: 10n,
    rxBytes: 4000n,
    txBytes: 1000n,
    conntrackId: 7,
    ...over,
  };
}

/** A distinct flow UUID per index (the first 16 hex digits carry it). */
function uuid(i: number): string {
  return `${i.toString(16).padStart(8, "0")}-0000-5000-8000-000000000000`;
}

/** The IPFIX flowId of {@linkcode uuid}(i): its first 8 bytes. */
function uuidId(i: number): bigint {
  return (BigInt(i) << 32n) | 0x5000n;
}

/** Polls until `cond` holds; throws after `timeoutMs`. */
async function waitFor(what: () => string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A UDP collector on 127.0.0.1 that keeps every datagram. */
class UdpReceiver implements AsyncDisposable {
  readonly messages: Uint8Array[] = [];
  #socket = dgram.createSocket("udp4");

  static async open(): Promise<UdpReceiver> {
    const r = new UdpReceiver();
    r.#socket.on("message", (m: Uint8Array) => r.messages.push(new Uint8Array(m)));
    await new Promise<void>((resolve) => r.#socket.bind(0, "127.0.0.1", () => resolve()));
    return r;
  }

  get port(): number {
    return this.#socket.address().port;
  }

  get collector(): string {
    return `127.0.0.1:${this.port}`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await new Promise<void>((resolve) => this.#socket.close(() => resolve()));
  }
}

/** Splits a TCP byte stream into IPFIX messages by their length fields. */
function splitMessages(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  while (off + 4 <= bytes.length) {
    const length = (bytes[off + 2]! << 8) | bytes[off + 3]!;
    assert.ok(length >= 16, `message length ${length} at offset ${off}`);
    if (off + length > bytes.length) break;
    out.push(bytes.slice(off, off + length));
    off += length;
  }
  return out;
}

/** One accepted TCP connection's bytes. */
interface TcpSession {
  conn: Deno.TcpConn;
  bytes: Uint8Array;
  ended: boolean;
  done: Promise<void>;
}

/** A TCP collector on 127.0.0.1 that keeps each connection's byte stream. */
class TcpReceiver implements AsyncDisposable {
  readonly sessions: TcpSession[] = [];
  #listener: Deno.TcpListener;
  #accepting: Promise<void>;

  constructor() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  get collector(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  messages(session: number): Uint8Array[] {
    const s = this.sessions[session];
    return s === undefined ? [] : splitMessages(s.bytes);
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        const s: TcpSession = { conn, bytes: new Uint8Array(0), ended: false, done: undefined! };
        s.done = this.#read(s);
        this.sessions.push(s);
      }
    } catch {
      // listener closed
    }
  }

  async #read(s: TcpSession): Promise<void> {
    const buf = new Uint8Array(65536);
    try {
      while (true) {
        const n = await s.conn.read(buf);
        if (n === null) break;
        const next = new Uint8Array(s.bytes.length + n);
        next.set(s.bytes);
        next.set(buf.subarray(0, n), s.bytes.length);
        s.bytes = next;
      }
    } catch {
      // closed by the test
    }
    s.ended = true;
  }

  /** Closes one session from the collector's side. */
  async drop(session: number): Promise<void> {
    const s = this.sessions[session]!;
    try {
      s.conn.close();
    } catch {
      // already closed
    }
    await s.done;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (let i = 0; i < this.sessions.length; i++) await this.drop(i);
  }
}

/** A port on 127.0.0.1 where nothing listens (TCP). */
function closedTcpPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

function flowRecords(records: ParsedRecord[]): ParsedRecord[] {
  return records.filter((r) => r.templateId !== 272);
}

function statsRecords(records: ParsedRecord[]): ParsedRecord[] {
  return records.filter((r) => r.templateId === 272);
}

/** Asserts RFC 7011 sequence numbers: each message's is the previous plus its data records. */
function assertContinuous(messages: ParsedMessage[]): void {
  let expected = messages[0]?.sequence ?? 0;
  for (const [i, m] of messages.entries()) {
    assert.equal(m.sequence, expected, `sequence number of message ${i}`);
    expected += m.sets.reduce((n, s) => n + s.records.length, 0);
  }
}

/** A drop record as `DropTracker` builds it from a logged SYN: ingress, one packet on rx. */
function dropRec(over: Partial<FlowRecord> = {}): FlowRecord {
  return rec({
    type: "drop",
    flowId: "2cc4bb85-0ca9-4a5d-a913-81b334076105",
    direction: "ingress",
    sourceIp: "100.64.0.2",
    destIp: "100.64.0.1",
    sourcePort: 41000,
    destPort: 9099,
    rxPackets: 1n,
    txPackets: 0n,
    rxBytes: 60n,
    txBytes: 0n,
    conntrackId: 0,
    ruleId: "rule-abc",
    ...over,
  });
}

function options(over: Partial<IpfixExporterOptions>): IpfixExporterOptions {
  return { collectors: [], observationDomainId: 42, closeTimeoutMs: 1000, ...over };
}

// ---------------------------------------------------------------------------------------------
// parseCollector()

Deno.test("parseCollector() accepts HOST:PORT, [IPV6]:PORT and udp:// / tcp:// prefixes", () => {
  const cases: [string, CollectorAddress, string][] = [
    ["127.0.0.1:4739", { transport: "udp", host: "127.0.0.1", port: 4739 }, "udp://127.0.0.1:4739"],
    ["udp://10.0.0.1:2055", { transport: "udp", host: "10.0.0.1", port: 2055 }, ""],
    ["tcp://10.0.0.1:4739", { transport: "tcp", host: "10.0.0.1", port: 4739 }, ""],
    ["TCP://collector.example:1", { transport: "tcp", host: "collector.example", port: 1 }, ""],
    ["[::1]:4739", { transport: "udp", host: "::1", port: 4739 }, "udp://[::1]:4739"],
    ["tcp://[fd00:64::2]:65535", { transport: "tcp", host: "fd00:64::2", port: 65535 }, ""],
    ["localhost:9995", { transport: "udp", host: "localhost", port: 9995 }, ""],
  ];
  for (const [text, expected, label] of cases) {
    const parsed = parseCollector(text);
    assert.deepEqual(parsed, expected, text);
    if (label !== "") assert.equal(collectorLabel(parsed), label);
  }
});

Deno.test("parseCollector() rejects malformed addresses with a message quoting the value", () => {
  const cases: [string, RegExp][] = [
    ["", /empty/],
    ["127.0.0.1", /port is missing/],
    ["127.0.0.1:", /port "" is not a number/],
    [":4739", /host is missing/],
    ["127.0.0.1:0", /port 0 is out of range/],
    ["127.0.0.1:65536", /port 65536 is out of range/],
    ["127.0.0.1:47x9", /port "47x9" is not a number/],
    ["::1:4739", /IPv6 addresses need brackets/],
    ["[::1]", /expected \[IPV6\]:PORT/],
    ["[127.0.0.1]:4739", /"127.0.0.1" is not an IPv6 address/],
    ["[fd00::g]:4739", /"fd00::g" is not an IPv6 address/],
    ["300.1.2.3:4739", /"300.1.2.3" is not an IPv4 address/],
    ["bad_host:4739", /"bad_host" is not a valid host name/],
    ["sctp://127.0.0.1:4739", /transport "sctp" is not supported; use udp:\/\/ or tcp:\/\//],
    ["udp://127.0.0.1:4739/path", /port "4739\/path" is not a number/],
    [" 127.0.0.1:4739", /white space/],
  ];
  for (const [text, why] of cases) {
    assert.throws(() => parseCollector(text), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.ok(
        err.message.startsWith(`Cannot parse IPFIX collector "${text}": `),
        `message names the value: ${err.message}`,
      );
      assert.match(err.message, why);
      return true;
    }, text);
  }
});

// ---------------------------------------------------------------------------------------------
// recordToIpfixFlow()

Deno.test("recordToIpfixFlow() exports only end and update records, with their end reasons", () => {
  assert.equal(recordToIpfixFlow(rec({ type: "start" })), undefined);
  assert.equal(recordToIpfixFlow(rec({ type: "start", reason: "resync" })), undefined);
  assert.equal(recordToIpfixFlow(rec({ type: "drop" })), undefined);
  const window = {
    windowStart: new Date(T0),
    windowEnd: new Date(T0 + 60_000),
    numOfStarts: 1,
    numOfEnds: 1,
    numOfDrops: 0,
    numOfUpdates: 0,
  };
  assert.equal(recordToIpfixFlow(rec({ type: "window", window })), undefined);
  assert.equal(recordToIpfixFlow(rec({ type: "end" }))?.endReason, "end");
  assert.equal(recordToIpfixFlow(rec({ type: "end", reason: "resync" }))?.endReason, "resync");
  assert.equal(recordToIpfixFlow(rec({ type: "update" }))?.endReason, "active-timeout");
});

Deno.test("recordToIpfixFlow() maps rx/tx to original/reply by direction", () => {
  // ingress: the initiator's packets reached this host (rx); egress/unknown: this host sent them.
  const ingress = recordToIpfixFlow(rec({ direction: "ingress" }))!;
  assert.deepEqual(
    [ingress.originalPackets, ingress.originalBytes, ingress.replyPackets, ingress.replyBytes],
    [8n, 4000n, 10n, 1000n],
  );
  for (const direction of ["egress", "unknown"] as const) {
    const f = recordToIpfixFlow(rec({ direction }))!;
    assert.deepEqual(
      [f.originalPackets, f.originalBytes, f.replyPackets, f.replyBytes],
      [10n, 1000n, 8n, 4000n],
      direction,
    );
    assert.equal(f.direction, direction);
  }
});

Deno.test("recordToIpfixFlow() takes kernel times when present, else the record's timestamp", () => {
  const both = recordToIpfixFlow(
    rec({ flowStart: new Date(T0 + 1), flowEnd: new Date(T0 + 2) }),
  )!;
  assert.deepEqual([both.startMs, both.endMs], [T0 + 1, T0 + 2]);
  const open = recordToIpfixFlow(rec({ type: "update", flowStart: new Date(T0 + 1) }))!;
  assert.deepEqual([open.startMs, open.endMs], [T0 + 1, T0 + 9000]);
  const none = recordToIpfixFlow(rec())!;
  assert.deepEqual([none.startMs, none.endMs], [T0 + 9000, T0 + 9000]);
});

Deno.test("recordToIpfixFlow() carries tuple, family, ICMP type/code, flow ID and post-NAT", () => {
  const tcp = recordToIpfixFlow(rec());
  assert.ok(tcp !== undefined);
  assert.deepEqual(
    [tcp.family, tcp.source, tcp.destination, tcp.protocol, tcp.sourcePort, tcp.destinationPort],
    [4, "100.64.0.1", "100.64.0.2", 6, 40000, 22],
  );
  assert.equal(tcp.flowId, FLOW_ID_64);
  const nat = recordToIpfixFlow(rec({
    postNat: {
      source: "192.0.2.1",
      destination: "100.64.0.3",
      sourcePort: 61000,
      destinationPort: 23,
    },
  }))!;
  assert.deepEqual(nat.postNat, {
    source: "192.0.2.1",
    destination: "100.64.0.3",
    sourcePort: 61000,
    destinationPort: 23,
  });
  const icmp6 = recordToIpfixFlow(rec({
    protocol: 58,
    sourceIp: "fd00:64::1",
    destIp: "fd00:64::2",
    sourcePort: 0,
    destPort: 0,
    icmpType: 128,
    icmpCode: 0,
    postNat: { source: "fd00:64::9", destination: "fd00:64::2", sourcePort: 5, destinationPort: 6 },
  }))!;
  assert.equal(icmp6.family, 6);
  assert.deepEqual([icmp6.icmpType, icmp6.icmpCode, icmp6.sourcePort], [128, 0, 0]);
  assert.deepEqual(icmp6.postNat, {
    source: "fd00:64::9",
    destination: "fd00:64::2",
    sourcePort: 0,
    destinationPort: 0,
  });
  assert.equal(recordToIpfixFlow(rec())!.postNat, undefined);
  assert.throws(() => recordToIpfixFlow(rec({ flowId: "not-a-uuid" })), TypeError);
});

// ---------------------------------------------------------------------------------------------
// recordToIpfixDrop()

Deno.test("recordToIpfixDrop() converts drop records only", () => {
  for (const type of ["start", "end", "update"] as const) {
    assert.equal(recordToIpfixDrop(rec({ type })), undefined, type);
  }
  assert.equal(recordToIpfixDrop(dropRec())?.kind, "drop");
});

Deno.test("recordToIpfixDrop() carries tuple, direction, the packet, time, flow ID and rule ID", () => {
  assert.deepEqual(recordToIpfixDrop(dropRec()), {
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
    timeMs: T0 + 9000,
    direction: "ingress",
    flowId: 0x2cc4bb850ca94a5dn,
    ruleId: "rule-abc",
  });
});

Deno.test("recordToIpfixDrop() takes the packet from tx for egress drops and rx otherwise", () => {
  const egress = recordToIpfixDrop(
    dropRec({ direction: "egress", rxPackets: 0n, rxBytes: 0n, txPackets: 1n, txBytes: 84n }),
  )!;
  assert.deepEqual([egress.packets, egress.bytes, egress.direction], [1n, 84n, "egress"]);
  const unknown = recordToIpfixDrop(dropRec({ direction: "unknown" }))!;
  assert.deepEqual([unknown.packets, unknown.bytes, unknown.direction], [1n, 60n, "unknown"]);
});

Deno.test("recordToIpfixDrop() keeps ICMP type/code, zeroes ports, and maps a missing rule ID to null", () => {
  const icmp6 = recordToIpfixDrop(dropRec({
    protocol: 58,
    sourceIp: "fd00:64::2",
    destIp: "fd00:64::1",
    sourcePort: 7, // never set for ICMP by the tracker; not exported either way
    destPort: 0,
    icmpType: 128,
    icmpCode: 0,
    ruleId: null,
  }))!;
  assert.deepEqual(
    [icmp6.family, icmp6.icmpType, icmp6.icmpCode, icmp6.sourcePort, icmp6.ruleId],
    [6, 128, 0, 0, null],
  );
  const noRule = dropRec();
  delete noRule.ruleId;
  assert.equal(recordToIpfixDrop(noRule)!.ruleId, null);
  assert.throws(() => recordToIpfixDrop(dropRec({ flowId: "not-a-uuid" })), TypeError);
});

Deno.test("recordToIpfixRecord() exports end, update and drop records; start and window are skipped", () => {
  assert.equal(recordToIpfixRecord(rec({ type: "end" }))?.kind, undefined); // a biflow record
  assert.equal(
    (recordToIpfixRecord(rec({ type: "update" })) as { endReason: string }).endReason,
    "active-timeout",
  );
  assert.equal(recordToIpfixRecord(dropRec())?.kind, "drop");
  assert.equal(recordToIpfixRecord(rec({ type: "start" })), undefined);
  const window = {
    windowStart: new Date(T0),
    windowEnd: new Date(T0 + 60_000),
    numOfStarts: 0,
    numOfEnds: 0,
    numOfDrops: 3,
    numOfUpdates: 0,
  };
  assert.equal(recordToIpfixRecord(dropRec({ type: "window", window })), undefined);
});

// ---------------------------------------------------------------------------------------------
// IpfixExporter

/** The records of one traffic batch, and what a collector must decode from them (rfc5103). */
function mixedBatch(): {
  records: FlowRecord[];
  expected: Map<bigint, RecordValues>;
  expectedDrop: RecordValues;
} {
  const window = {
    windowStart: new Date(T0),
    windowEnd: new Date(T0 + 60_000),
    numOfStarts: 1,
    numOfEnds: 0,
    numOfDrops: 0,
    numOfUpdates: 0,
  };
  const records: FlowRecord[] = [
    rec({ type: "start", flowId: uuid(1) }),
    rec({ type: "end", flowId: uuid(1), flowStart: new Date(T0), flowEnd: new Date(T0 + 5000) }),
    rec({
      type: "end",
      reason: "resync",
      flowId: uuid(2),
      direction: "ingress",
      protocol: 17,
      sourceIp: "fd00:64::2",
      destIp: "fd00:64::1",
      sourcePort: 5353,
      destPort: 53,
    }),
    rec({
      type: "end",
      flowId: uuid(3),
      direction: "unknown",
      protocol: 1,
      sourcePort: 0,
      destPort: 0,
      icmpType: 8,
      icmpCode: 0,
    }),
    rec({ type: "update", flowId: uuid(4), flowStart: new Date(T0 + 100), sourcePort: 40001 }),
    rec({ type: "window", flowId: uuid(5), window }),
    dropRec({ flowId: uuid(6) }),
    rec({
      type: "end",
      flowId: uuid(7),
      destIp: "100.64.0.99",
      destPort: 9999,
      postNat: {
        source: "100.64.0.1",
        destination: "100.64.0.2",
        sourcePort: 40000,
        destinationPort: 9998,
      },
    }),
  ];
  const id = uuidId;
  const received = BigInt(T0 + 9000);
  const egressCounters = {
    octetDeltaCount: 1000n,
    packetDeltaCount: 10n,
    reverseOctetDeltaCount: 4000n,
    reversePacketDeltaCount: 8n,
  };
  const tcp4 = {
    sourceIPv4Address: "100.64.0.1",
    destinationIPv4Address: "100.64.0.2",
    sourceTransportPort: 40000,
    destinationTransportPort: 22,
    protocolIdentifier: 6,
    flowDirection: 1,
  };
  const expected = new Map<bigint, RecordValues>([
    [id(1), {
      ...tcp4,
      flowEndReason: 3,
      flowStartMilliseconds: BigInt(T0),
      flowEndMilliseconds: BigInt(T0 + 5000),
      flowId: id(1),
      ...egressCounters,
    }],
    [id(2), {
      sourceIPv6Address: "fd00:64::2",
      destinationIPv6Address: "fd00:64::1",
      sourceTransportPort: 5353,
      destinationTransportPort: 53,
      protocolIdentifier: 17,
      flowDirection: 0,
      flowEndReason: 5,
      flowStartMilliseconds: received,
      flowEndMilliseconds: received,
      flowId: id(2),
      // ingress: original = rx
      octetDeltaCount: 4000n,
      packetDeltaCount: 8n,
      reverseOctetDeltaCount: 1000n,
      reversePacketDeltaCount: 10n,
    }],
    [id(3), {
      sourceIPv4Address: "100.64.0.1",
      destinationIPv4Address: "100.64.0.2",
      icmpTypeCodeIPv4: 8 * 256,
      protocolIdentifier: 1,
      flowDirection: 0xff,
      flowEndReason: 3,
      flowStartMilliseconds: received,
      flowEndMilliseconds: received,
      flowId: id(3),
      ...egressCounters,
    }],
    [id(4), {
      ...tcp4,
      sourceTransportPort: 40001,
      flowEndReason: 2,
      flowStartMilliseconds: BigInt(T0 + 100),
      flowEndMilliseconds: received,
      flowId: id(4),
      ...egressCounters,
    }],
    [id(7), {
      ...tcp4,
      destinationIPv4Address: "100.64.0.99",
      destinationTransportPort: 9999,
      flowEndReason: 3,
      flowStartMilliseconds: received,
      flowEndMilliseconds: received,
      flowId: id(7),
      ...egressCounters,
      postNATSourceIPv4Address: "100.64.0.1",
      postNATDestinationIPv4Address: "100.64.0.2",
      postNAPTSourceTransportPort: 40000,
      postNAPTDestinationTransportPort: 9998,
    }],
  ]);
  const expectedDrop: RecordValues = {
    sourceIPv4Address: "100.64.0.2",
    destinationIPv4Address: "100.64.0.1",
    sourceTransportPort: 41000,
    destinationTransportPort: 9099,
    protocolIdentifier: 6,
    flowDirection: 0,
    firewallEvent: 3,
    forwardingStatus: 0x81,
    flowStartMilliseconds: received,
    flowEndMilliseconds: received,
    flowId: id(6),
    octetDeltaCount: 60n,
    packetDeltaCount: 1n,
    ruleId: "rule-abc",
  };
  return { records, expected, expectedDrop };
}

Deno.test(
  "IpfixExporter sends end, update and drop records over UDP as exactly the expected IPFIX " +
    "records; start and window records are not exported",
  async () => {
    await using receiver = await UdpReceiver.open();
    const { records, expected, expectedDrop } = mixedBatch();
    const total = expected.size + 1; // the flows and the drop
    {
      await using exporter = new IpfixExporter(options({ collectors: [receiver.collector] }));
      exporter.write(records);
      await waitFor(
        () => `${total} records, got ${receiver.messages.length} messages`,
        () => {
          const p = parseWithDrops(receiver.messages);
          return flowRecords(p.records).length + p.drops.length >= total;
        },
      );
      const s = exporter.stats();
      assert.equal(s.records, total);
      assert.equal(s.drops, 1);
      assert.equal(s.skipped, 2, "start, window");
      assert.equal(s.invalid, 0);
      assert.equal(s.collectors[0]!.sentRecords, total, "drops count as sent records");
      assert.equal(s.collectors[0]!.queued, 0);
      assert.equal(s.collectors[0]!.dropped, 0);
    }
    await waitFor(() => "the final statistics record", () => {
      return statsRecords(parseWithDrops(receiver.messages).records).length > 0;
    });
    const parsed = parseWithDrops(receiver.messages);
    const { messages, records: decoded, drops } = parsed;
    assert.ok(messages.every((m) => m.domain === 42), "observation domain in every header");
    assert.ok(receiver.messages.every((m) => m.length <= 1400), "MTU");
    const flows = flowRecords(decoded);
    assert.equal(flows.length, expected.size, "one record per exported flow, none twice");
    for (const r of flows) {
      const id = r.values.flowId as bigint;
      assert.deepEqual(r.values, expected.get(id), `record of flow ${id.toString(16)}`);
    }
    assert.deepEqual(drops, [expectedDrop], "the drop record");
    assertContinuous(parsed.messages);
    const stats = statsRecords(decoded);
    assert.equal(stats.length, 1, "one statistics record, at close");
    assert.equal(stats[0]!.values.exportedFlowRecordTotalCount, BigInt(total), "drops included");
  },
);

Deno.test("IpfixExporter re-announces the drop templates on every TCP connection once drops were sent", async () => {
  const tcp = new TcpReceiver();
  await using _tcp = tcp;
  await using exporter = new IpfixExporter(options({
    collectors: [tcp.collector],
    reconnectInitialMs: 50,
  }));
  exporter.write([rec({ flowId: uuid(1) })]);
  await waitFor(() => "the first record", () => tcp.messages(0).length >= 2);
  const templateIds = (m: Uint8Array): number[] =>
    parseMessage(m, new TemplateCache()).sets.flatMap((s) => s.templates.map((t) => t.id));
  assert.deepEqual(
    templateIds(tcp.messages(0)[0]!).filter((id) => DROP_TEMPLATE_IDS.has(id)),
    [],
    "no drop templates before the first drop",
  );
  exporter.write([dropRec({ flowId: uuid(2) })]);
  await waitFor(() => "the drop", () => parseWithDrops(tcp.messages(0)).drops.length === 1);
  await tcp.drop(0);
  await waitFor(() => "a second connection", () => tcp.sessions.length === 2, 3000);
  await waitFor(() => "templates on the second connection", () => tcp.messages(1).length >= 1);
  assert.deepEqual(
    templateIds(tcp.messages(1)[0]!).filter((id) => DROP_TEMPLATE_IDS.has(id)),
    [273, 274, 275, 276],
    "the new connection gets the drop templates before any data",
  );
  exporter.write([dropRec({ flowId: uuid(3) })]);
  await waitFor(() => "the second drop", () => parseWithDrops(tcp.messages(1)).drops.length === 1);
  assert.equal(parseWithDrops(tcp.messages(1)).drops[0]!.flowId, uuidId(3));
  const s = exporter.stats().collectors[0]!;
  assert.deepEqual([s.reconnects, s.sentRecords, s.dropped], [1, 3, 0]);
});

Deno.test("IpfixExporter with counters: initiator sends initiator/responder elements", async () => {
  await using receiver = await UdpReceiver.open();
  {
    await using exporter = new IpfixExporter(
      options({ collectors: [receiver.collector], counters: "initiator" }),
    );
    exporter.write([rec({ direction: "ingress" })]);
  }
  await waitFor(
    () => "the record",
    () => flowRecords(parseStream(receiver.messages).records).length > 0,
  );
  const [flow] = flowRecords(parseStream(receiver.messages).records);
  assert.ok(flow !== undefined);
  assert.equal(flow.templateId, 264);
  assert.deepEqual(
    [
      flow.values.initiatorOctets,
      flow.values.initiatorPackets,
      flow.values.responderOctets,
      flow.values.responderPackets,
    ],
    [4000n, 8n, 1000n, 10n],
  );
  assert.equal(flow.values.octetDeltaCount, undefined);
});

Deno.test(
  "IpfixExporter.close() flushes every queued record, then a final statistics record " +
    "with the exporter counters",
  async () => {
    await using receiver = await UdpReceiver.open();
    const tcp = new TcpReceiver();
    await using _tcp = tcp;
    // Several batches and ~100 messages, yet few enough for the receiver's socket buffer.
    const n = 1500;
    const records = Array.from({ length: n }, (_, i) => rec({ flowId: uuid(i) }));
    const exporter = new IpfixExporter(options({
      collectors: [receiver.collector, tcp.collector],
      lostEvents: () => 17,
    }));
    exporter.write(records);
    await exporter.close();
    await exporter.close(); // idempotent
    const s = exporter.stats();
    for (const c of s.collectors) {
      assert.equal(c.sentRecords, n, `${c.collector} sent everything`);
      assert.equal(c.queued, 0);
      assert.equal(c.dropped, 0);
      assert.equal(c.connected, false, "closed");
    }
    await waitFor(() => "the TCP stream to end", () => tcp.sessions[0]?.ended === true);
    await waitFor(() => "the UDP statistics record", () => {
      return statsRecords(parseStream(receiver.messages).records).length > 0;
    });
    for (
      const [name, stream] of [["udp", receiver.messages], ["tcp", tcp.messages(0)]] as const
    ) {
      const { messages, records: parsed } = parseStream(stream);
      const ids = new Set(flowRecords(parsed).map((r) => r.values.flowId));
      assert.equal(ids.size, n, `${name}: every record once`);
      assert.equal(flowRecords(parsed).length, n, `${name}: none twice`);
      assertContinuous(messages);
      const stats = statsRecords(parsed);
      assert.equal(stats.length, 1, `${name}: the final statistics record`);
      const v = stats[0]!.values;
      assert.equal(v.observationDomainId, 42);
      assert.equal(v.exportedFlowRecordTotalCount, BigInt(n));
      assert.equal(v.exportedMessageTotalCount, BigInt(messages.length - 1));
      assert.equal(
        v.exportedOctetTotalCount,
        BigInt(stream.slice(0, -1).reduce((b, m) => b + m.length, 0)),
      );
      assert.equal(v.notSentFlowTotalCount, 0n);
      assert.equal(v.ignoredPacketTotalCount, 17n, "conntrack events lost");
    }
    exporter.write(records.slice(0, 3)); // after close: counted, never thrown
    assert.equal(exporter.stats().collectors[0]!.dropped, 3);
  },
);

Deno.test(
  "IpfixExporter bounds the queue of an absent TCP collector and counts the drops, " +
    "while a UDP collector gets everything",
  async () => {
    await using receiver = await UdpReceiver.open();
    const port = closedTcpPort();
    const exporter = new IpfixExporter(options({
      collectors: [`tcp://127.0.0.1:${port}`, receiver.collector],
      queueSize: 10,
      reconnectInitialMs: 20,
      reconnectMaxMs: 40,
      closeTimeoutMs: 200,
    }));
    try {
      // Five batches of five: the UDP collector's queue drains in between, the TCP one's cannot.
      for (let b = 0; b < 5; b++) {
        exporter.write(Array.from({ length: 5 }, (_, i) => rec({ flowId: uuid(b * 5 + i) })));
        await waitFor(
          () => "the UDP queue to drain",
          () => exporter.stats().collectors[1]!.queued === 0,
        );
      }
      await waitFor(
        () => JSON.stringify(exporter.stats()),
        () => exporter.stats().collectors[0]!.connectFailures >= 3,
      );
      const [tcp, udp] = exporter.stats().collectors;
      assert.deepEqual(
        [tcp!.connected, tcp!.queued, tcp!.dropped, tcp!.sentRecords, tcp!.sentMessages],
        [false, 10, 15, 0, 0],
      );
      assert.ok(tcp!.connectFailures >= 3, "reconnect attempts");
      assert.equal(udp!.sentRecords, 25, "the UDP collector is not held back");
      assert.equal(udp!.dropped, 0);
    } finally {
      const started = Date.now();
      await exporter.close();
      assert.ok(Date.now() - started < 1000, "close() is bounded");
    }
    const after = exporter.stats().collectors[0]!;
    assert.deepEqual([after.queued, after.dropped], [0, 25], "queued records count as dropped");
  },
);

Deno.test(
  "IpfixExporter never blocks on a TCP collector that stops reading: the queue overflows " +
    "(counted) and close() gives up after closeTimeoutMs",
  async () => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const accepted = listener.accept(); // accepted, never read
    const exporter = new IpfixExporter(options({
      collectors: [`tcp://127.0.0.1:${listener.addr.port}`],
      queueSize: 1000,
      closeTimeoutMs: 300,
    }));
    const conn = await accepted;
    try {
      const batch = Array.from({ length: 400 }, (_, i) => rec({ flowId: uuid(i) }));
      let written = 0;
      let slowest = 0;
      // Until the kernel's socket buffers are full, the write blocks and the queue overflows.
      for (let i = 0; i < 5000 && exporter.stats().collectors[0]!.dropped === 0; i++) {
        const t = performance.now();
        exporter.write(batch);
        slowest = Math.max(slowest, performance.now() - t);
        written += batch.length;
        await new Promise((r) => setTimeout(r, 1));
      }
      const s = exporter.stats().collectors[0]!;
      assert.ok(s.dropped > 0, `the socket buffers filled up: ${JSON.stringify(s)}`);
      assert.equal(s.queued, 1000, "the queue holds queueSize records");
      assert.ok(slowest < 250, `write() returns at once (slowest ${slowest.toFixed(1)} ms)`);
      const started = Date.now();
      await exporter.close();
      assert.ok(Date.now() - started < 1500, "close() is bounded despite the stuck write");
      const after = exporter.stats().collectors[0]!;
      assert.equal(after.queued, 0);
      assert.ok(after.sentRecords + after.dropped <= written);
      assert.ok(after.dropped >= written - after.sentRecords - 1024, "unsent records counted");
    } finally {
      await exporter.close();
      conn.close();
      listener.close();
    }
  },
);

Deno.test("IpfixExporter reconnects to a TCP collector with templates first", async () => {
  const tcp = new TcpReceiver();
  await using _tcp = tcp;
  await using exporter = new IpfixExporter(options({
    collectors: [tcp.collector],
    reconnectInitialMs: 50,
  }));
  exporter.write([rec({ flowId: uuid(1) })]);
  await waitFor(() => "the first record", () => tcp.messages(0).length >= 2);
  await tcp.drop(0);
  await waitFor(() => "a second connection", () => tcp.sessions.length === 2, 3000);
  // The templates arrive on the new connection at once, before any record is written.
  await waitFor(() => "templates on the second connection", () => tcp.messages(1).length >= 1);
  exporter.write([rec({ flowId: uuid(2), protocol: 17 })]);
  await waitFor(() => "the second record", () => {
    return flowRecords(parseStream(tcp.messages(1)).records).length === 1;
  });
  for (const session of [0, 1]) {
    // A fresh template cache per connection: decoding fails on data before its template.
    const { messages } = parseStream(tcp.messages(session), new TemplateCache());
    const first = messages[0]!;
    assert.deepEqual(
      first.sets.map((s) => s.id),
      [2, 3],
      `connection ${session} starts with the template and options template sets`,
    );
    assert.equal(first.sets[0]!.templates.length, 8, "all eight data templates");
  }
  const second = flowRecords(parseStream(tcp.messages(1)).records);
  assert.equal(second[0]!.values.flowId, uuidId(2));
  const s = exporter.stats().collectors[0]!;
  assert.deepEqual([s.reconnects, s.connected, s.sentRecords, s.dropped], [1, true, 2, 0]);
  // The sequence number continues across connections: one record was sent before this one.
  const dataMessage = parseStream(tcp.messages(1)).messages.at(-1)!;
  assert.equal(dataMessage.sequence, 1);
});

Deno.test("IpfixExporter sends exporter statistics every statsIntervalMs", async () => {
  await using receiver = await UdpReceiver.open();
  await using exporter = new IpfixExporter(options({
    collectors: [receiver.collector],
    statsIntervalMs: 50,
    lostEvents: () => 3n,
  }));
  exporter.write([rec()]);
  await waitFor(
    () => `two statistics records, got ${receiver.messages.length} messages`,
    () => statsRecords(parseStream(receiver.messages).records).length >= 2,
  );
  const stats = statsRecords(parseStream(receiver.messages).records);
  const last = stats.at(-1)!.values;
  assert.equal(last.exportedFlowRecordTotalCount, 1n);
  assert.equal(last.ignoredPacketTotalCount, 3n);
  assert.ok(
    (last.systemInitTimeMilliseconds as bigint) <= BigInt(Date.now()),
    "exporter start time",
  );
});

Deno.test("IpfixExporter counts UDP send errors and the records they lose", async () => {
  // Sending to the broadcast address without SO_BROADCAST fails (EACCES) on every datagram.
  await using exporter = new IpfixExporter(options({
    collectors: ["udp://255.255.255.255:4739"],
  }));
  exporter.write([rec({ flowId: uuid(1) }), rec({ flowId: uuid(2) })]);
  await waitFor(
    () => JSON.stringify(exporter.stats()),
    () => exporter.stats().collectors[0]!.sendErrors > 0,
  );
  const s = exporter.stats().collectors[0]!;
  assert.deepEqual([s.sentRecords, s.sentMessages, s.dropped, s.queued], [0, 0, 2, 0]);
});

Deno.test("IpfixExporter.write() never throws: malformed records are counted as invalid", async () => {
  await using receiver = await UdpReceiver.open();
  await using exporter = new IpfixExporter(options({ collectors: [receiver.collector] }));
  exporter.write([rec({ flowId: "nope" }), rec({ sourceIp: "not-an-ip" }), rec()]);
  await waitFor(
    () => JSON.stringify(exporter.stats()),
    () => exporter.stats().collectors[0]!.sentRecords === 1,
  );
  const s = exporter.stats();
  assert.equal(s.invalid, 1, "the malformed flow ID");
  assert.equal(s.collectors[0]!.dropped, 1, "the record the encoder rejected");
});

Deno.test("IpfixExporter rejects bad options before opening any socket", () => {
  const cases: [Partial<IpfixExporterOptions>, new (...a: never[]) => Error, RegExp][] = [
    [{ collectors: [] }, Error, /no collector/],
    [{ collectors: ["127.0.0.1"] }, Error, /Cannot parse IPFIX collector "127.0.0.1"/],
    [{ collectors: ["127.0.0.1:4739", "udp://127.0.0.1:4739"] }, Error, /twice/],
    [{ collectors: ["127.0.0.1:4739"], queueSize: 0 }, RangeError, /queue size of 0/],
    [{ collectors: ["127.0.0.1:4739"], statsIntervalMs: -1 }, RangeError, /interval of -1/],
    [{ collectors: ["127.0.0.1:4739"], mtu: 100 }, IpfixError, /MTU of 100/],
    [{ collectors: ["127.0.0.1:4739"], observationDomainId: -1 }, IpfixError, /domain -1/],
  ];
  for (const [over, type, message] of cases) {
    assert.throws(() => new IpfixExporter(options(over)), (err: unknown) => {
      assert.ok(err instanceof type, `${err}`);
      assert.match((err as Error).message, message);
      return true;
    });
  }
});
