/**
 * Fuzz-style tests: random bytes, and valid captures cut short, bit-flipped, overwritten and
 * spliced, fed to the capture and packet parsers with a seeded PRNG. Nothing may throw but a
 * CaptureError, the streaming decoder must agree with the one-shot parser whatever the chunking,
 * and every parse must finish quickly.
 *
 * Set FUZZ_SEED and FUZZ_ITERATIONS to explore beyond the default run.
 */

import assert from "node:assert/strict";
import {
  CaptureDecoder,
  CaptureError,
  type CaptureRecord,
  createDecodeStats,
  decodeIp,
  decodeLink,
  decodePacket,
  LinkType,
  parseCapture,
  type ParsedCapture,
} from "../../lib/capture/mod.ts";
import {
  authenticationHeader,
  concat,
  ethernet,
  ethernetSnap,
  extensionHeader,
  fragmentHeader,
  icmp,
  ipv4,
  ipv6,
  loop,
  nullLoopback,
  routingHeader,
  sll,
  sll2,
  tcp,
  udp,
} from "../_fakes/packet_builder.ts";
import { type PcapngBlock, writePcap, writePcapng } from "../_fakes/pcap_writer.ts";

function envNumber(name: string, fallback: number): number {
  try {
    const value = Deno.env.get(name);
    return value === undefined ? fallback : Number(value);
  } catch {
    return fallback; // no --allow-env
  }
}

const SEED = envNumber("FUZZ_SEED", 0x5eed_c0de);
const CAPTURE_ITERATIONS = envNumber("FUZZ_ITERATIONS", 6000);
const PACKET_ITERATIONS = CAPTURE_ITERATIONS * 4;
/** Bound on the whole run of each test; generous for slow CI machines. */
const TOTAL_BUDGET_MS = 60_000;
/** Bound on one parse of an input of at most a few kilobytes. */
const PARSE_BUDGET_MS = 1_000;
const MAX_RECORD_LENGTH = 1 << 20;

/** mulberry32: a small, seedable PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Rng {
  #next: () => number;
  constructor(seed: number) {
    this.#next = prng(seed);
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.#next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Corpus

const A4 = "100.64.0.1";
const B4 = "100.64.0.2";
const A6 = "fd00::1";
const B6 = "fd00::2";

const IP_PACKETS: Uint8Array[] = [
  ipv4({ source: A4, destination: B4, protocol: 6, payload: tcp(40000, 443, 0x12, [1, 2, 3]) }),
  ipv4({ source: A4, destination: B4, protocol: 17, payload: udp(5353, 53, new Uint8Array(20)) }),
  ipv4({
    source: A4,
    destination: B4,
    protocol: 1,
    payload: icmp(8, 0, 77, 1, new Uint8Array(16)),
  }),
  ipv4({
    source: A4,
    destination: B4,
    protocol: 17,
    fragmentOffset: 64,
    payload: new Uint8Array(24),
  }),
  ipv4({ source: A4, destination: B4, protocol: 6, options: [1, 1, 1, 0], payload: tcp(1, 2, 4) }),
  ipv6({ source: A6, destination: B6, nextHeader: 58, payload: icmp(128, 0, 99, 1) }),
  ipv6({
    source: A6,
    destination: B6,
    nextHeader: 0,
    payload: concat(
      extensionHeader(43),
      routingHeader(60),
      extensionHeader(51),
      authenticationHeader(44),
      fragmentHeader(6, 0, true, 5),
      tcp(1, 2, 2),
    ),
  }),
  ipv6({
    source: A6,
    destination: B6,
    nextHeader: 44,
    payload: concat(fragmentHeader(17, 8, false, 5), [1, 2, 3]),
  }),
];

function framesFor(ip: Uint8Array): [linkType: number, frame: Uint8Array][] {
  const v4 = ip[0]! >> 4 === 4;
  const type = v4 ? 0x0800 : 0x86dd;
  return [
    [LinkType.ETHERNET, ethernet(type, ip)],
    [LinkType.ETHERNET, ethernet(type, ip, [{ tpid: 0x88a8, vid: 1 }, { tpid: 0x8100, vid: 2 }])],
    [LinkType.ETHERNET, ethernetSnap(type, ip)],
    [LinkType.LINUX_SLL, sll(type, ip, 4)],
    [LinkType.LINUX_SLL2, sll2(type, ip, 0)],
    [LinkType.RAW, ip],
    [LinkType.RAW_DLT12, ip],
    [v4 ? LinkType.IPV4 : LinkType.IPV6, ip],
    [LinkType.NULL, nullLoopback(v4 ? 2 : 30, ip)],
    [LinkType.LOOP, loop(v4 ? 2 : 24, ip)],
  ];
}

const FRAMES = IP_PACKETS.flatMap(framesFor);
const LINK_TYPES = [...new Set(FRAMES.map(([linkType]) => linkType)), 147, 65535];

function corpus(rng: Rng): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const linkType of LINK_TYPES.slice(0, -2)) {
    const frames = FRAMES.filter(([l]) => l === linkType).map(([, f]) => f);
    const records = frames.map((data, i) => ({
      seconds: 1_700_000_000 + i,
      fraction: i * 7,
      data,
    }));
    out.push(writePcap({ linkType, littleEndian: true }, records));
    out.push(writePcap({ linkType, littleEndian: false, nanosecond: true }, records));
    out.push(writePcap({ linkType, modified: true }, records.slice(0, 3)));
  }
  for (let n = 0; n < 8; n++) {
    const blocks: PcapngBlock[] = [];
    let interfaces = 0;
    for (let section = 0; section < 1 + rng.int(2); section++) {
      blocks.push({ type: "section", littleEndian: rng.int(2) === 0 });
      interfaces = 0;
      const links: number[] = [];
      for (let i = 0; i < 1 + rng.int(3); i++) {
        const linkType = rng.pick(LINK_TYPES.slice(0, -2));
        links.push(linkType);
        blocks.push({
          type: "interface",
          linkType,
          name: `if${i}`,
          tsresol: rng.pick([6, 9, 3, 0x80 | 10, 0x80 | 20]),
          tsoffset: BigInt(rng.int(1000)),
          snapLength: rng.pick([0, 65535, 128]),
        });
        interfaces++;
      }
      for (let p = 0; p < 6; p++) {
        const id = rng.int(interfaces);
        const frames = FRAMES.filter(([l]) => l === links[id]).map(([, f]) => f);
        const data = rng.pick(frames);
        const kind = rng.int(5);
        if (kind === 0) {
          blocks.push({ type: "obsolete", interfaceId: id, ticks: BigInt(rng.int(1e9)), data });
        } else if (kind === 1 && id === 0) {
          blocks.push({ type: "simple", data: data.subarray(0, 128) });
        } else if (kind === 2) {
          blocks.push({
            type: "raw",
            blockType: rng.pick([4, 5, 0xbad, 0x99]),
            body: rng.bytes(4 * rng.int(5)),
          });
        } else {blocks.push({
            type: "enhanced",
            interfaceId: id,
            ticks: BigInt(rng.int(1e9)) * 1000n,
            data,
            flags: rng.int(4),
          });}
      }
    }
    out.push(writePcapng(blocks));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Mutations

const INTERESTING_32 = [
  0,
  1,
  3,
  4,
  8,
  12,
  16,
  28,
  32,
  0x7f,
  0x80,
  0xff,
  0xffff,
  0x10000,
  0x7fffffff,
  0x80000000,
  0xffffffff,
];

function mutate(rng: Rng, seeds: readonly Uint8Array[]): Uint8Array {
  const base = rng.pick(seeds);
  switch (rng.int(7)) {
    case 0: // truncation
      return base.slice(0, rng.int(base.length + 1));
    case 1: { // bit flips
      const out = base.slice();
      for (let i = 1 + rng.int(8); i > 0; i--) out[rng.int(out.length)]! ^= 1 << rng.int(8);
      return out;
    }
    case 2: { // random bytes overwritten
      const out = base.slice();
      for (let i = 1 + rng.int(4); i > 0; i--) out[rng.int(out.length)] = rng.int(256);
      return out;
    }
    case 3: { // an aligned 32-bit field set to an interesting value, in either byte order
      const out = base.slice();
      const at = rng.int(Math.max(1, (out.length >> 2) - 1)) * 4;
      if (at + 4 <= out.length) {
        new DataView(out.buffer).setUint32(at, rng.pick(INTERESTING_32), rng.int(2) === 0);
      }
      return rng.int(2) === 0 ? out : out.slice(0, rng.int(out.length + 1));
    }
    case 4: { // splice two captures
      const other = rng.pick(seeds);
      return concat(
        base.subarray(0, rng.int(base.length + 1)),
        other.subarray(rng.int(other.length + 1)),
      );
    }
    case 5: // a valid header followed by garbage
      return concat(base.subarray(0, rng.pick([24, 28, 48, 60])), rng.bytes(rng.int(300)));
    default: // pure garbage, sometimes behind a real magic number
      return concat(
        rng.pick([[], [0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d], [
          0x0a,
          0x0d,
          0x0d,
          0x0a,
        ]]),
        rng.bytes(rng.int(400)),
      );
  }
}

// ---------------------------------------------------------------------------------------------
// Checks

function outcome(parse: () => ParsedCapture): ParsedCapture | CaptureError {
  try {
    return parse();
  } catch (error) {
    if (error instanceof CaptureError) return error;
    throw error;
  }
}

function streamed(input: Uint8Array, rng: Rng): ParsedCapture | CaptureError {
  return outcome(() => {
    const decoder = new CaptureDecoder({ maxRecordLength: MAX_RECORD_LENGTH });
    const records: CaptureRecord[] = [];
    let at = 0;
    while (at < input.length) {
      const size = 1 + rng.int(rng.int(2) === 0 ? 8 : 200);
      decoder.push(input.subarray(at, at + size));
      at += size;
      for (let r = decoder.next(); r !== undefined; r = decoder.next()) records.push(r);
    }
    const truncation = decoder.finish();
    return {
      format: decoder.format!,
      interfaces: decoder.interfaces,
      records,
      truncation,
      skippedBlocks: decoder.skippedBlocks,
    };
  });
}

function fingerprint(result: ParsedCapture | CaptureError): unknown {
  if (result instanceof CaptureError) {
    return ["error", result.message, result.offset, result.truncated];
  }
  return [
    result.format,
    result.records.map((
      r,
    ) => [
      r.offset,
      r.linkType,
      r.timestampNs,
      r.data.join(","),
      r.originalLength,
      r.interfaceIndex,
      r.direction,
    ]),
    result.truncation?.message,
    result.interfaces.length,
    result.skippedBlocks,
  ];
}

function checkRecords(input: Uint8Array, parsed: ParsedCapture): void {
  let last = -1;
  const stats = createDecodeStats();
  for (const record of parsed.records) {
    assert.ok(record.offset > last && record.offset < input.length, "record offsets increase");
    last = record.offset;
    assert.ok(record.data.length <= MAX_RECORD_LENGTH);
    assert.ok(record.interfaceIndex < parsed.interfaces.length);
    const packet = decodePacket(record, { stats });
    if (packet === undefined) continue;
    assert.ok(packet.family === 4 || packet.family === 6);
    assert.ok(packet.capturedLength <= packet.ipLength, "captured length within the IP length");
    assert.ok(packet.sourcePort <= 0xffff && packet.destinationPort <= 0xffff);
    assert.ok(packet.tcpFlags <= 0x3f);
    if (packet.fragmentOffset !== 0) {
      assert.equal(packet.sourcePort + packet.destinationPort + packet.icmpId, 0);
      assert.equal(packet.hasTransportHeader, false);
    }
  }
  assert.equal(stats.decoded + stats.skipped, parsed.records.length, "each record counted once");
  assert.equal(Object.values(stats.reasons).reduce((a, b) => a + b, 0), stats.skipped);
}

Deno.test("capture parsers throw only CaptureError on random and mutated captures, and stream the same", () => {
  const rng = new Rng(SEED);
  const seeds = corpus(rng);
  // The corpus itself is valid.
  for (const seed of seeds) {
    const parsed = parseCapture(seed);
    assert.equal(parsed.truncation, undefined);
    assert.ok(parsed.records.length > 0);
  }
  const started = performance.now();
  let iterations = 0;
  const outcomes = { records: 0, errors: 0, truncations: 0 };
  for (; iterations < CAPTURE_ITERATIONS; iterations++) {
    const input = mutate(rng, seeds);
    const before = performance.now();
    const once = outcome(() => parseCapture(input, { maxRecordLength: MAX_RECORD_LENGTH }));
    const elapsed = performance.now() - before;
    assert.ok(elapsed < PARSE_BUDGET_MS, `iteration ${iterations} took ${elapsed} ms`);
    if (once instanceof CaptureError) {
      outcomes.errors++;
      assert.match(once.message, /^Cannot parse (pcap|pcapng|capture) at offset \d+: /);
      assert.ok(once.offset >= 0 && once.offset <= input.length, "error offset within the input");
    } else {
      outcomes.records += once.records.length;
      if (once.truncation !== undefined) outcomes.truncations++;
      checkRecords(input, once);
      // Strict mode throws exactly when the lenient mode reports a truncation.
      const strict = outcome(() =>
        parseCapture(input, { maxRecordLength: MAX_RECORD_LENGTH, strict: true })
      );
      assert.equal(strict instanceof CaptureError, once.truncation !== undefined);
    }
    if (iterations % 4 === 0) {
      assert.deepEqual(
        fingerprint(streamed(input, rng)),
        fingerprint(once),
        `iteration ${iterations}`,
      );
    }
  }
  const total = performance.now() - started;
  assert.equal(iterations, CAPTURE_ITERATIONS);
  assert.ok(total < TOTAL_BUDGET_MS, `the run took ${total} ms`);
  // The mutations reach all three outcomes.
  assert.ok(
    outcomes.errors > 0 && outcomes.truncations > 0 && outcomes.records > 0,
    JSON.stringify(outcomes),
  );
});

Deno.test("packet decoders never throw on random and mutated frames", () => {
  const rng = new Rng(SEED ^ 0xabcdef);
  const started = performance.now();
  let iterations = 0;
  const stats = createDecodeStats();
  for (; iterations < PACKET_ITERATIONS; iterations++) {
    let linkType: number;
    let data: Uint8Array;
    const kind = rng.int(4);
    if (kind === 0) {
      linkType = rng.pick(LINK_TYPES);
      data = rng.bytes(rng.int(120));
    } else {
      const [l, frame] = rng.pick(FRAMES);
      linkType = kind === 3 ? rng.pick(LINK_TYPES) : l;
      data = frame.slice(0, kind === 1 ? rng.int(frame.length + 1) : frame.length);
      for (let i = rng.int(6); i > 0 && data.length > 0; i--) {
        data[rng.int(data.length)]! ^= 1 << rng.int(8);
      }
    }
    const originalLength = rng.int(3) === 0 ? rng.int(200) : data.length;
    const record: CaptureRecord = {
      linkType,
      timestampNs: 0n,
      hasTimestamp: true,
      data,
      originalLength,
      interfaceIndex: 0,
      direction: "unknown",
      offset: 0,
    };
    const packet = decodePacket(record, { stats });
    const payload = decodeLink(linkType, data);
    if (payload !== undefined) {
      const direct = decodeIp(payload);
      assert.ok(direct === undefined || direct.capturedLength <= payload.length);
    }
    decodeIp(data.subarray(rng.int(data.length + 1)));
    if (packet !== undefined) {
      assert.ok(packet.capturedLength <= packet.ipLength);
      assert.ok(packet.capturedLength <= data.length);
    }
  }
  const total = performance.now() - started;
  assert.equal(iterations, PACKET_ITERATIONS);
  assert.equal(stats.decoded + stats.skipped, PACKET_ITERATIONS);
  assert.ok(total < TOTAL_BUDGET_MS, `the run took ${total} ms`);
  assert.ok(stats.decoded > 0 && stats.skipped > 0);
  for (const [reason, count] of Object.entries(stats.reasons)) {
    assert.ok(count > 0, `no packet was skipped for ${reason}`);
  }
});
