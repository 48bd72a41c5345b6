/**
 * The input of the IPFIX encoder: one exported biflow record ({@linkcode IpfixFlow}) or drop
 * record ({@linkcode IpfixDrop}), and a biflow record's construction from a kernel
 * {@linkcode Flow} with NAT detected from the reply tuple.
 *
 * @module
 */

import type { Flow } from "./flow.ts";
import { Protocol } from "./flow.ts";
import { FlowDirection, FlowEndReason } from "./ipfix_elements.ts";
import type { Direction } from "./overlay.ts";
import type { RecordReason, RecordType } from "./record.ts";
import { uuidToBytes } from "./uuid.ts";

/**
 * Why a record is exported, mapped to IANA `flowEndReason` by {@linkcode endReasonCode}:
 *
 * | reason           | code | when                                                          |
 * |------------------|------|---------------------------------------------------------------|
 * | `idle-timeout`   | 0x01 | the exporter expired an idle flow itself                      |
 * | `active-timeout` | 0x02 | interim (`update`) record of a flow that is still open        |
 * | `end`            | 0x03 | conntrack DESTROY: the kernel saw the end of the flow         |
 * | `shutdown`       | 0x04 | netbird-ct stops and flushes its open flows (forced end)      |
 * | `resync`         | 0x05 | the DESTROY was lost (netlink buffer overrun) and a table dump |
 * |                  |      | showed the flow gone: lack of resources                       |
 *
 * `resync` maps to 0x05 rather than 0x04 because the record exists only because the metering
 * process ran out of buffer and lost the real end event; its end time and counters are the last
 * known ones, which is what a collector should be warned about.
 */
export type IpfixEndReason = "idle-timeout" | "active-timeout" | "end" | "shutdown" | "resync";

/** Post-NAT view of a flow (IANA postNAT* / postNAPT* elements). */
export interface IpfixPostNat {
  /** Source address after NAT: the reply tuple's destination. */
  source: string;
  /** Destination address after NAT: the reply tuple's source. */
  destination: string;
  /** Source port after NAPT: the reply tuple's destination port (0 without ports). */
  sourcePort: number;
  /** Destination port after NAPT: the reply tuple's source port (0 without ports). */
  destinationPort: number;
}

/**
 * One exported biflow record. "Original" is the initiator → responder direction of the
 * conntrack entry (pre-NAT tuple), "reply" the other one.
 */
export interface IpfixFlow {
  /** Absent or `flow`: tells it from an {@linkcode IpfixDrop} in an {@linkcode IpfixRecord}. */
  kind?: "flow";
  /** Address family; selects the IPv4 or IPv6 templates. */
  family: 4 | 6;
  /** Initiator address, canonical text of the given family. */
  source: string;
  /** Responder address, canonical text of the given family. */
  destination: string;
  /** IANA protocol number. ICMP (1) and ICMPv6 (58) use the ICMP templates. */
  protocol: number;
  /** Source port (0 for protocols without ports). Not encoded for ICMP. */
  sourcePort: number;
  /** Destination port (0 for protocols without ports). Not encoded for ICMP. */
  destinationPort: number;
  /** ICMP type; encoded as `icmpType * 256 + icmpCode` for ICMP only. */
  icmpType: number;
  /** ICMP code. */
  icmpCode: number;
  /** Packets from the initiator since the previous report of this flow. */
  originalPackets: bigint;
  /** Bytes (whole IP packets, as conntrack counts) from the initiator. */
  originalBytes: bigint;
  /** Packets from the responder. */
  replyPackets: bigint;
  /** Bytes from the responder. */
  replyBytes: bigint;
  /** Flow start, ms since the epoch (fractions are dropped). */
  startMs: number;
  /** Flow end (or end of the reported interval), ms since the epoch. */
  endMs: number;
  /** Who initiated the flow, seen from this host. */
  direction: Direction;
  /** Why the record is exported. */
  endReason: IpfixEndReason;
  /** 64-bit flow ID (see {@linkcode flowIdFromUuid}). */
  flowId: bigint;
  /** Present only when the flow was NATed; selects the NAT templates. */
  postNat?: IpfixPostNat;
}

/**
 * One exported drop record: packets a firewall rule dropped (netbird-ct's `drop` records, from
 * NFLOG or NetBird's userspace ACL). Encoded with the drop templates (`dropTemplates()`), with
 * firewallEvent 3 (flow denied) and forwardingStatus 0x81 (dropped, ACL deny).
 */
export interface IpfixDrop {
  /** Always `drop`. */
  kind: "drop";
  /** Address family; selects the IPv4 or IPv6 templates. */
  family: 4 | 6;
  /** Source of the dropped packet (the would-be initiator), canonical text of the family. */
  source: string;
  /** Its destination. */
  destination: string;
  /** IANA protocol number. ICMP (1) and ICMPv6 (58) use the ICMP templates. */
  protocol: number;
  /** Source port (0 for protocols without ports). Not encoded for ICMP. */
  sourcePort: number;
  /** Destination port (0 for protocols without ports). Not encoded for ICMP. */
  destinationPort: number;
  /** ICMP type; encoded as `icmpType * 256 + icmpCode` for ICMP only. */
  icmpType: number;
  /** ICMP code. */
  icmpCode: number;
  /** Packets dropped (1 for a logged packet). */
  packets: bigint;
  /** Bytes of the dropped packets, whole IP packets. */
  bytes: bigint;
  /** When the drop was seen, ms since the epoch: flowStart- and flowEndMilliseconds. */
  timeMs: number;
  /** Who sent the packet, seen from this host (ingress: a packet to this host). */
  direction: Direction;
  /** 64-bit flow ID (see {@linkcode flowIdFromUuid}). */
  flowId: bigint;
  /** The rule that dropped it (e.g. the NFLOG prefix), or `null`. */
  ruleId: string | null;
}

/** What the encoder takes: biflow records and drop records. */
export type IpfixRecord = IpfixFlow | IpfixDrop;

/**
 * The IANA `flowEndReason` code of a reason (see {@linkcode IpfixEndReason} for the table).
 *
 * @param reason The reason.
 * @returns 0x01–0x05.
 */
export function endReasonCode(reason: IpfixEndReason): number {
  switch (reason) {
    case "idle-timeout":
      return FlowEndReason.IDLE_TIMEOUT;
    case "active-timeout":
      return FlowEndReason.ACTIVE_TIMEOUT;
    case "end":
      return FlowEndReason.END_OF_FLOW;
    case "shutdown":
      return FlowEndReason.FORCED_END;
    case "resync":
      return FlowEndReason.LACK_OF_RESOURCES;
  }
}

/**
 * The `flowDirection` code of a direction: 0 ingress, 1 egress, 0xff unknown (IANA defines no
 * value for unknown; see {@linkcode FlowDirection}).
 *
 * @param direction The direction.
 * @returns 0x00, 0x01 or 0xff.
 */
export function directionCode(direction: Direction): number {
  return direction === "ingress"
    ? FlowDirection.INGRESS
    : direction === "egress"
    ? FlowDirection.EGRESS
    : FlowDirection.UNKNOWN;
}

/**
 * The end reason of a tracker record, or `undefined` for records that are not exported as IPFIX
 * flow records (`start`, `drop`): `end` → `end` (`resync` when synthesized by a resync),
 * `update` and `window` → `active-timeout` (reports of flows that may still be open).
 *
 * @param type The record type.
 * @param reason The record's `reason`, if any.
 * @returns The end reason, or `undefined`.
 */
export function endReasonOf(
  type: RecordType,
  reason?: RecordReason,
): IpfixEndReason | undefined {
  switch (type) {
    case "end":
      return reason === "resync" ? "resync" : "end";
    case "update":
    case "window":
      return "active-timeout";
    default:
      return undefined;
  }
}

/**
 * Derives the 64-bit IPFIX flowId from a netbird-ct flow UUID: its first 8 bytes, big-endian, so
 * the flowId in hex is the UUID's first 16 hex digits (`flow_id` in the JSON lines).
 *
 * @param uuid The flow UUID.
 * @returns The flow ID.
 * @throws {TypeError} When the text is not a UUID.
 *
 * @example Usage
 * ```ts
 * import { flowIdFromUuid } from "./ipfix_flow.ts";
 * const id = flowIdFromUuid("1cc4bb85-0ca9-5a5d-a913-81b334076105");
 * if (id !== 0x1cc4bb850ca95a5dn) throw new Error(id.toString(16));
 * ```
 */
export function flowIdFromUuid(uuid: string): bigint {
  const b = uuidToBytes(uuid);
  return new DataView(b.buffer).getBigUint64(0, false);
}

/** Inputs to {@linkcode ipfixFlowFromFlow} besides the kernel entry. */
export interface IpfixFlowContext {
  /** Who initiated the flow (the tracker's overlay classification). */
  direction: Direction;
  /** Why the record is exported. */
  endReason: IpfixEndReason;
  /** 64-bit flow ID. */
  flowId: bigint;
  /** End time (ms) when the entry has no kernel stop timestamp, e.g. the event receipt time. */
  endMs: number;
  /** Start time (ms) when the entry has no kernel start timestamp; defaults to `endMs`. */
  startMs?: number;
}

const NS_PER_MS = 1_000_000n;

/**
 * Builds the IPFIX record of a kernel conntrack entry.
 *
 * - Tuple and ports/ICMP type and code come from the original (pre-NAT) tuple.
 * - Counters are taken as they are: original → `original*`, reply → `reply*`. For interim
 *   reports pass the entry with the counters reduced by what was already reported.
 * - Times: the kernel's start/stop timestamps (ns, truncated to ms) when present, else
 *   `context.startMs` / `context.endMs`.
 * - NAT: the reply tuple is what the kernel expects back after NAT, so the post-NAT source is the
 *   reply destination and the post-NAT destination the reply source (ports likewise). `postNat`
 *   is set only when one of them differs from the original tuple; ICMP compares addresses only
 *   (the echo ID is not exported).
 *
 * @param flow The kernel entry.
 * @param context Direction, end reason, flow ID and fallback times.
 * @returns The record.
 *
 * @example Usage
 * ```ts
 * import { ipfixFlowFromFlow } from "./ipfix_flow.ts";
 * const l4 = (s: number, d: number) => ({
 *   protocol: 6, sourcePort: s, destinationPort: d, icmpType: 0, icmpCode: 0, icmpId: 0,
 * });
 * const r = ipfixFlowFromFlow({
 *   id: 1, family: 4, mark: 0, zone: 0, status: 0, hasCounters: true,
 *   original: { source: "100.64.0.1", destination: "192.0.2.1", proto: l4(40000, 443) },
 *   reply: { source: "192.0.2.1", destination: "203.0.113.7", proto: l4(443, 61000) },
 *   countersOriginal: { packets: 3n, bytes: 180n },
 *   countersReply: { packets: 2n, bytes: 120n },
 * }, { direction: "egress", endReason: "end", flowId: 1n, endMs: 1_700_000_000_000 });
 * if (r.postNat?.source !== "203.0.113.7" || r.postNat.sourcePort !== 61000) throw new Error();
 * ```
 */
export function ipfixFlowFromFlow(flow: Flow, context: IpfixFlowContext): IpfixFlow {
  const o = flow.original;
  const r = flow.reply;
  const protocol = o.proto.protocol;
  const icmp = protocol === Protocol.ICMP || protocol === Protocol.ICMPV6;
  const ts = flow.timestamps;
  const endMs = ts?.stop !== undefined ? Number(ts.stop / NS_PER_MS) : context.endMs;
  const startMs = ts !== undefined ? Number(ts.start / NS_PER_MS) : context.startMs ?? endMs;
  const out: IpfixFlow = {
    family: flow.family,
    source: o.source,
    destination: o.destination,
    protocol,
    sourcePort: icmp ? 0 : o.proto.sourcePort,
    destinationPort: icmp ? 0 : o.proto.destinationPort,
    icmpType: icmp ? o.proto.icmpType : 0,
    icmpCode: icmp ? o.proto.icmpCode : 0,
    originalPackets: flow.countersOriginal.packets,
    originalBytes: flow.countersOriginal.bytes,
    replyPackets: flow.countersReply.packets,
    replyBytes: flow.countersReply.bytes,
    startMs,
    endMs,
    direction: context.direction,
    endReason: context.endReason,
    flowId: context.flowId,
  };
  const postSourcePort = icmp ? 0 : r.proto.destinationPort;
  const postDestinationPort = icmp ? 0 : r.proto.sourcePort;
  if (
    r.destination !== o.source || r.source !== o.destination ||
    postSourcePort !== out.sourcePort || postDestinationPort !== out.destinationPort
  ) {
    out.postNat = {
      source: r.destination,
      destination: r.source,
      sourcePort: postSourcePort,
      destinationPort: postDestinationPort,
    };
  }
  return out;
}
