/**
 * NetBird's userspace ICMP tracker (`uspfilter/conntrack/icmp.go`) as a pure state machine: echo
 * requests (ICMP 8, ICMPv6 128) create an entry keyed by addresses and echo identifier, echo
 * replies (ICMP 0, ICMPv6 129) are accepted against it; every other ICMP message only gets a
 * one-off `start` record.
 *
 * Unlike NetBird, ICMPv6 records carry the real ICMPv6 type (echo request 128, not 8): NetBird's
 * filter maps ICMPv6 echo onto the ICMPv4 numbers before tracking and reports the mapped value.
 *
 * @module
 */

import { BaseEntry, count, IdleTable, timedOut } from "./_base.ts";
import type { IcmpConnKey, TrackedDirection, TrackerBaseOptions } from "./common.ts";
import type { TrackerPacket } from "./packet.ts";

/** NetBird's ICMP defaults, in milliseconds. */
export const ICMP_DEFAULTS: Readonly<{
  timeoutMs: number;
  cleanupIntervalMs: number;
  maxEntries: number;
}> = Object.freeze({ timeoutMs: 30_000, cleanupIntervalMs: 15_000, maxEntries: 2_048 });

/**
 * Whether a packet is an echo request: ICMP type 8 or ICMPv6 type 128.
 *
 * @param packet The packet.
 * @returns `true` for an echo request.
 *
 * @example Usage
 * ```ts
 * import { isEchoRequest } from "./icmp.ts";
 * import { createPacket } from "./packet.ts";
 * const ping6 = createPacket({ source: "fd00::1", destination: "fd00::2", protocol: 58, icmpType: 128 });
 * if (!isEchoRequest(ping6)) throw new Error("ICMPv6 echo request not recognised");
 * ```
 */
export function isEchoRequest(packet: TrackerPacket): boolean {
  return (packet.protocol === 1 && packet.icmpType === 8) ||
    (packet.protocol === 58 && packet.icmpType === 128);
}

/**
 * Whether a packet is an echo reply: ICMP type 0 or ICMPv6 type 129.
 *
 * @param packet The packet.
 * @returns `true` for an echo reply.
 */
export function isEchoReply(packet: TrackerPacket): boolean {
  return (packet.protocol === 1 && packet.icmpType === 0) ||
    (packet.protocol === 58 && packet.icmpType === 129);
}

/** Options of {@linkcode IcmpTracker}. Durations are in milliseconds. */
export interface IcmpTrackerOptions extends TrackerBaseOptions {
  /** Idle timeout; 0 or omitted means 30 s. */
  timeoutMs?: number;
  /** Interval of {@linkcode IcmpTracker.tick} (15 s). */
  cleanupIntervalMs?: number;
  /** Table cap (NB_CONNTRACK_ICMP_MAX, 2048); 0 means no cap. */
  maxEntries?: number;
}

/** A read-only view of one tracked echo flow. */
export interface IcmpConnection {
  /** Flow ID of the start and end records. */
  readonly flowId: string;
  /** Which side sent the echo request. */
  readonly direction: TrackedDirection;
  /** Address that sent the echo request. */
  readonly source: string;
  /** Address the echo request went to. */
  readonly destination: string;
  /** Echo identifier. */
  readonly id: number;
  /** 1 (ICMP) or 58 (ICMPv6). */
  readonly protocol: number;
  /** Type of the request that created the entry (8, or 128 for ICMPv6). */
  readonly icmpType: number;
  /** Code of that request. */
  readonly icmpCode: number;
  /** Monotonic ms of the last packet. */
  readonly lastSeen: number;
  /** Packets sent by this host. */
  readonly packetsTx: number;
  /** Packets received by this host. */
  readonly packetsRx: number;
  /** Bytes (whole IP packets) sent by this host. */
  readonly bytesTx: number;
  /** Bytes (whole IP packets) received by this host. */
  readonly bytesRx: number;
}

class IcmpEntry extends BaseEntry implements IcmpConnection {
  readonly id: number;
  readonly protocol: number;
  readonly icmpType: number;
  readonly icmpCode: number;

  constructor(
    key: string,
    flowId: string,
    direction: TrackedDirection,
    packet: TrackerPacket,
    now: number,
  ) {
    super(key, flowId, direction, packet.source, packet.destination, now);
    this.id = packet.icmpId;
    this.protocol = packet.protocol;
    this.icmpType = packet.icmpType;
    this.icmpCode = packet.icmpCode;
  }
}

function icmpKey(source: string, destination: string, id: number): string {
  return `${source}|${destination}|${id}`;
}

function isIcmp(packet: TrackerPacket): boolean {
  return packet.protocol === 1 || packet.protocol === 58;
}

/**
 * NetBird's userspace ICMP tracker. Packets of other protocols are ignored.
 *
 * Records: `start` when an echo entry is created (rule ID of inbound-created entries), and a
 * one-off `start` (fresh flow ID, one packet, never an end) for every untracked non-echo message;
 * `end` when an echo entry times out at cleanup, is evicted, or (netbird-ct only) at
 * {@linkcode flush} / {@linkcode close}.
 *
 * @example Usage
 * ```ts
 * import { IcmpTracker } from "./icmp.ts";
 * import { createPacket } from "./packet.ts";
 *
 * const records: number[] = [];
 * const tracker = new IcmpTracker({
 *   clock: () => 0,
 *   sink: { write: (batch) => batch.forEach((r) => records.push(r.icmpType)) },
 * });
 * tracker.trackOutbound(
 *   createPacket({ source: "fd00::1", destination: "fd00::2", protocol: 58, icmpType: 128, icmpId: 7 }),
 * );
 * const reply = createPacket({
 *   source: "fd00::2", destination: "fd00::1", protocol: 58, icmpType: 129, icmpId: 7,
 * });
 * if (!tracker.isValidInbound(reply)) throw new Error("reply rejected");
 * if (records[0] !== 128) throw new Error("ICMPv6 echo must keep type 128");
 * ```
 */
export class IcmpTracker {
  #t: IdleTable<IcmpEntry>;

  /**
   * Creates the tracker.
   *
   * @param options Timeout, cap, sink and clocks.
   * @throws {RangeError} When a duration or the cap is negative or not a number.
   */
  constructor(options: IcmpTrackerOptions = {}) {
    this.#t = new IdleTable<IcmpEntry>(
      options,
      ICMP_DEFAULTS,
      (type, entry, ruleId) => this.#record(type, entry, ruleId),
    );
  }

  /** Idle timeout (ms). */
  get timeoutMs(): number {
    return this.#t.timeoutMs;
  }

  /** Interval of {@linkcode IcmpTracker.tick} (ms). */
  get cleanupIntervalMs(): number {
    return this.#t.cleanupIntervalMs;
  }

  /** Table cap; 0 = none. */
  get maxEntries(): number {
    return this.#t.maxEntries;
  }

  /** Number of entries in the table. */
  get size(): number {
    return this.#t.entries.size;
  }

  /**
   * Handles an outbound ICMP/ICMPv6 packet (NetBird's `TrackOutbound`): anything matching an
   * echo flow the peer opened refreshes it, anything else is tracked as this host's.
   *
   * @param packet The packet (this host → peer).
   */
  trackOutbound(packet: TrackerPacket): void {
    if (this.#t.closed || !isIcmp(packet)) return;
    const now = this.#t.emitter.clock();
    const reverse = this.#t.entries.get(icmpKey(packet.destination, packet.source, packet.icmpId));
    if (reverse !== undefined) this.#t.refresh(reverse, "egress", packet.ipLength, now);
    else this.#track(packet, "egress", null, now);
    this.#t.emitter.flush();
  }

  /**
   * Tracks an inbound ICMP/ICMPv6 packet the ACL allowed (NetBird's `TrackInbound`).
   *
   * @param packet The packet (peer → this host).
   * @param options `ruleId` of the allowing rule (goes on the start record).
   */
  trackInbound(packet: TrackerPacket, options: { ruleId?: string | null } = {}): void {
    if (this.#t.closed || !isIcmp(packet)) return;
    this.#track(packet, "ingress", options.ruleId ?? null, this.#t.emitter.clock());
    this.#t.emitter.flush();
  }

  /**
   * Whether an inbound packet is an echo reply (ICMP 0 / ICMPv6 129) to a request this host sent
   * that has not timed out, NetBird's `IsValidInbound`; if so the entry is refreshed and counted.
   *
   * @param packet The packet (peer → this host).
   * @returns `true` to accept the packet without consulting the ACL.
   */
  isValidInbound(packet: TrackerPacket): boolean {
    if (this.#t.closed || !isEchoReply(packet)) return false;
    const now = this.#t.emitter.clock();
    const entry = this.#t.entries.get(icmpKey(packet.destination, packet.source, packet.icmpId));
    if (entry === undefined || timedOut(entry, now, this.timeoutMs)) return false;
    this.#t.refresh(entry, "ingress", packet.ipLength, now);
    return true;
  }

  /**
   * Looks up an echo entry by its key (requester → responder, identifier).
   *
   * @param key Addresses and echo identifier.
   * @returns The entry, or `undefined`.
   */
  getConnection(key: IcmpConnKey): IcmpConnection | undefined {
    return this.#t.entries.get(icmpKey(key.source, key.destination, key.id));
  }

  /**
   * Deletes timed-out entries, each with an `end` record: NetBird's periodic cleanup, run now.
   *
   * @param now Monotonic ms; defaults to the clock.
   */
  cleanup(now: number = this.#t.emitter.clock()): void {
    this.#t.cleanup(now);
  }

  /**
   * Runs {@linkcode IcmpTracker.cleanup} if `cleanupIntervalMs` has passed since the last one (or
   * since construction), NetBird's ticker cadence.
   *
   * @param now Monotonic ms; defaults to the clock.
   * @returns Whether a cleanup ran.
   */
  tick(now: number = this.#t.emitter.clock()): boolean {
    return this.#t.tick(now);
  }

  /** Emits an `end` record for every entry and empties the table (NetBird reports nothing). */
  flush(): void {
    this.#t.flush();
  }

  /** {@linkcode IcmpTracker.flush}, then ignore every later packet. Idempotent. */
  close(): void {
    this.#t.close();
  }

  /** Same as {@linkcode IcmpTracker.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #track(
    packet: TrackerPacket,
    direction: TrackedDirection,
    ruleId: string | null,
    now: number,
  ): void {
    const key = icmpKey(packet.source, packet.destination, packet.icmpId);
    const existing = this.#t.entries.get(key);
    if (existing !== undefined) {
      this.#t.refresh(existing, direction, packet.ipLength, now);
      return;
    }
    if (!isEchoRequest(packet)) {
      // Non-echo messages are not tracked: one start record, one packet, never an end.
      const inbound = direction === "ingress";
      this.#t.emitter.emit({
        type: "start",
        flowId: this.#t.emitter.randomId(),
        direction,
        protocol: packet.protocol,
        source: packet.source,
        destination: packet.destination,
        sourcePort: 0,
        destinationPort: 0,
        icmpType: packet.icmpType,
        icmpCode: packet.icmpCode,
        rxPackets: inbound ? 1 : 0,
        txPackets: inbound ? 0 : 1,
        rxBytes: inbound ? packet.ipLength : 0,
        txBytes: inbound ? 0 : packet.ipLength,
        ruleId,
      });
      return;
    }
    const entry = new IcmpEntry(key, this.#t.emitter.randomId(), direction, packet, now);
    count(entry, direction, packet.ipLength);
    this.#t.insert(entry, ruleId);
  }

  #record(type: "start" | "end", entry: IcmpEntry, ruleId: string | null): void {
    this.#t.emitter.emit({
      type,
      flowId: entry.flowId,
      direction: entry.direction,
      protocol: entry.protocol,
      source: entry.source,
      destination: entry.destination,
      sourcePort: 0,
      destinationPort: 0,
      icmpType: entry.icmpType,
      icmpCode: entry.icmpCode,
      rxPackets: entry.packetsRx,
      txPackets: entry.packetsTx,
      rxBytes: entry.bytesRx,
      txBytes: entry.bytesTx,
      ruleId,
    });
  }
}
