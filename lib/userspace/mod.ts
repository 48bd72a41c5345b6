/**
 * NetBird's userspace connection tracker (`client/firewall/uspfilter/conntrack`) for netbird-ct:
 * TCP, UDP and ICMP/ICMPv6 state machines that turn a stream of {@linkcode TrackerPacket}s into
 * start/end/drop {@linkcode FlowRecord}s with NetBird's direction, counter and rule-ID rules.
 *
 * The trackers are pure: no timers, no I/O. Time is an injected monotonic clock, and the owner
 * calls `tick()` (NetBird's cleanup cadence) or `cleanup()` itself, so runs are deterministic and
 * nothing leaks. Where netbird-ct differs from NetBird: ICMPv6 echo is reported as type 128 (not
 * 8), drop records carry ICMP type and code, `close()` reports the end of every live flow,
 * eviction at the table cap takes any closed entry first and otherwise the least recently seen,
 * and the TCP tracker can write a connection's end when its entry leaves the table instead of at
 * the close (`tcp: { end: "expire" }`, see {@linkcode TcpEndMode}), so that its counters include
 * the close's final ACK as the kernel's conntrack counters do.
 *
 * ```ts
 * import { createPacket, TcpFlag, UserspaceTracker } from "./mod.ts";
 * import type { FlowRecord } from "../record.ts";
 *
 * const records: FlowRecord[] = [];
 * const tracker = new UserspaceTracker({
 *   clock: () => 0,
 *   sink: { write: (batch) => void records.push(...batch) },
 * });
 * const seg = (out: boolean, tcpFlags: number) =>
 *   createPacket({
 *     source: out ? "100.64.0.1" : "100.64.0.2", destination: out ? "100.64.0.2" : "100.64.0.1",
 *     protocol: 6, sourcePort: out ? 12345 : 80, destinationPort: out ? 80 : 12345,
 *     tcpFlags, ipLength: 60,
 *   });
 * tracker.trackOutbound(seg(true, TcpFlag.SYN));
 * tracker.inbound(seg(false, TcpFlag.SYN | TcpFlag.ACK));
 * tracker.trackOutbound(seg(true, TcpFlag.ACK));
 * tracker.close();
 * const summary = records.map((r) => `${r.type}/${r.direction}/${r.txPackets}/${r.rxPackets}`);
 * if (summary.join(" ") !== "start/egress/1/0 end/egress/2/1") throw new Error(summary.join(" "));
 * ```
 *
 * @module
 */

export type { Direction } from "../overlay.ts";
export type { FlowRecord, PostNat, RecordReason, RecordType, WindowFields } from "../record.ts";
export type { RecordSink } from "../tracker.ts";
export * from "./common.ts";
export * from "./env.ts";
export * from "./icmp.ts";
export * from "./packet.ts";
export * from "./tcp.ts";
export * from "./tracker.ts";
export * from "./udp.ts";
