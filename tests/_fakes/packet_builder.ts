/**
 * Builders of link-layer frames, IP packets and transport headers for capture tests. Everything
 * is big-endian (network order) and written field by field; checksums are left 0 (the decoder
 * does not check them).
 */

import { parseIp } from "../../lib/net.ts";

function address(text: string): Uint8Array {
  const bytes = parseIp(text);
  if (bytes === undefined) throw new Error(`packet_builder: bad address "${text}"`);
  return bytes;
}

/** Concatenates byte arrays. */
export function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const length = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function be16(value: number): number[] {
  return [(value >>> 8) & 0xff, value & 0xff];
}

function be32(value: number): number[] {
  return [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
}

/** A TCP header (20 bytes, no options) plus payload. */
export function tcp(
  sourcePort: number,
  destinationPort: number,
  flags: number,
  payload: Uint8Array | number[] = [],
): Uint8Array {
  return concat(
    be16(sourcePort),
    be16(destinationPort),
    be32(1000), // sequence
    be32(0), // acknowledgment
    [0x50, flags & 0xff], // data offset 5, flags
    be16(65535), // window
    be16(0), // checksum
    be16(0), // urgent pointer
    payload,
  );
}

/** A UDP header plus payload. */
export function udp(
  sourcePort: number,
  destinationPort: number,
  payload: Uint8Array | number[] = [],
): Uint8Array {
  return concat(
    be16(sourcePort),
    be16(destinationPort),
    be16(8 + payload.length),
    be16(0),
    payload,
  );
}

/** An ICMP or ICMPv6 header with identifier/sequence words (echo layout) plus payload. */
export function icmp(
  type: number,
  code: number,
  id: number,
  sequence: number,
  payload: Uint8Array | number[] = [],
): Uint8Array {
  return concat([type, code], be16(0), be16(id), be16(sequence), payload);
}

/** IPv4 header fields. */
export interface Ipv4Init {
  source: string;
  destination: string;
  protocol: number;
  payload: Uint8Array | number[];
  ttl?: number;
  id?: number;
  /** Fragment offset in bytes (a multiple of 8). */
  fragmentOffset?: number;
  moreFragments?: boolean;
  dontFragment?: boolean;
  /** IP options (padded to 4 bytes by the caller). */
  options?: number[];
  /** Overrides the total length field. */
  totalLength?: number;
  /** Overrides the IHL nibble. */
  ihl?: number;
  /** Overrides the version nibble. */
  version?: number;
}

/** An IPv4 packet. */
export function ipv4(init: Ipv4Init): Uint8Array {
  const options = init.options ?? [];
  const headerLength = 20 + options.length;
  const total = init.totalLength ?? headerLength + init.payload.length;
  const flags = (init.dontFragment ? 0x4000 : 0) | (init.moreFragments ? 0x2000 : 0) |
    ((init.fragmentOffset ?? 0) / 8);
  return concat(
    [((init.version ?? 4) << 4) | (init.ihl ?? headerLength / 4), 0],
    be16(total),
    be16(init.id ?? 0x1234),
    be16(flags),
    [init.ttl ?? 64, init.protocol],
    be16(0), // checksum
    address(init.source),
    address(init.destination),
    options,
    init.payload,
  );
}

/** IPv6 header fields. `payload` holds any extension headers, then the transport header. */
export interface Ipv6Init {
  source: string;
  destination: string;
  /** Next header of the fixed header. */
  nextHeader: number;
  payload: Uint8Array | number[];
  hopLimit?: number;
  /** Overrides the payload length field. */
  payloadLength?: number;
}

/** An IPv6 packet. */
export function ipv6(init: Ipv6Init): Uint8Array {
  return concat(
    [0x60, 0, 0, 0],
    be16(init.payloadLength ?? init.payload.length),
    [init.nextHeader, init.hopLimit ?? 64],
    address(init.source),
    address(init.destination),
    init.payload,
  );
}

/**
 * A generic IPv6 extension header (hop-by-hop 0, routing 43, destination options 60) of
 * `8 * units` bytes: next header, length in 8-byte units after the first, then `body` padded with
 * PadN/zeros.
 */
export function extensionHeader(nextHeader: number, units = 1, body: number[] = []): Uint8Array {
  const out = new Uint8Array(units * 8);
  out[0] = nextHeader;
  out[1] = units - 1;
  out.set(body, 2);
  return out;
}

/** An IPv6 routing header (type 0 style, segments left 0) of 24 bytes. */
export function routingHeader(nextHeader: number): Uint8Array {
  return extensionHeader(nextHeader, 3, [0, 0]);
}

/** An IPv6 fragment header. `offset` is in bytes (a multiple of 8). */
export function fragmentHeader(
  nextHeader: number,
  offset: number,
  more: boolean,
  id: number,
): Uint8Array {
  return concat([nextHeader, 0], be16(offset | (more ? 1 : 0)), be32(id));
}

/** An IPv6 authentication header with a 12-byte ICV (24 bytes). */
export function authenticationHeader(nextHeader: number): Uint8Array {
  const out = new Uint8Array(24);
  out[0] = nextHeader;
  out[1] = 24 / 4 - 2;
  return out;
}

/** A VLAN tag: TPID (0x8100 802.1Q, 0x88a8 802.1ad) and VLAN id. */
export interface VlanTag {
  tpid: number;
  vid: number;
}

/** An Ethernet II frame, with optional stacked VLAN tags (outermost first). */
export function ethernet(
  etherType: number,
  payload: Uint8Array | number[],
  vlans: VlanTag[] = [],
): Uint8Array {
  const tags: number[] = [];
  for (const tag of vlans) tags.push(...be16(tag.tpid), ...be16(tag.vid & 0x0fff));
  return concat(
    [0x02, 0, 0, 0, 0, 0x01], // destination MAC
    [0x02, 0, 0, 0, 0, 0x02], // source MAC
    tags,
    be16(etherType),
    payload,
  );
}

/** An 802.3 frame with an LLC/SNAP header carrying `etherType`. */
export function ethernetSnap(etherType: number, payload: Uint8Array | number[]): Uint8Array {
  return concat(
    [0x02, 0, 0, 0, 0, 0x01],
    [0x02, 0, 0, 0, 0, 0x02],
    be16(8 + payload.length), // 802.3 length
    [0xaa, 0xaa, 0x03, 0, 0, 0],
    be16(etherType),
    payload,
  );
}

/** A Linux cooked (SLL) frame: packet type, ARPHRD, address, protocol. */
export function sll(
  protocol: number,
  payload: Uint8Array | number[],
  packetType = 0,
  hardwareType = 1,
): Uint8Array {
  return concat(
    be16(packetType),
    be16(hardwareType),
    be16(6), // address length
    [0x02, 0, 0, 0, 0, 0x02, 0, 0], // address, padded to 8
    be16(protocol),
    payload,
  );
}

/** A Linux cooked v2 (SLL2) frame. */
export function sll2(
  protocol: number,
  payload: Uint8Array | number[],
  packetType = 0,
  hardwareType = 1,
): Uint8Array {
  return concat(
    be16(protocol),
    be16(0), // reserved
    be32(3), // interface index
    be16(hardwareType),
    [packetType, 6], // packet type, address length
    [0x02, 0, 0, 0, 0, 0x02, 0, 0],
    payload,
  );
}

/** A BSD loopback (LINKTYPE_NULL) frame with the family in little-endian order. */
export function nullLoopback(family: number, payload: Uint8Array | number[]): Uint8Array {
  return concat([family & 0xff, (family >>> 8) & 0xff, 0, 0], payload);
}

/** An OpenBSD loopback (LINKTYPE_LOOP) frame, family in network order. */
export function loop(family: number, payload: Uint8Array | number[]): Uint8Array {
  return concat(be32(family), payload);
}
