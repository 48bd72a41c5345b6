/**
 * The input of the userspace trackers: one decoded IP packet, reduced to the fields connection
 * tracking needs. Packet capture (or any other packet source) produces it; the trackers never
 * see raw bytes.
 *
 * @module
 */

/** TCP header flag bits, as on the wire (and as NetBird's `TCPFin`…`TCPUrg`). */
export const TcpFlag = {
  /** No more data from sender. */
  FIN: 0x01,
  /** Synchronize sequence numbers (connection open). */
  SYN: 0x02,
  /** Reset the connection. */
  RST: 0x04,
  /** Push function. */
  PSH: 0x08,
  /** Acknowledgment field significant. */
  ACK: 0x10,
  /** Urgent pointer field significant. */
  URG: 0x20,
} as const;

/**
 * One packet as the userspace trackers see it.
 *
 * Addresses are compared as text, so they must be in canonical form (what `formatIp` of
 * `lib/net.ts` produces: dotted quad for IPv4, RFC 5952 for IPv6, `::ffff:a.b.c.d` for
 * IPv4-mapped IPv6). As in NetBird, an IPv4 address and its IPv4-mapped IPv6 form are different
 * addresses. Fields that do not apply to the protocol are 0.
 */
export interface TrackerPacket {
  /** IP version of the packet. */
  readonly family: 4 | 6;
  /** Source address, canonical text. */
  readonly source: string;
  /** Destination address, canonical text. */
  readonly destination: string;
  /** IANA protocol number of the transport header (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …). */
  readonly protocol: number;
  /** TCP/UDP/SCTP source port (after DNAT translation, for inbound packets), else 0. */
  readonly sourcePort: number;
  /** TCP/UDP/SCTP destination port (after DNAT translation, for inbound packets), else 0. */
  readonly destinationPort: number;
  /** TCP flags (see {@linkcode TcpFlag}), else 0. */
  readonly tcpFlags: number;
  /**
   * ICMP or ICMPv6 type as on the wire. ICMPv6 types are NOT mapped to ICMPv4 values (NetBird's
   * filter maps echo request 128 → 8 and reply 129 → 0; the trackers here take the real types).
   */
  readonly icmpType: number;
  /** ICMP or ICMPv6 code, else 0. */
  readonly icmpCode: number;
  /**
   * Echo identifier of an ICMP/ICMPv6 echo request or reply (for ICMPv6 the first two bytes
   * after the 4-byte ICMPv6 header, as NetBird reads it), else 0.
   */
  readonly icmpId: number;
  /**
   * Length of the whole IP packet in bytes, header included (IPv4 total length, IPv6 40 +
   * payload length): what the counters add up, as in NetBird. Named as in `lib/capture`'s
   * `CapturedPacket`, which is therefore assignable to this type as is.
   */
  readonly ipLength: number;
}

/** What {@linkcode createPacket} needs; everything but the addresses and protocol defaults to 0. */
export interface PacketInit {
  /** IP version; inferred from `source` (`:` means IPv6) when omitted. */
  family?: 4 | 6;
  /** Source address, canonical text. */
  source: string;
  /** Destination address, canonical text. */
  destination: string;
  /** IANA protocol number. */
  protocol: number;
  /** Source port. */
  sourcePort?: number;
  /** Destination port. */
  destinationPort?: number;
  /** TCP flags. */
  tcpFlags?: number;
  /** ICMP/ICMPv6 type. */
  icmpType?: number;
  /** ICMP/ICMPv6 code. */
  icmpCode?: number;
  /** ICMP/ICMPv6 echo identifier. */
  icmpId?: number;
  /** Whole IP packet length in bytes. */
  ipLength?: number;
}

/**
 * Builds a {@linkcode TrackerPacket}, filling omitted fields with 0.
 *
 * @param init The fields to set.
 * @returns The packet.
 *
 * @example Usage
 * ```ts
 * import { createPacket, TcpFlag } from "./packet.ts";
 * const syn = createPacket({
 *   source: "100.64.0.1", destination: "100.64.0.2", protocol: 6,
 *   sourcePort: 12345, destinationPort: 80, tcpFlags: TcpFlag.SYN, ipLength: 60,
 * });
 * if (syn.family !== 4 || syn.icmpId !== 0) throw new Error("unexpected defaults");
 * ```
 */
export function createPacket(init: PacketInit): TrackerPacket {
  return {
    family: init.family ?? (init.source.includes(":") ? 6 : 4),
    source: init.source,
    destination: init.destination,
    protocol: init.protocol,
    sourcePort: init.sourcePort ?? 0,
    destinationPort: init.destinationPort ?? 0,
    tcpFlags: init.tcpFlags ?? 0,
    icmpType: init.icmpType ?? 0,
    icmpCode: init.icmpCode ?? 0,
    icmpId: init.icmpId ?? 0,
    ipLength: init.ipLength ?? 0,
  };
}
