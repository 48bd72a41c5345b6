/**
 * Flow records: what netbird-ct emits for each relevant conntrack event, and their JSON-lines form.
 *
 * @module
 */

import type { Flow } from "./flow.ts";
import { Protocol } from "./flow.ts";
import type { Direction } from "./overlay.ts";

/**
 * `start` for a conntrack NEW, `end` for a DESTROY, `update` for an interim record of a long-lived
 * flow (`--active-timeout`), `drop` for a packet a firewall rule dropped, `window` for an aggregate of one aggregation window (`--window`;
 * NetBird sends these with type UNKNOWN).
 */
export type RecordType = "start" | "end" | "update" | "drop" | "window";

/** The per-window fields of an aggregated record (NetBird's aggregation). */
export interface WindowFields {
  /** Start of the aggregation window. */
  windowStart: Date;
  /** End of the aggregation window. */
  windowEnd: Date;
  /** Start records merged into this one. */
  numOfStarts: number;
  /** End records merged into this one. */
  numOfEnds: number;
  /** Drop records merged into this one. */
  numOfDrops: number;
  /** Interim (update) records merged into this one. */
  numOfUpdates: number;
}

/**
 * Why a record was synthesized rather than taken from a kernel event: `resync` (a table dump
 * after lost events showed the flow had started or ended), `startup` (the flow was already open
 * when netbird-ct started).
 */
export type RecordReason = "resync" | "startup";

/** Addresses and ports after NAT, as the reply tuple shows them (initiator → responder). */
export interface PostNat {
  /** Initiator address after source NAT. */
  source: string;
  /** Responder address after destination NAT. */
  destination: string;
  /** Initiator port after source NAT (0 for protocols without ports). */
  sourcePort: number;
  /** Responder port after destination NAT (0 for protocols without ports). */
  destinationPort: number;
}

/** One traffic event, NetBird's `EventFields` plus event ID, timestamp and conntrack id. */
export interface FlowRecord {
  /** Random UUIDv4 assigned on intake. */
  eventId: string;
  /** When netbird-ct received the event (UTC). */
  timestamp: Date;
  /** UUIDv5 shared by the start and end of one connection. */
  flowId: string;
  /** `start` or `end`. */
  type: RecordType;
  /** Who initiated the connection, seen from this host. */
  direction: Direction;
  /** IANA protocol number. */
  protocol: number;
  /** Initiator address (original tuple). */
  sourceIp: string;
  /** Responder address (original tuple). */
  destIp: string;
  /** TCP/UDP/SCTP source port, else 0. */
  sourcePort: number;
  /** TCP/UDP/SCTP destination port, else 0. */
  destPort: number;
  /** ICMP type, else 0. */
  icmpType: number;
  /** ICMP code, else 0. */
  icmpCode: number;
  /** Packets received by this host. */
  rxPackets: bigint;
  /** Packets sent by this host. */
  txPackets: bigint;
  /** Bytes received by this host. */
  rxBytes: bigint;
  /** Bytes sent by this host. */
  txBytes: bigint;
  /** Kernel conntrack id. */
  conntrackId: number;
  /** Set only on synthesized records. */
  reason?: RecordReason;
  /** Resource (routed network) of a non-overlay source address; set by the flow logger. */
  sourceResourceId?: string | null;
  /** Resource (routed network) of a non-overlay destination address; set by the flow logger. */
  destResourceId?: string | null;
  /** Set on aggregated (`window`) records only. */
  window?: WindowFields;
  /**
   * ID of the ACL rule that allowed (start of an inbound-created flow) or denied (drop) the
   * flow, NetBird's `RuleID`. Set by the userspace tracker only. Not in JSON lines.
   */
  ruleId?: string | null;
  /** Set when NAT changed the connection (from the kernel's reply tuple). Not in JSON lines. */
  postNat?: PostNat;
  /** The kernel's creation time of the entry (`nf_conntrack_timestamp=1`). Not in JSON lines. */
  flowStart?: Date;
  /** The kernel's destruction time of the entry, on end records. Not in JSON lines. */
  flowEnd?: Date;
}

/** Inputs to {@linkcode buildRecord} besides the flow itself. */
export interface RecordContext {
  /** Event ID to use. */
  eventId: string;
  /** Flow ID to use. */
  flowId: string;
  /** Receipt time. */
  timestamp: Date;
  /** Set only when the record is synthesized. */
  reason?: RecordReason;
}

/**
 * Builds the record of one relevant event, following NetBird's field rules: ports for
 * TCP/UDP/SCTP, ICMP type/code for ICMP and ICMPv6, everything else 0.
 *
 * @param type `start` or `end`.
 * @param flow The decoded entry.
 * @param direction Result of the overlay classification.
 * @param context IDs and timestamp.
 * @returns The record.
 */
export function buildRecord(
  type: RecordType,
  flow: Flow,
  direction: Direction,
  context: RecordContext,
): FlowRecord {
  const proto = flow.original.proto;
  let sourcePort = 0;
  let destPort = 0;
  let icmpType = 0;
  let icmpCode = 0;
  switch (proto.protocol) {
    case Protocol.TCP:
    case Protocol.UDP:
    case Protocol.SCTP:
      sourcePort = proto.sourcePort;
      destPort = proto.destinationPort;
      break;
    case Protocol.ICMP:
    case Protocol.ICMPV6:
      icmpType = proto.icmpType;
      icmpCode = proto.icmpCode;
      break;
  }
  // NetBird's mapping (see mapCounters), inlined: this runs once per event.
  const ingress = direction === "ingress";
  const rx = ingress ? flow.countersOriginal : flow.countersReply;
  const tx = ingress ? flow.countersReply : flow.countersOriginal;
  const record: FlowRecord = {
    eventId: context.eventId,
    timestamp: context.timestamp,
    flowId: context.flowId,
    type,
    direction,
    protocol: proto.protocol,
    sourceIp: flow.original.source,
    destIp: flow.original.destination,
    sourcePort,
    destPort,
    icmpType,
    icmpCode,
    rxPackets: rx.packets,
    txPackets: tx.packets,
    rxBytes: rx.bytes,
    txBytes: tx.bytes,
    conntrackId: flow.id,
  };
  if (context.reason !== undefined) record.reason = context.reason;
  const r = flow.reply;
  const o = flow.original;
  if (
    r.source !== o.destination || r.destination !== o.source ||
    r.proto.sourcePort !== o.proto.destinationPort || r.proto.destinationPort !== o.proto.sourcePort
  ) {
    record.postNat = {
      source: r.destination,
      destination: r.source,
      sourcePort: r.proto.destinationPort,
      destinationPort: r.proto.sourcePort,
    };
  }
  const ts = flow.timestamps;
  if (ts !== undefined) {
    record.flowStart = new Date(Number(ts.start / 1_000_000n));
    if (ts.stop !== undefined) record.flowEnd = new Date(Number(ts.stop / 1_000_000n));
  }
  return record;
}

/**
 * Serializes a record as one JSON line (with the trailing newline). Keys are snake_case and never
 * renamed; counters are JSON numbers (exact below 2^53, i.e. 8 PiB). `source_resource_id`,
 * `dest_resource_id` and `rule_id` are strings or `null`. Aggregated records add the window keys; synthesized
 * records end with `reason`.
 *
 * @param r The record.
 * @returns One line of JSON.
 *
 * @example Usage
 * ```ts
 * import { toJsonLine } from "./record.ts";
 * const line = toJsonLine({
 *   eventId: "e", timestamp: new Date(0), flowId: "f", type: "start", direction: "egress",
 *   protocol: 6, sourceIp: "100.64.0.1", destIp: "100.64.0.2", sourcePort: 1, destPort: 2,
 *   icmpType: 0, icmpCode: 0, rxPackets: 0n, txPackets: 1n, rxBytes: 0n, txBytes: 60n,
 *   conntrackId: 7,
 * });
 * if (JSON.parse(line).tx_bytes !== 60) throw new Error(line);
 * ```
 */
export function toJsonLine(r: FlowRecord): string {
  // Built by hand: every string here is a UUID, an address, an ISO time or a fixed word, none of
  // which needs JSON escaping (resource IDs, from a user's file, are escaped), and this runs once
  // per event.
  const w = r.window;
  return `{"event_id":"${r.eventId}","timestamp":"${
    isoTime(r.timestamp)
  }","flow_id":"${r.flowId}",` +
    `"type":"${r.type}","direction":"${r.direction}","protocol":${r.protocol},` +
    `"source_ip":"${r.sourceIp}","dest_ip":"${r.destIp}","source_port":${r.sourcePort},` +
    `"dest_port":${r.destPort},"icmp_type":${r.icmpType},"icmp_code":${r.icmpCode},` +
    `"rx_packets":${Number(r.rxPackets)},"tx_packets":${Number(r.txPackets)},` +
    `"rx_bytes":${Number(r.rxBytes)},"tx_bytes":${Number(r.txBytes)},` +
    `"conntrack_id":${r.conntrackId},` +
    `"source_resource_id":${jsonString(r.sourceResourceId)},` +
    `"dest_resource_id":${jsonString(r.destResourceId)},` +
    `"rule_id":${jsonString(r.ruleId)}` +
    (w === undefined ? "" : `,"window_start":"${w.windowStart.toISOString()}",` +
      `"window_end":"${w.windowEnd.toISOString()}","num_of_starts":${w.numOfStarts},` +
      `"num_of_ends":${w.numOfEnds},"num_of_drops":${w.numOfDrops},` +
      `"num_of_updates":${w.numOfUpdates}`) +
    (r.reason === undefined ? "}\n" : `,"reason":"${r.reason}"}\n`);
}

/** Resource IDs come from a user's file: escape them properly. */
function jsonString(v: string | null | undefined): string {
  return v === undefined || v === null ? "null" : JSON.stringify(v);
}

let lastTime = NaN;
let lastIso = "";

/**
 * `toISOString`, remembered for the last time value: records of one batch share their timestamp.
 * Keyed by the value, not the Date object, so a Date changed in place is not written stale.
 */
function isoTime(d: Date): string {
  const time = d.getTime();
  if (time !== lastTime) {
    lastIso = d.toISOString();
    lastTime = time;
  }
  return lastIso;
}
