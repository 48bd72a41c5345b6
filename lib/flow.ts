/**
 * The conntrack domain model: what one kernel connection-tracking entry looks like once it has left
 * C. Everything here is plain data (strings, numbers, bigints); byte order, pointers and C enums
 * stay in `ffi/`.
 *
 * The shape follows the kernel's own split: an entry has an original tuple (initiator → responder,
 * before NAT) and a reply tuple (what the responder's packets look like, after NAT), plus one
 * counter per direction.
 *
 * @module
 */

/** IANA protocol numbers the tracker cares about by name. Any other number is passed through. */
export const Protocol = {
  /** Reserved; conntrack never reports it and NetBird ignores such entries. */
  UNKNOWN: 0,
  /** ICMP for IPv4. */
  ICMP: 1,
  /** TCP. */
  TCP: 6,
  /** UDP. */
  UDP: 17,
  /** ICMP for IPv6. */
  ICMPV6: 58,
  /** SCTP. */
  SCTP: 132,
} as const;

/** The layer 4 part of a tuple. Fields that do not apply to the protocol are 0. */
export interface ProtoTuple {
  /** IANA protocol number. */
  readonly protocol: number;
  /** TCP/UDP/SCTP source port, 0 otherwise. */
  readonly sourcePort: number;
  /** TCP/UDP/SCTP destination port, 0 otherwise. */
  readonly destinationPort: number;
  /** ICMP/ICMPv6 type, 0 otherwise. */
  readonly icmpType: number;
  /** ICMP/ICMPv6 code, 0 otherwise. */
  readonly icmpCode: number;
  /** ICMP/ICMPv6 echo identifier, 0 otherwise. */
  readonly icmpId: number;
}

/** One direction of a connection: addresses in canonical text form plus the layer 4 part. */
export interface Tuple {
  /** Source address, canonical text (`100.64.0.1`, `fd00::1`). */
  readonly source: string;
  /** Destination address, canonical text. */
  readonly destination: string;
  /** Layer 4 details. */
  readonly proto: ProtoTuple;
}

/** Packets and bytes seen in one direction. Zero unless `nf_conntrack_acct` was on at creation. */
export interface Counter {
  /** Packet count. */
  readonly packets: bigint;
  /** Byte count (whole IP packets, as the kernel counts). */
  readonly bytes: bigint;
}

/** Kernel timestamps of an entry, in nanoseconds since the epoch (`nf_conntrack_timestamp=1`). */
export interface FlowTimestamps {
  /** When the entry was created. */
  readonly start: bigint;
  /** When the entry was destroyed; absent while the entry lives. */
  readonly stop?: bigint;
}

/** A conntrack entry as decoded from the kernel. */
export interface Flow {
  /** Kernel conntrack id (`conntrack -L -o id`). */
  readonly id: number;
  /** Address family: 4 or 6. */
  readonly family: 4 | 6;
  /** Initiator → responder, as the first packet looked (pre-NAT). */
  readonly original: Tuple;
  /** Responder → initiator, as the kernel expects replies (post-NAT). */
  readonly reply: Tuple;
  /** Connection mark (`ct mark`). */
  readonly mark: number;
  /** Conntrack zone. */
  readonly zone: number;
  /** `IPS_*` status bits; see {@linkcode isAssured} and friends. */
  readonly status: number;
  /** Counters of the original direction. */
  readonly countersOriginal: Counter;
  /** Counters of the reply direction. */
  readonly countersReply: Counter;
  /** Whether the kernel sent counters at all (DESTROY with accounting on). */
  readonly hasCounters: boolean;
  /** Kernel timestamps, when `nf_conntrack_timestamp` is on. */
  readonly timestamps?: FlowTimestamps;
}

/** The kind of a conntrack event. */
export type FlowEventType = "new" | "update" | "destroy";

/** One conntrack event: what happened, and the entry it happened to. */
export interface FlowEvent {
  /** NEW, UPDATE or DESTROY. */
  readonly type: FlowEventType;
  /** The entry. */
  readonly flow: Flow;
}

/** `IPS_*` status bits from `linux/netfilter/nf_conntrack_common.h`. */
export const Status = {
  /** IPS_EXPECTED: an expected (related) connection. */
  EXPECTED: 1 << 0,
  /** IPS_SEEN_REPLY: packets went both ways. */
  SEEN_REPLY: 1 << 1,
  /** IPS_ASSURED: never expire early. */
  ASSURED: 1 << 2,
  /** IPS_CONFIRMED: the entry left the unconfirmed list. */
  CONFIRMED: 1 << 3,
  /** IPS_SRC_NAT: source NAT applies. */
  SRC_NAT: 1 << 4,
  /** IPS_DST_NAT: destination NAT applies. */
  DST_NAT: 1 << 5,
  /** IPS_DYING: the entry is being destroyed. */
  DYING: 1 << 9,
  /** IPS_OFFLOAD: the flow is offloaded to a flowtable (counters freeze). */
  OFFLOAD: 1 << 14,
} as const;

/**
 * Reports whether the kernel marked the entry as assured.
 *
 * @param status The `status` field of a {@linkcode Flow}.
 * @returns `true` if `IPS_ASSURED` is set.
 *
 * @example Usage
 * ```ts
 * import { isAssured, Status } from "./flow.ts";
 * if (!isAssured(Status.ASSURED)) throw new Error("expected assured");
 * ```
 */
export function isAssured(status: number): boolean {
  return (status & Status.ASSURED) !== 0;
}

/**
 * Reports whether source or destination NAT applies to the entry.
 *
 * @param status The `status` field of a {@linkcode Flow}.
 * @returns `true` if `IPS_SRC_NAT` or `IPS_DST_NAT` is set.
 */
export function isNatted(status: number): boolean {
  return (status & (Status.SRC_NAT | Status.DST_NAT)) !== 0;
}

/** Zero packets, zero bytes. */
export const ZERO_COUNTER: Counter = Object.freeze({ packets: 0n, bytes: 0n });
