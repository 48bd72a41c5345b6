/**
 * Packet decoding: from a captured frame to a {@linkcode CapturedPacket}, the plain fields flow
 * tracking needs (addresses, protocol, ports, TCP flags, ICMP type/code/echo id, whole IP packet
 * length, fragment information).
 *
 * {@linkcode decodeLink} strips the link-layer header (Ethernet with 802.1Q/802.1ad tags and
 * LLC/SNAP, Linux cooked SLL and SLL2, BSD loopback, raw IP) and {@linkcode decodeIp} reads the
 * IPv4 or IPv6 header, walking IPv6 extension headers to the transport header. Packets that cannot
 * be decoded are not errors: the functions return `undefined` and count the reason in a
 * {@linkcode DecodeStats}.
 *
 * @module
 */

import { formatIp } from "../net.ts";
import type { CaptureDirection, CaptureRecord } from "./pcap.ts";

/** Link-layer header types (tcpdump.org LINKTYPE_* values) that {@linkcode decodeLink} reads. */
export const LinkType = {
  /** BSD loopback: a 4-byte address family in the capturing host's byte order. */
  NULL: 0,
  /** Ethernet II, with optional 802.1Q/802.1ad VLAN tags, or 802.3 with LLC/SNAP. */
  ETHERNET: 1,
  /** Raw IP as DLT_RAW is numbered on most systems (files written by old libpcap versions). */
  RAW_DLT12: 12,
  /** Raw IP as DLT_RAW is numbered on some BSDs (files written by old libpcap versions). */
  RAW_DLT14: 14,
  /** Raw IP: the packet starts with an IPv4 or IPv6 header. */
  RAW: 101,
  /** OpenBSD loopback: a 4-byte address family in network byte order. */
  LOOP: 108,
  /** Linux cooked capture v1 (`tcpdump -i any`), 16-byte header. */
  LINUX_SLL: 113,
  /** Raw IPv4 only. */
  IPV4: 228,
  /** Raw IPv6 only. */
  IPV6: 229,
  /** Linux cooked capture v2, 20-byte header with the interface index. */
  LINUX_SLL2: 276,
} as const;

/** Why a packet could not be decoded. */
export type SkipReason =
  /** The link type is not one of {@linkcode LinkType}. */
  | "unsupported-link-type"
  /** The frame is shorter than its link-layer header. */
  | "link-truncated"
  /** The frame carries something other than IPv4 or IPv6 (ARP, LLDP, …). */
  | "not-ip"
  /** The captured bytes end inside the IP header or IPv6 extension headers. */
  | "ip-truncated"
  /** The IP version nibble is not 4 or 6, or contradicts the link-layer type. */
  | "bad-ip-version"
  /** The IP header contradicts itself (header length, total length, extension header chain). */
  | "bad-ip-header";

/** All {@linkcode SkipReason}s, in a fixed order. */
export const SKIP_REASONS: readonly SkipReason[] = Object.freeze([
  "unsupported-link-type",
  "link-truncated",
  "not-ip",
  "ip-truncated",
  "bad-ip-version",
  "bad-ip-header",
]);

/** Counters of decoded and skipped packets, filled by the decode functions. */
export interface DecodeStats {
  /** Packets decoded into a {@linkcode CapturedPacket}. */
  decoded: number;
  /** Packets skipped, all reasons together. */
  skipped: number;
  /** Packets skipped, by reason. */
  reasons: Record<SkipReason, number>;
}

/**
 * Creates zeroed {@linkcode DecodeStats}.
 *
 * @returns The counters.
 *
 * @example Usage
 * ```ts
 * import { createDecodeStats, decodeIp } from "./packet.ts";
 * const stats = createDecodeStats();
 * decodeIp(new Uint8Array([0x15, 0, 0, 0]), { stats });
 * if (stats.reasons["bad-ip-version"] !== 1 || stats.skipped !== 1) throw new Error("not counted");
 * ```
 */
export function createDecodeStats(): DecodeStats {
  const reasons = {} as Record<SkipReason, number>;
  for (const reason of SKIP_REASONS) reasons[reason] = 0;
  return { decoded: 0, skipped: 0, reasons };
}

/**
 * One decoded IP packet. Fields that do not apply are 0 (or `false`). Addresses are in canonical
 * text form (`formatIp` of `lib/net.ts`).
 */
export interface CapturedPacket {
  /** Capture time in nanoseconds since the Unix epoch (0 when decoded without a record). */
  readonly timestampNs: bigint;
  /** Index of the capture interface (see `CaptureInterface.index`), 0 by default. */
  readonly interfaceIndex: number;
  /**
   * Direction as the capture recorded it (pcapng `epb_flags`, or the Linux cooked header's packet
   * type), else `"unknown"`.
   */
  readonly direction: CaptureDirection;
  /** IP version. */
  readonly family: 4 | 6;
  /** Source address. */
  readonly source: string;
  /** Destination address. */
  readonly destination: string;
  /**
   * IANA number of the upper-layer protocol: for IPv6 the header after the extension headers
   * (hop-by-hop, routing, destination options, fragment, authentication).
   */
  readonly protocol: number;
  /** TCP/UDP/UDP-Lite/SCTP/DCCP source port, else 0. */
  readonly sourcePort: number;
  /** TCP/UDP/UDP-Lite/SCTP/DCCP destination port, else 0. */
  readonly destinationPort: number;
  /**
   * TCP flags FIN=1, SYN=2, RST=4, PSH=8, ACK=16, URG=32, else 0. ECE and CWR are left out, as
   * NetBird does.
   */
  readonly tcpFlags: number;
  /** ICMP (IPv4 protocol 1) or ICMPv6 (IPv6 protocol 58) type, else 0. */
  readonly icmpType: number;
  /** ICMP or ICMPv6 code, else 0. */
  readonly icmpCode: number;
  /** Identifier of an ICMP echo request/reply (types 8/0) or ICMPv6 echo (128/129), else 0. */
  readonly icmpId: number;
  /**
   * Length of the whole IP packet in bytes, header included, from the IP header (IPv4 total
   * length; IPv6 40 + payload length, or the jumbo payload length). What flow counters add up;
   * it may exceed the bytes captured.
   */
  readonly ipLength: number;
  /** Bytes of the IP packet present in the capture (at most `ipLength`). */
  readonly capturedLength: number;
  /** IPv4 TTL or IPv6 hop limit. */
  readonly ttl: number;
  /** Whether the packet is a fragment (more fragments follow, or the offset is not 0). */
  readonly fragment: boolean;
  /**
   * Offset of the fragment's data in the original packet, in bytes. When it is not 0 the packet
   * has no transport header: ports, flags and ICMP fields are 0.
   */
  readonly fragmentOffset: number;
  /** The "more fragments" flag. */
  readonly moreFragments: boolean;
  /** IPv4 identification, or the IPv6 fragment header's identification (0 if none). */
  readonly fragmentId: number;
  /**
   * Whether the fixed part of the transport header (TCP 20, UDP/UDP-Lite 8, SCTP/DCCP 12, ICMP 8,
   * ICMPv6 4 or 8 for echo) was captured. False for non-first fragments, cut captures (fields are
   * still filled from the bytes present) and protocols whose header is not read.
   */
  readonly hasTransportHeader: boolean;
}

/** Options of {@linkcode decodeLink}. */
export interface DecodeOptions {
  /** Counters to update. */
  stats?: DecodeStats;
}

/** Options of {@linkcode decodeIp}. */
export interface DecodeIpOptions extends DecodeOptions {
  /** Capture time to put in the packet (default 0). */
  timestampNs?: bigint;
  /** Interface index to put in the packet (default 0). */
  interfaceIndex?: number;
  /** Direction to put in the packet (default `"unknown"`). */
  direction?: CaptureDirection;
  /**
   * Length of the IP packet on the wire, when known (the record's original length less the
   * link-layer header). A header claiming more is counted as `bad-ip-header`, and it stands in
   * for a zero IPv4 total length (segmentation offload, BIG TCP).
   */
  wireLength?: number;
}

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100; // 802.1Q
const ETHERTYPE_QINQ = 0x88a8; // 802.1ad
const ETHERTYPE_QINQ_OLD = 0x9100; // pre-standard stacked VLAN
const MAX_VLAN_TAGS = 8;
const ARPHRD_NETLINK = 824;
const MAX_EXTENSION_HEADERS = 16;

interface LinkPayload {
  payload: Uint8Array;
  direction: CaptureDirection;
}

function skip(stats: DecodeStats | undefined, reason: SkipReason): undefined {
  if (stats !== undefined) {
    stats.skipped++;
    stats.reasons[reason]++;
  }
  return undefined;
}

function u16(data: Uint8Array, at: number): number {
  return (data[at]! << 8) | data[at + 1]!;
}

function u32(data: Uint8Array, at: number): number {
  return ((data[at]! << 24) >>> 0) + ((data[at + 1]! << 16) | (data[at + 2]! << 8) | data[at + 3]!);
}

/** Linux `PACKET_*` packet types (SLL/SLL2 headers) as a direction. */
function packetTypeDirection(type: number): CaptureDirection {
  if (type <= 2) return "inbound"; // PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST
  return type === 4 ? "outbound" : "unknown"; // PACKET_OUTGOING; PACKET_OTHERHOST is neither
}

/** Checks that `payload` starts with an IP header of the given version (0: either). */
function ipPayload(
  payload: Uint8Array,
  family: 0 | 4 | 6,
  direction: CaptureDirection,
): LinkPayload | SkipReason {
  if (payload.length === 0) return "ip-truncated";
  const version = payload[0]! >> 4;
  if (version !== 4 && version !== 6) return "bad-ip-version";
  if (family !== 0 && version !== family) return "bad-ip-version";
  return { payload, direction };
}

/** Follows VLAN tags from an EtherType at `at - 2` to the IP payload. */
function etherPayload(
  data: Uint8Array,
  type: number,
  at: number,
  direction: CaptureDirection,
): LinkPayload | SkipReason {
  let tags = 0;
  while (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ || type === ETHERTYPE_QINQ_OLD) {
    if (tags++ === MAX_VLAN_TAGS) return "not-ip";
    if (data.length < at + 4) return "link-truncated";
    type = u16(data, at + 2); // after the 2-byte tag control information
    at += 4;
  }
  if (type === ETHERTYPE_IPV4) return ipPayload(data.subarray(at), 4, direction);
  if (type === ETHERTYPE_IPV6) return ipPayload(data.subarray(at), 6, direction);
  return "not-ip";
}

/** Maps a BSD address family value to an IP version (0 when it is not IP). */
function addressFamily(value: number): 0 | 4 | 6 {
  if (value === 2) return 4; // AF_INET everywhere
  // AF_INET6: Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, macOS 30.
  return value === 10 || value === 24 || value === 28 || value === 30 ? 6 : 0;
}

function unwrapLink(linkType: number, data: Uint8Array): LinkPayload | SkipReason {
  switch (linkType) {
    case LinkType.ETHERNET: {
      if (data.length < 14) return "link-truncated";
      const type = u16(data, 12);
      if (type > 1500) return etherPayload(data, type, 14, "unknown");
      // 802.3 length field: only LLC/SNAP (AA AA 03, then OUI and EtherType) can carry IP.
      if (data.length < 17) return "link-truncated";
      if (data[14] !== 0xaa || data[15] !== 0xaa || data[16] !== 0x03) return "not-ip";
      if (data.length < 22) return "link-truncated";
      return etherPayload(data, u16(data, 20), 22, "unknown");
    }
    case LinkType.RAW:
    case LinkType.RAW_DLT12:
    case LinkType.RAW_DLT14:
      return ipPayload(data, 0, "unknown");
    case LinkType.IPV4:
      return ipPayload(data, 4, "unknown");
    case LinkType.IPV6:
      return ipPayload(data, 6, "unknown");
    case LinkType.LINUX_SLL: {
      if (data.length < 16) return "link-truncated";
      if (u16(data, 2) === ARPHRD_NETLINK) return "not-ip";
      return etherPayload(data, u16(data, 14), 16, packetTypeDirection(u16(data, 0)));
    }
    case LinkType.LINUX_SLL2: {
      if (data.length < 20) return "link-truncated";
      if (u16(data, 8) === ARPHRD_NETLINK) return "not-ip";
      return etherPayload(data, u16(data, 0), 20, packetTypeDirection(data[10]!));
    }
    case LinkType.NULL:
    case LinkType.LOOP: {
      if (data.length < 4) return "link-truncated";
      let value = u32(data, 0);
      // LINKTYPE_NULL is in the capturing host's byte order: a small number either way.
      if (linkType === LinkType.NULL && value > 0xffff) {
        value = data[0]! | (data[1]! << 8) | (data[2]! << 16) | ((data[3]! << 24) >>> 0);
      }
      const family = addressFamily(value);
      if (family === 0) return "not-ip";
      return ipPayload(data.subarray(4), family, "unknown");
    }
    default:
      return "unsupported-link-type";
  }
}

/**
 * Strips the link-layer header of a captured frame.
 *
 * @param linkType The frame's link type (see {@linkcode LinkType}).
 * @param data The captured frame.
 * @param options Counters to update when the frame holds no IP packet (a success is counted by
 * {@linkcode decodeIp}).
 * @returns A view of `data` from the IP header on, or `undefined` when there is no IP packet.
 *
 * @example Usage
 * ```ts
 * import { decodeLink, LinkType } from "./packet.ts";
 * // Ethernet, one 802.1Q tag (VLAN 5), then the first byte of an IPv4 header.
 * const frame = new Uint8Array([
 *   1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00, 0x45,
 * ]);
 * if (decodeLink(LinkType.ETHERNET, frame)?.length !== 1) throw new Error("expected 1 byte");
 * ```
 */
export function decodeLink(
  linkType: number,
  data: Uint8Array,
  options: DecodeOptions = {},
): Uint8Array | undefined {
  const link = unwrapLink(linkType, data);
  if (typeof link === "string") return skip(options.stats, link);
  return link.payload;
}

/** Fixed transport header length per protocol, for `hasTransportHeader`. */
function transportHeaderLength(protocol: number, family: 4 | 6, icmpType: number): number {
  switch (protocol) {
    case 6:
      return 20;
    case 17:
    case 136: // UDP-Lite
      return 8;
    case 132: // SCTP
    case 33: // DCCP
      return 12;
    case 1:
      return family === 4 ? 8 : 0;
    case 58:
      return family === 6 ? (icmpType === 128 || icmpType === 129 ? 8 : 4) : 0;
    default:
      return 0;
  }
}

/**
 * Decodes an IPv4 or IPv6 packet.
 *
 * @param data The packet from its IP header on (trailing bytes beyond the IP length, such as
 * Ethernet padding, are ignored).
 * @param options Counters to update, and the capture details to put in the packet.
 * @returns The packet, or `undefined` when the header cannot be decoded (the reason is counted).
 *
 * @example Usage
 * ```ts
 * import { decodeIp } from "./packet.ts";
 * // IPv4 100.64.0.1 → 100.64.0.2, UDP 5353 → 53, 28 bytes in all.
 * const packet = decodeIp(new Uint8Array([
 *   0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2,
 *   0x14, 0xe9, 0, 53, 0, 8, 0, 0,
 * ]));
 * if (packet?.destinationPort !== 53 || packet.ipLength !== 28) throw new Error("bad decode");
 * ```
 */
export function decodeIp(
  data: Uint8Array,
  options: DecodeIpOptions = {},
): CapturedPacket | undefined {
  const stats = options.stats;
  if (data.length === 0) return skip(stats, "ip-truncated");
  const version = data[0]! >> 4;
  let family: 4 | 6;
  let ipLength: number;
  let ttl: number;
  let protocol: number;
  let source: Uint8Array;
  let destination: Uint8Array;
  let at: number; // start of the transport header
  let fragmentOffset = 0;
  let moreFragments = false;
  let fragmentId = 0;
  const wireLength = options.wireLength;
  if (version === 4) {
    if (data.length < 20) return skip(stats, "ip-truncated");
    const headerLength = (data[0]! & 0x0f) * 4;
    if (headerLength < 20) return skip(stats, "bad-ip-header");
    if (data.length < headerLength) return skip(stats, "ip-truncated");
    ipLength = u16(data, 2);
    if (ipLength === 0) ipLength = wireLength ?? data.length; // offloaded: length not filled in
    if (ipLength < headerLength) return skip(stats, "bad-ip-header");
    if (wireLength !== undefined && ipLength > wireLength) return skip(stats, "bad-ip-header");
    fragmentId = u16(data, 4);
    const fragmentField = u16(data, 6);
    moreFragments = (fragmentField & 0x2000) !== 0;
    fragmentOffset = (fragmentField & 0x1fff) * 8;
    family = 4;
    ttl = data[8]!;
    protocol = data[9]!;
    source = data.subarray(12, 16);
    destination = data.subarray(16, 20);
    at = headerLength;
  } else if (version === 6) {
    if (data.length < 40) return skip(stats, "ip-truncated");
    const payloadLength = u16(data, 4);
    family = 6;
    ttl = data[7]!;
    source = data.subarray(8, 24);
    destination = data.subarray(24, 40);
    protocol = data[6]!;
    ipLength = 40 + payloadLength;
    let jumbo = payloadLength === 0 && protocol !== 59; // 59: no next header, really empty
    let end = jumbo ? data.length : Math.min(ipLength, data.length);
    at = 40;
    for (let count = 0;; count++) {
      if (
        protocol !== 0 && protocol !== 43 && protocol !== 60 && protocol !== 44 && protocol !== 51
      ) {
        break;
      }
      if (count === MAX_EXTENSION_HEADERS) return skip(stats, "bad-ip-header");
      if (end < at + 8) {
        return skip(stats, end < ipLength || jumbo ? "ip-truncated" : "bad-ip-header");
      }
      const next = data[at]!;
      if (protocol === 44) {
        const field = u16(data, at + 2);
        fragmentOffset = field & 0xfff8; // 13-bit offset in 8-byte units, already shifted
        moreFragments = (field & 1) !== 0;
        fragmentId = u32(data, at + 4);
        protocol = next;
        at += 8;
        if (fragmentOffset !== 0) break; // the rest of the chain is in the first fragment
        continue;
      }
      const length = protocol === 51 ? (data[at + 1]! + 2) * 4 : (data[at + 1]! + 1) * 8;
      if (end < at + length) {
        return skip(stats, end < ipLength || jumbo ? "ip-truncated" : "bad-ip-header");
      }
      if (protocol === 0 && jumbo) {
        const jumboLength = findJumboLength(data, at + 2, at + length);
        if (jumboLength !== undefined) {
          ipLength = 40 + jumboLength;
          end = Math.min(ipLength, data.length);
          jumbo = false;
        }
      }
      protocol = next;
      at += length;
    }
    if (jumbo) {
      // Payload length 0 without a jumbo option: offloaded (BIG TCP) or simply wrong.
      ipLength = wireLength ?? data.length;
    }
    if (wireLength !== undefined && ipLength > wireLength) return skip(stats, "bad-ip-header");
    if (at > ipLength) return skip(stats, "bad-ip-header");
  } else {
    return skip(stats, "bad-ip-version");
  }

  const capturedLength = Math.min(ipLength, data.length);
  let sourcePort = 0;
  let destinationPort = 0;
  let tcpFlags = 0;
  let icmpType = 0;
  let icmpCode = 0;
  let icmpId = 0;
  let hasTransportHeader = false;
  if (fragmentOffset === 0) {
    const present = capturedLength - at;
    switch (protocol) {
      case 6: // TCP
      case 17: // UDP
      case 136: // UDP-Lite
      case 132: // SCTP
      case 33: // DCCP
        if (present >= 4) {
          sourcePort = u16(data, at);
          destinationPort = u16(data, at + 2);
        }
        if (protocol === 6 && present >= 14) tcpFlags = data[at + 13]! & 0x3f;
        break;
      case 1:
      case 58:
        if (protocol === (family === 4 ? 1 : 58) && present >= 2) {
          icmpType = data[at]!;
          icmpCode = data[at + 1]!;
          const echo = family === 4 ? icmpType === 8 || icmpType === 0 : icmpType === 128 ||
            icmpType === 129;
          if (echo && present >= 6) icmpId = u16(data, at + 4);
        }
        break;
    }
    const fixed = transportHeaderLength(protocol, family, icmpType);
    hasTransportHeader = fixed > 0 && present >= fixed;
  }
  if (stats !== undefined) stats.decoded++;
  return {
    timestampNs: options.timestampNs ?? 0n,
    interfaceIndex: options.interfaceIndex ?? 0,
    direction: options.direction ?? "unknown",
    family,
    source: formatIp(source),
    destination: formatIp(destination),
    protocol,
    sourcePort,
    destinationPort,
    tcpFlags,
    icmpType,
    icmpCode,
    icmpId,
    ipLength,
    capturedLength,
    ttl,
    fragment: moreFragments || fragmentOffset !== 0,
    fragmentOffset,
    moreFragments,
    fragmentId,
    hasTransportHeader,
  };
}

/** Finds the Jumbo Payload option (type 0xc2, RFC 2675) in hop-by-hop options. */
function findJumboLength(data: Uint8Array, from: number, to: number): number | undefined {
  let at = from;
  while (at < to) {
    const type = data[at]!;
    if (type === 0) { // Pad1
      at++;
      continue;
    }
    if (at + 2 > to) return undefined;
    const length = data[at + 1]!;
    if (type === 0xc2 && length === 4 && at + 6 <= to) return u32(data, at + 2);
    at += 2 + length;
  }
  return undefined;
}

/**
 * Decodes the IP packet in a capture record: {@linkcode decodeLink}, then {@linkcode decodeIp}
 * with the record's time, interface, direction and wire length.
 *
 * @param record The record.
 * @param options Counters to update.
 * @returns The packet, or `undefined` when the record holds no decodable IP packet.
 *
 * @example Usage
 * ```ts
 * import { createDecodeStats, decodePacket, LinkType } from "./packet.ts";
 * const stats = createDecodeStats();
 * const arp = new Uint8Array(42);
 * arp.set([0x08, 0x06], 12);
 * const packet = decodePacket({
 *   linkType: LinkType.ETHERNET, timestampNs: 0n, hasTimestamp: true, data: arp,
 *   originalLength: 42, interfaceIndex: 0, direction: "unknown", offset: 24,
 * }, { stats });
 * if (packet !== undefined || stats.reasons["not-ip"] !== 1) throw new Error("ARP is not IP");
 * ```
 */
export function decodePacket(
  record: CaptureRecord,
  options: DecodeOptions = {},
): CapturedPacket | undefined {
  const link = unwrapLink(record.linkType, record.data);
  if (typeof link === "string") return skip(options.stats, link);
  const headerLength = link.payload.byteOffset - record.data.byteOffset;
  // Writers that leave the original length 0 (or below what was captured) make it unusable.
  const wireLength = record.originalLength >= record.data.length
    ? record.originalLength - headerLength
    : undefined;
  const ipOptions: DecodeIpOptions = {
    timestampNs: record.timestampNs,
    interfaceIndex: record.interfaceIndex,
    direction: record.direction !== "unknown" ? record.direction : link.direction,
  };
  if (options.stats !== undefined) ipOptions.stats = options.stats;
  if (wireLength !== undefined) ipOptions.wireLength = wireLength;
  return decodeIp(link.payload, ipOptions);
}
