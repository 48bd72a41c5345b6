/**
 * Writes capture files with the test writer (tests/_fakes/pcap_writer.ts), then reads them back
 * from disk through a stream, the way `netbird-ct replay` will.
 */

import assert from "node:assert/strict";
import {
  type CapturedPacket,
  CaptureReader,
  createDecodeStats,
  decodePacket,
  type DecodeStats,
  LinkType,
} from "../../lib/capture/mod.ts";
import {
  concat,
  ethernet,
  fragmentHeader,
  icmp,
  ipv4,
  ipv6,
  sll2,
  tcp,
  udp,
} from "../_fakes/packet_builder.ts";
import {
  type PcapngBlock,
  type PcapRecordInit,
  writePcap,
  writePcapng,
} from "../_fakes/pcap_writer.ts";

const SYN = 2;
const ACK = 16;
const FIN = 1;
const PSH = 8;

interface Step {
  /** Microseconds since the epoch. */
  us: bigint;
  ip: Uint8Array;
}

/** A short conversation: TCP open/data/close, DNS, ping, an IPv6 fragmented datagram, ARP. */
function conversation(): Step[] {
  const a = "100.64.0.1";
  const b = "100.64.0.2";
  const t0 = 1_700_000_000_000_000n;
  const v4 = (
    source: string,
    destination: string,
    protocol: number,
    payload: Uint8Array,
  ): Uint8Array => ipv4({ source, destination, protocol, payload });
  const steps: Step[] = [
    { us: t0, ip: v4(a, b, 6, tcp(40000, 22, SYN)) },
    { us: t0 + 100n, ip: v4(b, a, 6, tcp(22, 40000, SYN | ACK)) },
    { us: t0 + 200n, ip: v4(a, b, 6, tcp(40000, 22, ACK)) },
    { us: t0 + 300n, ip: v4(a, b, 6, tcp(40000, 22, PSH | ACK, new Uint8Array(512))) },
    { us: t0 + 400n, ip: v4(a, "100.64.0.53", 17, udp(53000, 53, new Uint8Array(30))) },
    { us: t0 + 500n, ip: v4(a, b, 1, icmp(8, 0, 0x4242, 1, new Uint8Array(56))) },
    { us: t0 + 600n, ip: v4(b, a, 1, icmp(0, 0, 0x4242, 1, new Uint8Array(56))) },
    {
      us: t0 + 700n,
      ip: ipv6({
        source: "fd00::1",
        destination: "fd00::2",
        nextHeader: 44,
        payload: concat(fragmentHeader(17, 0, true, 99), udp(4000, 5000, new Uint8Array(1000))),
      }),
    },
    {
      us: t0 + 800n,
      ip: ipv6({
        source: "fd00::1",
        destination: "fd00::2",
        nextHeader: 44,
        payload: concat(fragmentHeader(17, 1008, false, 99), new Uint8Array(200)),
      }),
    },
    { us: t0 + 900n, ip: v4(a, b, 6, tcp(40000, 22, FIN | ACK)) },
    { us: t0 + 1000n, ip: v4(b, a, 6, tcp(22, 40000, FIN | ACK)) },
  ];
  // Repeat the conversation so the files span many read chunks.
  const out: Step[] = [];
  for (let round = 0n; round < 500n; round++) {
    for (const step of steps) out.push({ us: step.us + round * 10_000n, ip: step.ip });
  }
  return out;
}

function frame(ip: Uint8Array, vlan: boolean): Uint8Array {
  return ethernet(ip[0]! >> 4 === 4 ? 0x0800 : 0x86dd, ip, vlan ? [{ tpid: 0x8100, vid: 7 }] : []);
}

const ARP = ethernet(0x0806, new Uint8Array(28));

async function readPackets(
  path: string,
): Promise<{ packets: CapturedPacket[]; stats: DecodeStats }> {
  const stats = createDecodeStats();
  const file = await Deno.open(path, { read: true });
  const reader = new CaptureReader(file.readable);
  const packets: CapturedPacket[] = [];
  for await (const record of reader) {
    const packet = decodePacket(record, { stats });
    if (packet !== undefined) packets.push(packet);
  }
  assert.equal(reader.truncation, undefined);
  return { packets, stats };
}

function key(p: CapturedPacket): string {
  return [
    p.timestampNs,
    p.source,
    p.destination,
    p.protocol,
    p.sourcePort,
    p.destinationPort,
    p.tcpFlags,
    p.icmpId,
    p.ipLength,
    p.fragmentOffset,
  ].join(" ");
}

Deno.test("fixture pcap and pcapng files written to disk read back as the same packets", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netbird-ct-capture-" });
  try {
    const steps = conversation();
    const records: PcapRecordInit[] = [];
    for (const [i, step] of steps.entries()) {
      records.push({
        seconds: Number(step.us / 1_000_000n),
        fraction: Number(step.us % 1_000_000n),
        data: frame(step.ip, i % 2 === 0),
      });
      if (i % 11 === 0) records.push({ seconds: 0, fraction: 0, data: ARP });
    }
    const pcapPath = `${dir}/fixture.pcap`;
    await Deno.writeFile(
      pcapPath,
      writePcap({ linkType: LinkType.ETHERNET, littleEndian: false }, records),
    );

    // The same packets in a pcapng with two interfaces: Ethernet (µs) and SLL2 (ns).
    const blocks: PcapngBlock[] = [
      { type: "section" },
      { type: "interface", linkType: LinkType.ETHERNET, name: "eth0" },
      { type: "interface", linkType: LinkType.LINUX_SLL2, name: "any", tsresol: 9 },
    ];
    for (const [i, step] of steps.entries()) {
      if (i % 2 === 0) {
        blocks.push({
          type: "enhanced",
          interfaceId: 0,
          ticks: step.us,
          data: frame(step.ip, true),
        });
      } else {
        const protocol = step.ip[0]! >> 4 === 4 ? 0x0800 : 0x86dd;
        blocks.push({
          type: "enhanced",
          interfaceId: 1,
          ticks: step.us * 1000n,
          data: sll2(protocol, step.ip),
        });
      }
      if (i % 11 === 0) blocks.push({ type: "enhanced", interfaceId: 0, ticks: 0n, data: ARP });
      if (i % 100 === 0) blocks.push({ type: "raw", blockType: 5, body: new Array(16).fill(0) });
    }
    const pcapngPath = `${dir}/fixture.pcapng`;
    await Deno.writeFile(pcapngPath, writePcapng(blocks));

    const fromPcap = await readPackets(pcapPath);
    const fromPcapng = await readPackets(pcapngPath);
    const arps = Math.ceil(steps.length / 11);
    for (const { packets, stats } of [fromPcap, fromPcapng]) {
      assert.equal(packets.length, steps.length);
      assert.equal(stats.decoded, steps.length);
      assert.equal(stats.reasons["not-ip"], arps);
      assert.equal(stats.skipped, arps);
    }
    assert.deepEqual(fromPcap.packets.map(key), fromPcapng.packets.map(key));

    const first = fromPcap.packets.slice(0, 11);
    assert.deepEqual(first.map((p) => [p.protocol, p.sourcePort, p.destinationPort, p.tcpFlags]), [
      [6, 40000, 22, SYN],
      [6, 22, 40000, SYN | ACK],
      [6, 40000, 22, ACK],
      [6, 40000, 22, PSH | ACK],
      [17, 53000, 53, 0],
      [1, 0, 0, 0],
      [1, 0, 0, 0],
      [17, 4000, 5000, 0],
      [17, 0, 0, 0],
      [6, 40000, 22, FIN | ACK],
      [6, 22, 40000, FIN | ACK],
    ]);
    assert.deepEqual(first.map((p) => p.ipLength), [
      40,
      40,
      40,
      552,
      58,
      84,
      84,
      1056,
      248,
      40,
      40,
    ]);
    assert.deepEqual(first.map((p) => p.icmpId), [0, 0, 0, 0, 0, 0x4242, 0x4242, 0, 0, 0, 0]);
    assert.deepEqual(first.map((p) => p.fragment), [
      false,
      false,
      false,
      false,
      false,
      false,
      false,
      true,
      true,
      false,
      false,
    ]);
    assert.equal(first[0]!.timestampNs, 1_700_000_000_000_000_000n);
    assert.equal(first[10]!.timestampNs, 1_700_000_000_001_000_000n);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a fixture file cut at every length in its last record reads as a truncation", async () => {
  const records: PcapRecordInit[] = [
    {
      seconds: 1,
      fraction: 0,
      data: frame(
        ipv4({ source: "10.0.0.1", destination: "10.0.0.2", protocol: 6, payload: tcp(1, 2, SYN) }),
        false,
      ),
    },
    {
      seconds: 2,
      fraction: 0,
      data: frame(
        ipv4({
          source: "10.0.0.2",
          destination: "10.0.0.1",
          protocol: 6,
          payload: tcp(2, 1, SYN | ACK),
        }),
        false,
      ),
    },
  ];
  const whole = writePcap({ linkType: LinkType.ETHERNET }, records);
  const lastAt = 24 + 16 + records[0]!.data.length;
  const dir = await Deno.makeTempDir({ prefix: "netbird-ct-capture-" });
  try {
    for (let length = lastAt + 1; length < whole.length; length++) {
      const path = `${dir}/cut.pcap`;
      await Deno.writeFile(path, whole.subarray(0, length));
      const file = await Deno.open(path, { read: true });
      const reader = new CaptureReader(file.readable);
      let count = 0;
      for await (const _ of reader) count++;
      assert.equal(count, 1, `cut at ${length}`);
      assert.equal(reader.truncation?.offset, lastAt, `cut at ${length}`);
      assert.equal(reader.truncation?.truncated, true);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
