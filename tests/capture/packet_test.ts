import assert from "node:assert/strict";
import {
  type CapturedPacket,
  type CaptureRecord,
  createDecodeStats,
  decodeIp,
  decodeLink,
  decodePacket,
  type DecodeStats,
  LinkType,
  SKIP_REASONS,
  type SkipReason,
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

const FIN = 1;
const SYN = 2;
const RST = 4;
const PSH = 8;
const ACK = 16;
const URG = 32;

const V4_TCP = ipv4({
  source: "100.64.0.1",
  destination: "100.64.0.2",
  protocol: 6,
  payload: tcp(40000, 443, SYN | ACK, [1, 2, 3]),
});
const V6_UDP = ipv6({
  source: "fd00::1",
  destination: "2001:db8::53",
  nextHeader: 17,
  payload: udp(5353, 53, [9, 9]),
});

function record(
  linkType: number,
  data: Uint8Array,
  init: Partial<CaptureRecord> = {},
): CaptureRecord {
  return {
    linkType,
    timestampNs: 5n,
    hasTimestamp: true,
    data,
    originalLength: data.length,
    interfaceIndex: 0,
    direction: "unknown",
    offset: 24,
    ...init,
  };
}

/** Decodes with fresh stats and asserts exactly one skip for `reason`. */
function assertSkipped(decode: (stats: DecodeStats) => unknown, reason: SkipReason): void {
  const stats = createDecodeStats();
  assert.equal(decode(stats), undefined, `expected a skip for ${reason}`);
  const expected = createDecodeStats();
  expected.skipped = 1;
  expected.reasons[reason] = 1;
  assert.deepEqual(stats, expected);
}

function decoded(data: Uint8Array): CapturedPacket {
  const stats = createDecodeStats();
  const packet = decodeIp(data, { stats });
  assert.ok(packet !== undefined, `expected a packet, stats ${JSON.stringify(stats.reasons)}`);
  assert.equal(stats.decoded, 1);
  return packet;
}

// ---------------------------------------------------------------------------------------------
// Link layer

Deno.test("decodeLink() finds the IP header behind every supported link-layer header", async (t) => {
  const cases: [name: string, linkType: number, frame: Uint8Array, ip: Uint8Array][] = [
    ["Ethernet IPv4", LinkType.ETHERNET, ethernet(0x0800, V4_TCP), V4_TCP],
    ["Ethernet IPv6", LinkType.ETHERNET, ethernet(0x86dd, V6_UDP), V6_UDP],
    ["802.1Q", LinkType.ETHERNET, ethernet(0x0800, V4_TCP, [{ tpid: 0x8100, vid: 10 }]), V4_TCP],
    [
      "802.1ad + 802.1Q (QinQ)",
      LinkType.ETHERNET,
      ethernet(0x86dd, V6_UDP, [{ tpid: 0x88a8, vid: 100 }, { tpid: 0x8100, vid: 10 }]),
      V6_UDP,
    ],
    [
      "pre-standard 0x9100 stacking",
      LinkType.ETHERNET,
      ethernet(0x0800, V4_TCP, [{ tpid: 0x9100, vid: 1 }, { tpid: 0x8100, vid: 2 }]),
      V4_TCP,
    ],
    ["802.3 LLC/SNAP", LinkType.ETHERNET, ethernetSnap(0x0800, V4_TCP), V4_TCP],
    ["Linux SLL", LinkType.LINUX_SLL, sll(0x0800, V4_TCP), V4_TCP],
    ["Linux SLL with VLAN", LinkType.LINUX_SLL, sll(0x8100, [0, 5, 0x86, 0xdd, ...V6_UDP]), V6_UDP],
    ["Linux SLL2", LinkType.LINUX_SLL2, sll2(0x86dd, V6_UDP), V6_UDP],
    ["raw IP (101) v4", LinkType.RAW, V4_TCP, V4_TCP],
    ["raw IP (101) v6", LinkType.RAW, V6_UDP, V6_UDP],
    ["DLT_RAW 12", LinkType.RAW_DLT12, V4_TCP, V4_TCP],
    ["DLT_RAW 14", LinkType.RAW_DLT14, V6_UDP, V6_UDP],
    ["LINKTYPE_IPV4", LinkType.IPV4, V4_TCP, V4_TCP],
    ["LINKTYPE_IPV6", LinkType.IPV6, V6_UDP, V6_UDP],
    ["BSD loopback IPv4", LinkType.NULL, nullLoopback(2, V4_TCP), V4_TCP],
    ["BSD loopback IPv6 (FreeBSD 28)", LinkType.NULL, nullLoopback(28, V6_UDP), V6_UDP],
    ["BSD loopback, big-endian host", LinkType.NULL, loop(30, V6_UDP), V6_UDP],
    ["OpenBSD loop IPv6 (24)", LinkType.LOOP, loop(24, V6_UDP), V6_UDP],
  ];
  for (const [name, linkType, frame, ip] of cases) {
    await t.step(name, () => {
      const stats = createDecodeStats();
      const payload = decodeLink(linkType, frame, { stats });
      assert.deepEqual(payload, ip);
      assert.equal(payload?.buffer, frame.buffer, "the payload should be a view, not a copy");
      assert.equal(stats.skipped, 0);
    });
  }
});

Deno.test("decodeLink() counts frames that hold no IP packet, by reason", async (t) => {
  const cases: [name: string, linkType: number, frame: Uint8Array, reason: SkipReason][] = [
    ["unknown link type", 147, V4_TCP, "unsupported-link-type"],
    ["short Ethernet", LinkType.ETHERNET, new Uint8Array(13), "link-truncated"],
    ["ARP", LinkType.ETHERNET, ethernet(0x0806, new Uint8Array(28)), "not-ip"],
    ["VLAN tag cut", LinkType.ETHERNET, ethernet(0x8100, [0, 1]), "link-truncated"],
    [
      "nine stacked VLAN tags",
      LinkType.ETHERNET,
      ethernet(0x0800, V4_TCP, new Array(9).fill({ tpid: 0x8100, vid: 1 })),
      "not-ip",
    ],
    ["802.3 without SNAP", LinkType.ETHERNET, ethernet(100, [0x42, 0x42, 0x03, 0, 0]), "not-ip"],
    ["802.3 LLC cut", LinkType.ETHERNET, ethernet(100, [0xaa, 0xaa]), "link-truncated"],
    [
      "SNAP header cut",
      LinkType.ETHERNET,
      ethernet(100, [0xaa, 0xaa, 0x03, 0, 0]),
      "link-truncated",
    ],
    ["EtherType IPv4, no bytes", LinkType.ETHERNET, ethernet(0x0800, []), "ip-truncated"],
    ["EtherType IPv4, IPv6 header", LinkType.ETHERNET, ethernet(0x0800, V6_UDP), "bad-ip-version"],
    ["EtherType IPv6, IPv4 header", LinkType.LINUX_SLL2, sll2(0x86dd, V4_TCP), "bad-ip-version"],
    ["raw, version 5", LinkType.RAW, new Uint8Array([0x50, 0, 0, 0]), "bad-ip-version"],
    ["raw, empty", LinkType.RAW, new Uint8Array(0), "ip-truncated"],
    ["LINKTYPE_IPV6 with IPv4", LinkType.IPV6, V4_TCP, "bad-ip-version"],
    ["short SLL", LinkType.LINUX_SLL, new Uint8Array(15), "link-truncated"],
    ["short SLL2", LinkType.LINUX_SLL2, new Uint8Array(19), "link-truncated"],
    ["SLL netlink", LinkType.LINUX_SLL, sll(0x0800, V4_TCP, 4, 824), "not-ip"],
    ["SLL2 netlink", LinkType.LINUX_SLL2, sll2(0x0800, V4_TCP, 4, 824), "not-ip"],
    ["loopback, AppleTalk", LinkType.NULL, nullLoopback(16, V4_TCP), "not-ip"],
    ["loopback cut", LinkType.LOOP, new Uint8Array(3), "link-truncated"],
  ];
  for (const [name, linkType, frame, reason] of cases) {
    await t.step(
      name,
      () => assertSkipped((stats) => decodeLink(linkType, frame, { stats }), reason),
    );
  }
});

Deno.test("decodePacket() takes the direction from the Linux cooked packet type", () => {
  const directions = [0, 1, 2, 3, 4].map((type) =>
    decodePacket(record(LinkType.LINUX_SLL, sll(0x0800, V4_TCP, type)))?.direction
  );
  assert.deepEqual(directions, ["inbound", "inbound", "inbound", "unknown", "outbound"]);
  const v2 = decodePacket(record(LinkType.LINUX_SLL2, sll2(0x0800, V4_TCP, 4)));
  assert.equal(v2?.direction, "outbound");
  // A direction recorded by the capture (pcapng epb_flags) wins.
  const flagged = decodePacket(
    record(LinkType.LINUX_SLL, sll(0x0800, V4_TCP, 4), { direction: "inbound" }),
  );
  assert.equal(flagged?.direction, "inbound");
});

// ---------------------------------------------------------------------------------------------
// IPv4

Deno.test("decodeIp() decodes an IPv4 TCP segment", () => {
  assert.deepEqual(decoded(V4_TCP), {
    timestampNs: 0n,
    interfaceIndex: 0,
    direction: "unknown",
    family: 4,
    source: "100.64.0.1",
    destination: "100.64.0.2",
    protocol: 6,
    sourcePort: 40000,
    destinationPort: 443,
    tcpFlags: SYN | ACK,
    icmpType: 0,
    icmpCode: 0,
    icmpId: 0,
    ipLength: 43,
    capturedLength: 43,
    ttl: 64,
    fragment: false,
    fragmentOffset: 0,
    moreFragments: false,
    fragmentId: 0x1234,
    hasTransportHeader: true,
  });
});

Deno.test("decodeIp() keeps each TCP flag bit and leaves out ECE and CWR", () => {
  for (const flag of [FIN, SYN, RST, PSH, ACK, URG]) {
    const packet = decoded(
      ipv4({ source: "10.0.0.1", destination: "10.0.0.2", protocol: 6, payload: tcp(1, 2, flag) }),
    );
    assert.equal(packet.tcpFlags, flag);
  }
  const ecn = decoded(
    ipv4({ source: "10.0.0.1", destination: "10.0.0.2", protocol: 6, payload: tcp(1, 2, 0xc2) }),
  );
  assert.equal(ecn.tcpFlags, SYN);
});

Deno.test("decodeIp() reads ports of UDP, UDP-Lite, SCTP and DCCP", () => {
  for (const protocol of [17, 136, 132, 33]) {
    const packet = decoded(
      ipv4({
        source: "10.0.0.1",
        destination: "10.0.0.2",
        protocol,
        payload: [0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0, 0, 0, 0, 0],
      }),
    );
    assert.deepEqual([packet.sourcePort, packet.destinationPort, packet.tcpFlags], [12345, 53, 0]);
    assert.equal(packet.hasTransportHeader, true);
  }
});

Deno.test("decodeIp() reads the ICMP echo id of requests and replies only", () => {
  const echo = (type: number, code = 0): CapturedPacket =>
    decoded(
      ipv4({
        source: "100.64.0.1",
        destination: "100.64.0.9",
        protocol: 1,
        payload: icmp(type, code, 0xbeef, 1, new Uint8Array(56)),
      }),
    );
  const request = echo(8);
  assert.deepEqual(
    [request.icmpType, request.icmpCode, request.icmpId, request.sourcePort, request.ipLength],
    [8, 0, 0xbeef, 0, 84],
  );
  assert.equal(echo(0).icmpId, 0xbeef);
  const unreachable = echo(3, 1);
  assert.deepEqual([unreachable.icmpType, unreachable.icmpCode, unreachable.icmpId], [3, 1, 0]);
});

Deno.test("decodeIp() skips IPv4 options to reach the transport header", () => {
  const packet = decoded(
    ipv4({
      source: "10.0.0.1",
      destination: "10.0.0.2",
      protocol: 17,
      options: [0x94, 0x04, 0, 0, 1, 1, 1, 0], // router alert, NOPs, end of options
      payload: udp(67, 68),
    }),
  );
  assert.deepEqual([packet.sourcePort, packet.destinationPort, packet.ipLength], [67, 68, 36]);
});

Deno.test("decodeIp() marks IPv4 fragments and reads no ports from non-first ones", () => {
  const first = decoded(
    ipv4({
      source: "10.0.0.1",
      destination: "10.0.0.2",
      protocol: 17,
      id: 77,
      moreFragments: true,
      payload: udp(1000, 2000, new Uint8Array(24)),
    }),
  );
  assert.deepEqual(
    [first.fragment, first.fragmentOffset, first.moreFragments, first.fragmentId, first.sourcePort],
    [true, 0, true, 77, 1000],
  );
  assert.equal(first.hasTransportHeader, true);
  const middle = decoded(
    ipv4({
      source: "10.0.0.1",
      destination: "10.0.0.2",
      protocol: 17,
      id: 77,
      fragmentOffset: 32,
      moreFragments: true,
      payload: udp(1000, 2000), // looks like a UDP header, but is data
    }),
  );
  assert.deepEqual(
    [middle.fragment, middle.fragmentOffset, middle.protocol, middle.sourcePort, middle.ipLength],
    [true, 32, 17, 0, 28],
  );
  assert.equal(middle.hasTransportHeader, false);
  const last = decoded(
    ipv4({
      source: "10.0.0.1",
      destination: "10.0.0.2",
      protocol: 6,
      fragmentOffset: 1480,
      payload: [1, 2],
    }),
  );
  assert.deepEqual([last.fragment, last.moreFragments, last.fragmentOffset, last.tcpFlags], [
    true,
    false,
    1480,
    0,
  ]);
  const dontFragment = decoded(
    ipv4({
      source: "10.0.0.1",
      destination: "10.0.0.2",
      protocol: 6,
      dontFragment: true,
      payload: tcp(1, 2, SYN),
    }),
  );
  assert.equal(dontFragment.fragment, false);
});

Deno.test("decodeIp() counts the whole IPv4 packet even when the capture cut it", () => {
  const full = ipv4({
    source: "10.0.0.1",
    destination: "10.0.0.2",
    protocol: 6,
    payload: tcp(80, 50000, ACK | PSH, new Uint8Array(1400)),
  });
  const packet = decoded(full.subarray(0, 54));
  assert.deepEqual([packet.ipLength, packet.capturedLength, packet.tcpFlags], [
    1440,
    54,
    ACK | PSH,
  ]);
  assert.equal(packet.hasTransportHeader, true);
  // Cut inside the TCP header: the ports are there, the flags are not.
  const short = decoded(full.subarray(0, 26));
  assert.deepEqual([short.sourcePort, short.destinationPort, short.tcpFlags], [80, 50000, 0]);
  assert.equal(short.hasTransportHeader, false);
  const headerOnly = decoded(full.subarray(0, 20));
  assert.deepEqual([headerOnly.sourcePort, headerOnly.ipLength], [0, 1440]);
});

Deno.test("decodeIp() ignores bytes after the IPv4 total length (Ethernet padding)", () => {
  const small = ipv4({
    source: "10.0.0.1",
    destination: "10.0.0.2",
    protocol: 17,
    payload: udp(1, 2),
  });
  const padded = concat(small, new Uint8Array(18).fill(0xee));
  const packet = decoded(padded);
  assert.deepEqual([packet.ipLength, packet.capturedLength], [28, 28]);
  const frame = ethernet(0x0800, padded);
  assert.equal(decodePacket(record(LinkType.ETHERNET, frame))?.ipLength, 28);
});

Deno.test("decodeIp() counts bad IPv4 headers", async (t) => {
  const base = {
    source: "10.0.0.1",
    destination: "10.0.0.2",
    protocol: 6,
    payload: tcp(1, 2, SYN),
  };
  const cases: [name: string, data: Uint8Array, reason: SkipReason][] = [
    ["empty", new Uint8Array(0), "ip-truncated"],
    ["version 5", ipv4({ ...base, version: 5 }), "bad-ip-version"],
    ["shorter than 20 bytes", ipv4(base).subarray(0, 19), "ip-truncated"],
    ["IHL 4", ipv4({ ...base, ihl: 4 }), "bad-ip-header"],
    ["IHL beyond the capture", ipv4({ ...base, ihl: 15 }).subarray(0, 40), "ip-truncated"],
    ["total length below the header", ipv4({ ...base, totalLength: 19 }), "bad-ip-header"],
  ];
  for (const [name, data, reason] of cases) {
    await t.step(name, () => assertSkipped((stats) => decodeIp(data, { stats }), reason));
  }
});

Deno.test("decodePacket() rejects an IP length above the wire length and fills in a zero one", () => {
  const packet = ipv4({
    source: "10.0.0.1",
    destination: "10.0.0.2",
    protocol: 6,
    payload: tcp(1, 2, SYN),
  });
  const claimsMore = ipv4({
    source: "10.0.0.1",
    destination: "10.0.0.2",
    protocol: 6,
    payload: tcp(1, 2, SYN),
    totalLength: 1500,
  });
  assertSkipped(
    (stats) => decodePacket(record(LinkType.ETHERNET, ethernet(0x0800, claimsMore)), { stats }),
    "bad-ip-header",
  );
  // Cut by the snapshot length: the original length vouches for the total length.
  const cut = record(LinkType.ETHERNET, ethernet(0x0800, claimsMore).subarray(0, 60), {
    originalLength: 14 + 1500,
  });
  assert.equal(decodePacket(cut)?.ipLength, 1500);
  // A writer that leaves the original length 0 gives no wire length to check against.
  const noOriginal = record(LinkType.ETHERNET, ethernet(0x0800, claimsMore), { originalLength: 0 });
  assert.equal(decodePacket(noOriginal)?.ipLength, 1500);
  // Total length 0 (segmentation offload, BIG TCP): the wire length stands in.
  const zero = ipv4({
    source: "10.0.0.1",
    destination: "10.0.0.2",
    protocol: 6,
    payload: tcp(1, 2, ACK, new Uint8Array(100)),
    totalLength: 0,
  });
  const big = record(LinkType.LINUX_SLL, sll(0x0800, zero).subarray(0, 16 + 60), {
    originalLength: 16 + 70000,
  });
  assert.deepEqual([decodePacket(big)?.ipLength, decodePacket(big)?.capturedLength], [70000, 60]);
  assert.equal(decodeIp(zero)?.ipLength, zero.length);
  assert.equal(decodePacket(record(LinkType.RAW, packet))?.ipLength, 40);
});

Deno.test("decodePacket() carries the record's time, interface and direction", () => {
  const packet = decodePacket(
    record(LinkType.RAW, V6_UDP, { timestampNs: 123n, interfaceIndex: 3, direction: "outbound" }),
  );
  assert.deepEqual(
    [packet?.timestampNs, packet?.interfaceIndex, packet?.direction],
    [123n, 3, "outbound"],
  );
});

// ---------------------------------------------------------------------------------------------
// IPv6

Deno.test("decodeIp() decodes an IPv6 UDP datagram with canonical addresses", () => {
  const packet = decoded(V6_UDP);
  assert.deepEqual(
    [packet.family, packet.source, packet.destination, packet.protocol, packet.sourcePort],
    [6, "fd00::1", "2001:db8::53", 17, 5353],
  );
  assert.deepEqual([packet.destinationPort, packet.ipLength, packet.ttl], [53, 50, 64]);
  const mapped = decoded(
    ipv6({ source: "::ffff:10.0.0.1", destination: "::1", nextHeader: 59, payload: [] }),
  );
  assert.deepEqual([mapped.source, mapped.ipLength, mapped.protocol], ["::ffff:10.0.0.1", 40, 59]);
});

Deno.test("decodeIp() reads the ICMPv6 echo id", () => {
  const echo = (type: number): CapturedPacket =>
    decoded(
      ipv6({
        source: "fd00::1",
        destination: "fd00::2",
        nextHeader: 58,
        payload: icmp(type, 0, 4242, 7),
      }),
    );
  assert.deepEqual([echo(128).icmpType, echo(128).icmpId, echo(128).hasTransportHeader], [
    128,
    4242,
    true,
  ]);
  assert.equal(echo(129).icmpId, 4242);
  assert.deepEqual([echo(135).icmpType, echo(135).icmpId], [135, 0]); // neighbor solicitation
  // ICMPv4's protocol number inside IPv6 is not ICMPv6: no type is read.
  const wrong = decoded(
    ipv6({ source: "fd00::1", destination: "fd00::2", nextHeader: 1, payload: icmp(8, 0, 1, 1) }),
  );
  assert.deepEqual([wrong.protocol, wrong.icmpType, wrong.hasTransportHeader], [1, 0, false]);
});

Deno.test("decodeIp() walks IPv6 extension headers to the transport header", async (t) => {
  const cases: [name: string, nextHeader: number, chain: Uint8Array][] = [
    ["hop-by-hop", 0, extensionHeader(6)],
    ["routing", 43, routingHeader(6)],
    ["destination options (two units)", 60, extensionHeader(6, 2)],
    ["authentication", 51, authenticationHeader(6)],
    [
      "hop-by-hop, destination options, routing, fragment (atomic), destination options",
      0,
      concat(
        extensionHeader(60),
        extensionHeader(43),
        routingHeader(44),
        fragmentHeader(60, 0, false, 9),
        extensionHeader(6),
      ),
    ],
  ];
  for (const [name, nextHeader, chain] of cases) {
    await t.step(name, () => {
      const data = ipv6({
        source: "fd00::1",
        destination: "fd00::2",
        nextHeader,
        payload: concat(chain, tcp(50000, 22, SYN)),
      });
      const packet = decoded(data);
      assert.deepEqual(
        [packet.protocol, packet.sourcePort, packet.destinationPort, packet.tcpFlags],
        [6, 50000, 22, SYN],
      );
      assert.equal(packet.ipLength, data.length);
      assert.equal(packet.fragment, false);
      assert.equal(packet.hasTransportHeader, true);
    });
  }
});

Deno.test("decodeIp() marks IPv6 fragments and reads no ports from non-first ones", () => {
  const first = decoded(
    ipv6({
      source: "fd00::1",
      destination: "fd00::2",
      nextHeader: 0,
      payload: concat(
        extensionHeader(44),
        fragmentHeader(17, 0, true, 0xdeadbeef),
        udp(53, 40000, new Uint8Array(100)),
      ),
    }),
  );
  assert.deepEqual(
    [first.fragment, first.moreFragments, first.fragmentOffset, first.fragmentId, first.protocol],
    [true, true, 0, 0xdeadbeef, 17],
  );
  assert.deepEqual([first.sourcePort, first.destinationPort], [53, 40000]);
  const later = decoded(
    ipv6({
      source: "fd00::1",
      destination: "fd00::2",
      nextHeader: 44,
      // After a non-first fragment header comes data, even if it looks like a header.
      payload: concat(fragmentHeader(60, 1232, false, 7), extensionHeader(17), udp(53, 40000)),
    }),
  );
  assert.deepEqual(
    [later.fragment, later.moreFragments, later.fragmentOffset, later.fragmentId, later.protocol],
    [true, false, 1232, 7, 60],
  );
  assert.deepEqual([later.sourcePort, later.destinationPort, later.hasTransportHeader], [
    0,
    0,
    false,
  ]);
});

Deno.test("decodeIp() reads the IPv6 jumbo payload length from the hop-by-hop header", () => {
  // Hop-by-hop: next header TCP, length 0 (8 bytes), Jumbo Payload option 0xc2 with 4 bytes.
  const hopByHop = [6, 0, 0xc2, 4, 0x00, 0x01, 0x11, 0x70]; // 70000
  const data = ipv6({
    source: "fd00::1",
    destination: "fd00::2",
    nextHeader: 0,
    payloadLength: 0,
    payload: concat(hopByHop, tcp(1, 2, ACK, new Uint8Array(32))),
  });
  const packet = decoded(data);
  assert.deepEqual([packet.ipLength, packet.capturedLength, packet.tcpFlags], [
    70040,
    data.length,
    ACK,
  ]);
  // Payload length 0 without the option: the wire length (or the capture) stands in.
  const offloaded = ipv6({
    source: "fd00::1",
    destination: "fd00::2",
    nextHeader: 6,
    payloadLength: 0,
    payload: tcp(1, 2, ACK, new Uint8Array(32)),
  });
  assert.equal(decoded(offloaded).ipLength, offloaded.length);
  assert.equal(decodeIp(offloaded, { wireLength: 90000 })?.ipLength, 90000);
});

Deno.test("decodeIp() counts bad IPv6 headers and cut extension header chains", async (t) => {
  const tcpPayload = tcp(1, 2, SYN);
  const base = { source: "fd00::1", destination: "fd00::2" };
  const longChain = concat(...new Array(17).fill(0).map(() => extensionHeader(60)), tcpPayload);
  const cases: [name: string, data: Uint8Array, reason: SkipReason][] = [
    [
      "shorter than 40 bytes",
      ipv6({ ...base, nextHeader: 6, payload: tcpPayload }).subarray(0, 39),
      "ip-truncated",
    ],
    [
      "capture cut inside a hop-by-hop header",
      ipv6({ ...base, nextHeader: 0, payload: concat(extensionHeader(6, 2), tcpPayload) }).subarray(
        0,
        50,
      ),
      "ip-truncated",
    ],
    [
      "capture cut inside a fragment header",
      ipv6({ ...base, nextHeader: 44, payload: concat(fragmentHeader(6, 0, true, 1), tcpPayload) })
        .subarray(0, 44),
      "ip-truncated",
    ],
    [
      "extension header beyond the payload length",
      ipv6({
        ...base,
        nextHeader: 43,
        payload: concat(extensionHeader(6, 4), tcpPayload),
        payloadLength: 16,
      }),
      "bad-ip-header",
    ],
    [
      "more than 16 extension headers",
      ipv6({ ...base, nextHeader: 60, payload: longChain }),
      "bad-ip-header",
    ],
  ];
  for (const [name, data, reason] of cases) {
    await t.step(name, () => assertSkipped((stats) => decodeIp(data, { stats }), reason));
  }
});

Deno.test("createDecodeStats() has a zero counter for every reason", () => {
  const stats = createDecodeStats();
  assert.deepEqual(Object.keys(stats.reasons), [...SKIP_REASONS]);
  assert.ok(Object.values(stats.reasons).every((n) => n === 0));
  assert.deepEqual([stats.decoded, stats.skipped], [0, 0]);
});

Deno.test("decodePacket() counts each record once, as decoded or skipped", () => {
  const stats = createDecodeStats();
  const records = [
    record(LinkType.ETHERNET, ethernet(0x0800, V4_TCP)),
    record(LinkType.ETHERNET, ethernet(0x0806, new Uint8Array(28))),
    record(LinkType.LINUX_SLL2, sll2(0x86dd, V6_UDP)),
    record(999, V4_TCP),
    record(LinkType.RAW, new Uint8Array([0x45, 0, 0])),
  ];
  const packets = records.map((r) => decodePacket(r, { stats }));
  assert.deepEqual(packets.map((p) => p?.protocol), [6, undefined, 17, undefined, undefined]);
  assert.equal(stats.decoded, 2);
  assert.equal(stats.skipped, 3);
  assert.deepEqual(
    Object.entries(stats.reasons).filter(([, n]) => n > 0),
    [["unsupported-link-type", 1], ["not-ip", 1], ["ip-truncated", 1]],
  );
});
