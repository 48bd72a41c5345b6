/**
 * The three userspace trackers behind one entry point, wired the way NetBird's userspace filter
 * (`uspfilter/filter.go`) calls them, plus the filter's drop records.
 *
 * @module
 */

import { Emitter } from "./_base.ts";
import type { TrackedDirection, TrackerBaseOptions } from "./common.ts";
import { IcmpTracker, type IcmpTrackerOptions } from "./icmp.ts";
import type { TrackerPacket } from "./packet.ts";
import { TcpTracker, type TcpTrackerOptions } from "./tcp.ts";
import { UdpTracker, type UdpTrackerOptions } from "./udp.ts";

/** Options of {@linkcode UserspaceTracker}: shared sink and clocks, per-protocol timeouts/caps. */
export interface UserspaceTrackerOptions extends TrackerBaseOptions {
  /** TCP timeouts and cap. */
  tcp?: Omit<TcpTrackerOptions, keyof TrackerBaseOptions>;
  /** UDP timeout and cap. */
  udp?: Omit<UdpTrackerOptions, keyof TrackerBaseOptions>;
  /** ICMP timeout and cap. */
  icmp?: Omit<IcmpTrackerOptions, keyof TrackerBaseOptions>;
}

/** Options of {@linkcode UserspaceTracker.drop}. */
export interface DropOptions {
  /** The denying rule. */
  ruleId?: string | null;
  /**
   * Direction of the dropped packet: `ingress` (default; the only kind NetBird reports) counts
   * it as received, `egress` as sent.
   */
  direction?: TrackedDirection;
}

/** The ACL's decision on an inbound packet that matched no tracked connection. */
export interface InboundVerdict {
  /** `false` drops the packet (a `drop` record); default `true`. */
  allowed?: boolean;
  /** The allowing or denying rule. */
  ruleId?: string | null;
  /** Destination port before DNAT, for allowed packets. */
  dnatOrigPort?: number;
}

/**
 * What {@linkcode UserspaceTracker.inbound} did: `established` (matched a tracked connection,
 * accepted without the ACL), `accepted` (ACL allowed, tracked), `dropped` (ACL denied).
 */
export type InboundResult = "established" | "accepted" | "dropped";

const TCP = 6;
const UDP = 17;
const SCTP = 132;

function isIcmp(protocol: number): boolean {
  return protocol === 1 || protocol === 58;
}

/**
 * TCP, UDP and ICMP tracking for a userspace packet filter, with NetBird's call pattern:
 * every outbound packet goes to {@linkcode trackOutbound}; an inbound packet that
 * {@linkcode isValidInbound} accepts needs no ACL, otherwise the ACL decides between
 * {@linkcode trackInbound} (with the allowing rule) and {@linkcode drop} (with the denying rule).
 * {@linkcode inbound} does that sequence in one call.
 *
 * Nothing runs in the background: call {@linkcode tick} regularly (or {@linkcode cleanup}), and
 * {@linkcode close} at shutdown, which reports the end of every live flow.
 *
 * @example Usage
 * ```ts
 * import { UserspaceTracker } from "./tracker.ts";
 * import { createPacket } from "./packet.ts";
 * import type { FlowRecord } from "../record.ts";
 *
 * const records: FlowRecord[] = [];
 * let now = 0;
 * const tracker = new UserspaceTracker({
 *   clock: () => now,
 *   sink: { write: (batch) => void records.push(...batch) },
 * });
 * const query = createPacket({
 *   source: "100.64.0.1", destination: "100.64.0.2", protocol: 17,
 *   sourcePort: 40000, destinationPort: 53, ipLength: 60,
 * });
 * const answer = createPacket({
 *   source: "100.64.0.2", destination: "100.64.0.1", protocol: 17,
 *   sourcePort: 53, destinationPort: 40000, ipLength: 120,
 * });
 * tracker.trackOutbound(query);
 * if (tracker.inbound(answer) !== "established") throw new Error("answer not matched");
 * const probe = createPacket({
 *   source: "100.64.0.9", destination: "100.64.0.1", protocol: 1, icmpType: 8, ipLength: 84,
 * });
 * tracker.inbound(probe, { allowed: false, ruleId: "deny-icmp" });
 * tracker.close();
 * const types = records.map((r) => r.type).join(",");
 * if (types !== "start,drop,end") throw new Error(types);
 * if (records[2]!.rxBytes !== 120n || records[1]!.icmpType !== 8) throw new Error("counters");
 * ```
 */
export class UserspaceTracker {
  /** The TCP tracker. */
  readonly tcp: TcpTracker;
  /** The UDP tracker. */
  readonly udp: UdpTracker;
  /** The ICMP/ICMPv6 tracker. */
  readonly icmp: IcmpTracker;
  #emitter: Emitter;
  #closed = false;

  /**
   * Creates the trackers.
   *
   * @param options Shared sink and clocks, per-protocol options.
   * @throws {RangeError} When a duration or cap is negative or not a number.
   */
  constructor(options: UserspaceTrackerOptions = {}) {
    const base: TrackerBaseOptions = {};
    if (options.sink !== undefined) base.sink = options.sink;
    if (options.clock !== undefined) base.clock = options.clock;
    if (options.wallClock !== undefined) base.wallClock = options.wallClock;
    if (options.randomId !== undefined) base.randomId = options.randomId;
    this.tcp = new TcpTracker({ ...options.tcp, ...base });
    this.udp = new UdpTracker({ ...options.udp, ...base });
    this.icmp = new IcmpTracker({ ...options.icmp, ...base });
    this.#emitter = new Emitter(base);
  }

  /**
   * Tracks an outbound packet. Protocols other than TCP, UDP, ICMP and ICMPv6 are ignored.
   *
   * @param packet The packet (this host → peer).
   * @returns For TCP/UDP replies to an inbound-DNATed flow, the source port to restore; else 0.
   */
  trackOutbound(packet: TrackerPacket): number {
    if (packet.protocol === TCP) return this.tcp.trackOutbound(packet);
    if (packet.protocol === UDP) return this.udp.trackOutbound(packet);
    if (isIcmp(packet.protocol)) this.icmp.trackOutbound(packet);
    return 0;
  }

  /**
   * Whether an inbound packet belongs to a connection this host opened (see each tracker's
   * `isValidInbound`). Always `false` for other protocols.
   *
   * @param packet The packet (peer → this host).
   * @returns `true` to accept without consulting the ACL.
   */
  isValidInbound(packet: TrackerPacket): boolean {
    if (packet.protocol === TCP) return this.tcp.isValidInbound(packet);
    if (packet.protocol === UDP) return this.udp.isValidInbound(packet);
    if (isIcmp(packet.protocol)) return this.icmp.isValidInbound(packet);
    return false;
  }

  /**
   * Tracks an inbound packet the ACL allowed.
   *
   * @param packet The packet (peer → this host), after DNAT.
   * @param options The allowing rule; the destination port before DNAT (TCP/UDP).
   */
  trackInbound(
    packet: TrackerPacket,
    options: { ruleId?: string | null; dnatOrigPort?: number } = {},
  ): void {
    if (packet.protocol === TCP) this.tcp.trackInbound(packet, options);
    else if (packet.protocol === UDP) this.udp.trackInbound(packet, options);
    else if (isIcmp(packet.protocol)) this.icmp.trackInbound(packet, options);
  }

  /**
   * Reports a packet the ACL denied: a `drop` record with a fresh flow ID, the denying rule, the
   * packet's protocol, ports (TCP/UDP/SCTP) and, unlike NetBird, ICMP type and code, and one
   * packet of the packet's length.
   *
   * @param packet The dropped packet.
   * @param options Denying rule and direction.
   */
  drop(packet: TrackerPacket, options: DropOptions = {}): void {
    if (this.#closed) return;
    const direction = options.direction ?? "ingress";
    const inbound = direction === "ingress";
    const ports = packet.protocol === TCP || packet.protocol === UDP || packet.protocol === SCTP;
    const icmp = isIcmp(packet.protocol);
    this.#emitter.emit({
      type: "drop",
      flowId: this.#emitter.randomId(),
      direction,
      protocol: packet.protocol,
      source: packet.source,
      destination: packet.destination,
      sourcePort: ports ? packet.sourcePort : 0,
      destinationPort: ports ? packet.destinationPort : 0,
      icmpType: icmp ? packet.icmpType : 0,
      icmpCode: icmp ? packet.icmpCode : 0,
      rxPackets: inbound ? 1 : 0,
      txPackets: inbound ? 0 : 1,
      rxBytes: inbound ? packet.ipLength : 0,
      txBytes: inbound ? 0 : packet.ipLength,
      ruleId: options.ruleId ?? null,
    });
    this.#emitter.flush();
  }

  /**
   * The filter's inbound path for a locally destined packet: accept it if it belongs to a
   * tracked connection; otherwise apply `verdict` (track it with the allowing rule, or report it
   * dropped with the denying one).
   *
   * @param packet The packet (peer → this host), after DNAT.
   * @param verdict The ACL's decision for packets of no tracked connection (default: allowed).
   * @returns What happened to the packet.
   */
  inbound(packet: TrackerPacket, verdict: InboundVerdict = {}): InboundResult {
    if (this.isValidInbound(packet)) return "established";
    const ruleId = verdict.ruleId ?? null;
    if (verdict.allowed === false) {
      this.drop(packet, { ruleId });
      return "dropped";
    }
    this.trackInbound(packet, { ruleId, dnatOrigPort: verdict.dnatOrigPort ?? 0 });
    return "accepted";
  }

  /**
   * Runs every tracker's cleanup now.
   *
   * @param now Monotonic ms; defaults to the clock.
   */
  cleanup(now: number = this.#emitter.clock()): void {
    this.tcp.cleanup(now);
    this.udp.cleanup(now);
    this.icmp.cleanup(now);
  }

  /**
   * Runs each tracker's cleanup that is due (TCP every 5 min, UDP and ICMP every 15 s by
   * default). Call it from a timer or the packet loop.
   *
   * @param now Monotonic ms; defaults to the clock.
   * @returns Whether any cleanup ran.
   */
  tick(now: number = this.#emitter.clock()): boolean {
    const tcp = this.tcp.tick(now);
    const udp = this.udp.tick(now);
    const icmp = this.icmp.tick(now);
    return tcp || udp || icmp;
  }

  /** Reports the end of every live flow and empties the tables (see each tracker's `flush`). */
  flush(): void {
    this.tcp.flush();
    this.udp.flush();
    this.icmp.flush();
  }

  /** Ends every live flow, then ignores every later packet. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.tcp.close();
    this.udp.close();
    this.icmp.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
