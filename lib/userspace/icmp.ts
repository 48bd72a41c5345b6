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

import {
  BaseEntry,
  count,
  Emitter,
  nonNegative,
  oldestInSample,
  timedOut,
  touch,
} from "./_base.ts";
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
  /** Idle timeout (ms). */
  readonly timeoutMs: number;
  /** Interval of {@linkcode tick} (ms). */
  readonly cleanupIntervalMs: number;
  /** Table cap; 0 = none. */
  readonly maxEntries: number;
  #emitter: Emitter;
  #table = new Map<string, IcmpEntry>();
  #lastCleanup: number;
  #closed = false;

  /**
   * Creates the tracker.
   *
   * @param options Timeout, cap, sink and clocks.
   * @throws {RangeError} When a duration or the cap is negative or not a number.
   */
  constructor(options: IcmpTrackerOptions = {}) {
    const timeout = nonNegative("timeoutMs", options.timeoutMs ?? 0);
    this.timeoutMs = timeout === 0 ? ICMP_DEFAULTS.timeoutMs : timeout;
    this.cleanupIntervalMs = nonNegative(
      "cleanupIntervalMs",
      options.cleanupIntervalMs ?? ICMP_DEFAULTS.cleanupIntervalMs,
    );
    this.maxEntries = nonNegative("maxEntries", options.maxEntries ?? ICMP_DEFAULTS.maxEntries);
    this.#emitter = new Emitter(options);
    this.#lastCleanup = this.#emitter.clock();
  }

  /** Number of entries in the table. */
  get size(): number {
    return this.#table.size;
  }

  /**
   * Handles an outbound ICMP/ICMPv6 packet (NetBird's `TrackOutbound`): anything matching an
   * echo flow the peer opened refreshes it, anything else is tracked as this host's.
   *
   * @param packet The packet (this host → peer).
   */
  trackOutbound(packet: TrackerPacket): void {
    if (this.#closed || !isIcmp(packet)) return;
    const now = this.#emitter.clock();
    const reverse = this.#table.get(icmpKey(packet.destination, packet.source, packet.icmpId));
    if (reverse !== undefined) this.#refresh(reverse, "egress", packet.ipLength, now);
    else this.#track(packet, "egress", null, now);
    this.#emitter.flush();
  }

  /**
   * Tracks an inbound ICMP/ICMPv6 packet the ACL allowed (NetBird's `TrackInbound`).
   *
   * @param packet The packet (peer → this host).
   * @param options `ruleId` of the allowing rule (goes on the start record).
   */
  trackInbound(packet: TrackerPacket, options: { ruleId?: string | null } = {}): void {
    if (this.#closed || !isIcmp(packet)) return;
    this.#track(packet, "ingress", options.ruleId ?? null, this.#emitter.clock());
    this.#emitter.flush();
  }

  /**
   * Whether an inbound packet is an echo reply (ICMP 0 / ICMPv6 129) to a request this host sent
   * that has not timed out, NetBird's `IsValidInbound`; if so the entry is refreshed and counted.
   *
   * @param packet The packet (peer → this host).
   * @returns `true` to accept the packet without consulting the ACL.
   */
  isValidInbound(packet: TrackerPacket): boolean {
    if (this.#closed || !isEchoReply(packet)) return false;
    const now = this.#emitter.clock();
    const entry = this.#table.get(icmpKey(packet.destination, packet.source, packet.icmpId));
    if (entry === undefined || timedOut(entry, now, this.timeoutMs)) return false;
    this.#refresh(entry, "ingress", packet.ipLength, now);
    return true;
  }

  /**
   * Looks up an echo entry by its key (requester → responder, identifier).
   *
   * @param key Addresses and echo identifier.
   * @returns The entry, or `undefined`.
   */
  getConnection(key: IcmpConnKey): IcmpConnection | undefined {
    return this.#table.get(icmpKey(key.source, key.destination, key.id));
  }

  /**
   * Deletes timed-out entries, each with an `end` record: NetBird's periodic cleanup, run now.
   *
   * @param now Monotonic ms; defaults to the clock.
   */
  cleanup(now: number = this.#emitter.clock()): void {
    this.#lastCleanup = now;
    for (const [key, entry] of this.#table) {
      if (timedOut(entry, now, this.timeoutMs)) {
        this.#table.delete(key);
        this.#end(entry);
      }
    }
    this.#emitter.flush();
  }

  /**
   * Runs {@linkcode cleanup} if `cleanupIntervalMs` has passed since the last one (or since
   * construction), NetBird's ticker cadence.
   *
   * @param now Monotonic ms; defaults to the clock.
   * @returns Whether a cleanup ran.
   */
  tick(now: number = this.#emitter.clock()): boolean {
    if (this.#closed || now - this.#lastCleanup < this.cleanupIntervalMs) return false;
    this.cleanup(now);
    return true;
  }

  /** Emits an `end` record for every entry and empties the table (NetBird reports nothing). */
  flush(): void {
    for (const entry of this.#table.values()) this.#end(entry);
    this.#table.clear();
    this.#emitter.flush();
  }

  /** {@linkcode flush}, then ignore every later packet. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
  }

  /** Same as {@linkcode close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #refresh(entry: IcmpEntry, direction: TrackedDirection, size: number, now: number): void {
    touch(this.#table, entry, now);
    count(entry, direction, size);
  }

  #track(
    packet: TrackerPacket,
    direction: TrackedDirection,
    ruleId: string | null,
    now: number,
  ): void {
    const key = icmpKey(packet.source, packet.destination, packet.icmpId);
    const existing = this.#table.get(key);
    if (existing !== undefined) {
      this.#refresh(existing, direction, packet.ipLength, now);
      return;
    }
    if (!isEchoRequest(packet)) {
      // Non-echo messages are not tracked: one start record, one packet, never an end.
      const inbound = direction === "ingress";
      this.#emitter.emit({
        type: "start",
        flowId: this.#emitter.randomId(),
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
    const entry = new IcmpEntry(key, this.#emitter.randomId(), direction, packet, now);
    count(entry, direction, packet.ipLength);
    if (this.maxEntries > 0 && this.#table.size >= this.maxEntries) {
      const victim = oldestInSample(this.#table);
      if (victim !== undefined) {
        this.#table.delete(victim.key);
        this.#end(victim);
      }
    }
    this.#table.set(key, entry);
    this.#record("start", entry, ruleId);
  }

  #end(entry: IcmpEntry): void {
    this.#record("end", entry, null);
  }

  #record(type: "start" | "end", entry: IcmpEntry, ruleId: string | null): void {
    this.#emitter.emit({
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
