/**
 * An {@linkcode AttrReader} backed by a Map of attribute values, returning them exactly as
 * libnetfilter_conntrack's getters would on this host: ports and IPv4 addresses in network order,
 * IDs and counters in host order.
 */

import { ATTR, type Attr } from "../../ffi/constants.ts";
import { type AttrReader, HOST_IS_LITTLE_ENDIAN } from "../../ffi/decode.ts";
import { parseIp } from "../../lib/net.ts";

export type AttrValue = number | bigint | Uint8Array;

export class FakeAttrReader implements AttrReader {
  readonly attrs: Map<Attr, AttrValue>;
  readonly reads: Attr[] = [];

  constructor(attrs: Map<Attr, AttrValue> | [Attr, AttrValue][]) {
    this.attrs = attrs instanceof Map ? attrs : new Map(attrs);
  }

  isSet(a: Attr): boolean {
    return this.attrs.has(a);
  }
  #get(a: Attr): AttrValue {
    this.reads.push(a);
    const v = this.attrs.get(a);
    if (v === undefined) throw new Error(`FakeAttrReader: attribute ${a} read but not set`);
    return v;
  }
  u8(a: Attr): number {
    return Number(this.#get(a));
  }
  u16(a: Attr): number {
    return Number(this.#get(a));
  }
  u32(a: Attr): number {
    return Number(this.#get(a));
  }
  u64(a: Attr): bigint {
    return BigInt(this.#get(a) as number | bigint);
  }
  bytes16(a: Attr): Uint8Array {
    return this.#get(a) as Uint8Array;
  }
}

/** A u16 as it sits in memory in network order, read back as a host integer. */
export function rawPort(port: number): number {
  return HOST_IS_LITTLE_ENDIAN ? ((port & 0xff) << 8) | (port >> 8) : port;
}

/** An IPv4 address as it sits in memory in network order, read back as a host u32. */
export function rawIpv4(text: string): number {
  const b = parseIp(text)!;
  return new DataView(b.buffer).getUint32(0, HOST_IS_LITTLE_ENDIAN);
}

/** The attributes of a typical IPv4 entry. */
export function ipv4Attrs(opts: {
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
  id?: number;
  mark?: number;
  counters?: { op: bigint; ob: bigint; rp: bigint; rb: bigint };
}): Map<Attr, AttrValue> {
  const m = new Map<Attr, AttrValue>([
    [ATTR.ORIG_L3PROTO, 2],
    [ATTR.ORIG_L4PROTO, opts.proto],
    [ATTR.ORIG_IPV4_SRC, rawIpv4(opts.src)],
    [ATTR.ORIG_IPV4_DST, rawIpv4(opts.dst)],
    [ATTR.REPL_IPV4_SRC, rawIpv4(opts.dst)],
    [ATTR.REPL_IPV4_DST, rawIpv4(opts.src)],
    [ATTR.ID, opts.id ?? 1],
  ]);
  if (opts.sport !== undefined) {
    m.set(ATTR.ORIG_PORT_SRC, rawPort(opts.sport));
    m.set(ATTR.REPL_PORT_DST, rawPort(opts.sport));
  }
  if (opts.dport !== undefined) {
    m.set(ATTR.ORIG_PORT_DST, rawPort(opts.dport));
    m.set(ATTR.REPL_PORT_SRC, rawPort(opts.dport));
  }
  if (opts.mark !== undefined) m.set(ATTR.MARK, opts.mark);
  if (opts.counters !== undefined) {
    m.set(ATTR.ORIG_COUNTER_PACKETS, opts.counters.op);
    m.set(ATTR.ORIG_COUNTER_BYTES, opts.counters.ob);
    m.set(ATTR.REPL_COUNTER_PACKETS, opts.counters.rp);
    m.set(ATTR.REPL_COUNTER_BYTES, opts.counters.rb);
  }
  return m;
}
