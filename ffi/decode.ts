/**
 * The one decode seam: conntrack attributes, read through an {@linkcode AttrReader}, become a
 * plain {@linkcode Flow}. Every `nfct_attr_is_set` guard and every network-to-host byte swap
 * happens here; nothing outside `ffi/` sees byte order or C enums.
 *
 * @module
 */

import type { Counter, Flow, FlowEvent, FlowEventType, ProtoTuple, Tuple } from "../lib/flow.ts";
import { ZERO_COUNTER } from "../lib/flow.ts";
import { formatIp } from "../lib/net.ts";
import { AF, ATTR, type Attr, NFCT_T } from "./constants.ts";

/**
 * Reads attributes of one `struct nf_conntrack`, with the values exactly as the
 * `nfct_get_attr_*` getters return them (so ports arrive in network order, IDs in host order).
 */
export interface AttrReader {
  /** `nfct_attr_is_set(ct, attr) > 0`. */
  isSet(attr: Attr): boolean;
  /** `nfct_get_attr_u8`. */
  u8(attr: Attr): number;
  /** `nfct_get_attr_u16`. */
  u16(attr: Attr): number;
  /** `nfct_get_attr_u32`. */
  u32(attr: Attr): number;
  /** `nfct_get_attr_u64`. */
  u64(attr: Attr): bigint;
  /**
   * The 16 bytes behind `nfct_get_attr` (IPv6 addresses). The array may be reused by the next
   * call for the same attribute: read it before moving to the next entry.
   */
  bytes16(attr: Attr): Uint8Array;
}

/** Whether this machine stores integers little-endian (the getters return memory order). */
export const HOST_IS_LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Converts a u16 as stored in network order and read as a host integer to its value.
 *
 * @param v The raw getter result.
 * @param littleEndian Host byte order (defaults to this machine's).
 * @returns The value.
 */
export function ntohs(v: number, littleEndian: boolean = HOST_IS_LITTLE_ENDIAN): number {
  return littleEndian ? ((v & 0xff) << 8) | ((v >>> 8) & 0xff) : v;
}

/**
 * Formats an IPv4 address stored in network order and read as a host u32.
 *
 * @param v The raw getter result.
 * @param littleEndian Host byte order (defaults to this machine's).
 * @returns Dotted-quad text.
 */
export function ipv4FromRaw(v: number, littleEndian: boolean = HOST_IS_LITTLE_ENDIAN): string {
  return littleEndian
    ? `${v & 255}.${(v >>> 8) & 255}.${(v >>> 16) & 255}.${v >>> 24}`
    : `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

const PORT_PROTOCOLS = new Set([6, 17, 33, 132, 136]); // TCP, UDP, DCCP, SCTP, UDP-Lite
const ICMP_PROTOCOLS = new Set([1, 58]);

/**
 * Maps a `NFCT_T_*` callback type to an event type.
 *
 * @param type The C message type.
 * @returns The event type, or `undefined` for anything else.
 */
export function eventType(type: number): FlowEventType | undefined {
  switch (type) {
    case NFCT_T.NEW:
      return "new";
    case NFCT_T.UPDATE:
      return "update";
    case NFCT_T.DESTROY:
      return "destroy";
    default:
      return undefined;
  }
}

const NO_ADDRESS = new Uint8Array(16);

function v6(r: AttrReader, a: Attr): Uint8Array {
  return r.isSet(a) ? r.bytes16(a) : NO_ADDRESS;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

function readCounter(r: AttrReader, packets: Attr, bytes: Attr): Counter {
  return {
    packets: r.isSet(packets) ? r.u64(packets) : 0n,
    bytes: r.isSet(bytes) ? r.u64(bytes) : 0n,
  };
}

/**
 * Decodes one conntrack entry.
 *
 * @param r Attribute reader positioned on the entry.
 * @returns The flow.
 *
 * @example Usage with a fake reader
 * ```ts
 * import { decodeFlow, type AttrReader } from "./decode.ts";
 * const none: AttrReader = {
 *   isSet: () => false, u8: () => 0, u16: () => 0, u32: () => 0, u64: () => 0n,
 *   bytes16: () => new Uint8Array(16),
 * };
 * if (decodeFlow(none).original.source !== "0.0.0.0") throw new Error("expected zero address");
 * ```
 */
export function decodeFlow(r: AttrReader): Flow {
  const family: 4 | 6 = r.isSet(ATTR.ORIG_L3PROTO) && r.u8(ATTR.ORIG_L3PROTO) === AF.INET6 ? 6 : 4;
  const protocol = r.isSet(ATTR.ORIG_L4PROTO) ? r.u8(ATTR.ORIG_L4PROTO) : 0;
  const port = (a: Attr): number => r.isSet(a) ? ntohs(r.u16(a)) : 0;

  let original: ProtoTuple;
  let reply: ProtoTuple;
  if (PORT_PROTOCOLS.has(protocol)) {
    original = {
      protocol,
      sourcePort: port(ATTR.ORIG_PORT_SRC),
      destinationPort: port(ATTR.ORIG_PORT_DST),
      icmpType: 0,
      icmpCode: 0,
      icmpId: 0,
    };
    reply = {
      protocol,
      sourcePort: port(ATTR.REPL_PORT_SRC),
      destinationPort: port(ATTR.REPL_PORT_DST),
      icmpType: 0,
      icmpCode: 0,
      icmpId: 0,
    };
  } else if (ICMP_PROTOCOLS.has(protocol)) {
    const icmpId = port(ATTR.ICMP_ID);
    original = {
      protocol,
      sourcePort: 0,
      destinationPort: 0,
      icmpType: r.isSet(ATTR.ICMP_TYPE) ? r.u8(ATTR.ICMP_TYPE) : 0,
      icmpCode: r.isSet(ATTR.ICMP_CODE) ? r.u8(ATTR.ICMP_CODE) : 0,
      icmpId,
    };
    // libnetfilter_conntrack exposes the ICMP type/code of the original tuple only.
    reply = { protocol, sourcePort: 0, destinationPort: 0, icmpType: 0, icmpCode: 0, icmpId };
  } else {
    original = { protocol, sourcePort: 0, destinationPort: 0, icmpType: 0, icmpCode: 0, icmpId: 0 };
    reply = original;
  }

  let originalSource: string;
  let originalDestination: string;
  let replySource: string;
  let replyDestination: string;
  if (family === 4) {
    const os = r.isSet(ATTR.ORIG_IPV4_SRC) ? r.u32(ATTR.ORIG_IPV4_SRC) : 0;
    const od = r.isSet(ATTR.ORIG_IPV4_DST) ? r.u32(ATTR.ORIG_IPV4_DST) : 0;
    const rs = r.isSet(ATTR.REPL_IPV4_SRC) ? r.u32(ATTR.REPL_IPV4_SRC) : 0;
    const rd = r.isSet(ATTR.REPL_IPV4_DST) ? r.u32(ATTR.REPL_IPV4_DST) : 0;
    originalSource = ipv4FromRaw(os);
    originalDestination = ipv4FromRaw(od);
    // No NAT (the common case): reuse the strings instead of formatting them again.
    replySource = rs === od ? originalDestination : ipv4FromRaw(rs);
    replyDestination = rd === os ? originalSource : ipv4FromRaw(rd);
  } else {
    const os = v6(r, ATTR.ORIG_IPV6_SRC);
    const od = v6(r, ATTR.ORIG_IPV6_DST);
    const rs = v6(r, ATTR.REPL_IPV6_SRC);
    const rd = v6(r, ATTR.REPL_IPV6_DST);
    originalSource = formatIp(os);
    originalDestination = formatIp(od);
    replySource = sameBytes(rs, od) ? originalDestination : formatIp(rs);
    replyDestination = sameBytes(rd, os) ? originalSource : formatIp(rd);
  }
  const originalTuple: Tuple = {
    source: originalSource,
    destination: originalDestination,
    proto: original,
  };
  const replyTuple: Tuple = { source: replySource, destination: replyDestination, proto: reply };

  const hasCounters = r.isSet(ATTR.ORIG_COUNTER_PACKETS) || r.isSet(ATTR.REPL_COUNTER_PACKETS);
  const flow: {
    -readonly [K in keyof Flow]: Flow[K];
  } = {
    id: r.isSet(ATTR.ID) ? r.u32(ATTR.ID) : 0,
    family,
    original: originalTuple,
    reply: replyTuple,
    mark: r.isSet(ATTR.MARK) ? r.u32(ATTR.MARK) : 0,
    zone: r.isSet(ATTR.ZONE) ? r.u16(ATTR.ZONE) : 0,
    status: r.isSet(ATTR.STATUS) ? r.u32(ATTR.STATUS) : 0,
    countersOriginal: hasCounters
      ? readCounter(r, ATTR.ORIG_COUNTER_PACKETS, ATTR.ORIG_COUNTER_BYTES)
      : ZERO_COUNTER,
    countersReply: hasCounters
      ? readCounter(r, ATTR.REPL_COUNTER_PACKETS, ATTR.REPL_COUNTER_BYTES)
      : ZERO_COUNTER,
    hasCounters,
  };
  if (r.isSet(ATTR.TIMESTAMP_START)) {
    flow.timestamps = r.isSet(ATTR.TIMESTAMP_STOP)
      ? { start: r.u64(ATTR.TIMESTAMP_START), stop: r.u64(ATTR.TIMESTAMP_STOP) }
      : { start: r.u64(ATTR.TIMESTAMP_START) };
  }
  return flow;
}

/**
 * Decodes one callback invocation into an event.
 *
 * @param type The `NFCT_T_*` type passed to the callback.
 * @param r Attribute reader positioned on the entry.
 * @returns The event, or `undefined` for message types that are not NEW/UPDATE/DESTROY.
 */
export function decodeEvent(type: number, r: AttrReader): FlowEvent | undefined {
  const t = eventType(type);
  return t === undefined ? undefined : { type: t, flow: decodeFlow(r) };
}
