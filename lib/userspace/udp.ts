/**
 * NetBird's userspace UDP connection tracker (`uspfilter/conntrack/udp.go`) as a pure state
 * machine: an entry per initiator 4-tuple, refreshed by traffic in either direction, ended by
 * timeout, eviction or (netbird-ct only) shutdown.
 *
 * @module
 */

import { BaseEntry, count, IdleTable, timedOut, tupleKey } from "./_base.ts";
import type { ConnKey, TrackedDirection, TrackerBaseOptions } from "./common.ts";
import type { TrackerPacket } from "./packet.ts";

/** NetBird's UDP defaults, in milliseconds. */
export const UDP_DEFAULTS: Readonly<{
  timeoutMs: number;
  cleanupIntervalMs: number;
  maxEntries: number;
}> = Object.freeze({ timeoutMs: 30_000, cleanupIntervalMs: 15_000, maxEntries: 16_384 });

/** Options of {@linkcode UdpTracker}. Durations are in milliseconds. */
export interface UdpTrackerOptions extends TrackerBaseOptions {
  /** Idle timeout; 0 or omitted means 30 s. */
  timeoutMs?: number;
  /** Interval of {@linkcode UdpTracker.tick} (15 s). */
  cleanupIntervalMs?: number;
  /** Table cap (NB_CONNTRACK_UDP_MAX, 16384); 0 means no cap. */
  maxEntries?: number;
}

/** A read-only view of one tracked UDP flow. */
export interface UdpConnection {
  /** Flow ID of the start and end records. */
  readonly flowId: string;
  /** Which side sent the first datagram. */
  readonly direction: TrackedDirection;
  /** Initiator address. */
  readonly source: string;
  /** Responder address. */
  readonly destination: string;
  /** Initiator port. */
  readonly sourcePort: number;
  /** Responder port. */
  readonly destinationPort: number;
  /** Monotonic ms of the last datagram. */
  readonly lastSeen: number;
  /** Port before inbound DNAT, or 0. */
  readonly dnatOrigPort: number;
  /** Packets sent by this host. */
  readonly packetsTx: number;
  /** Packets received by this host. */
  readonly packetsRx: number;
  /** Bytes (whole IP packets) sent by this host. */
  readonly bytesTx: number;
  /** Bytes (whole IP packets) received by this host. */
  readonly bytesRx: number;
}

class UdpEntry extends BaseEntry implements UdpConnection {
  readonly sourcePort: number;
  readonly destinationPort: number;
  readonly dnatOrigPort: number;

  constructor(
    key: string,
    flowId: string,
    direction: TrackedDirection,
    packet: TrackerPacket,
    now: number,
    dnatOrigPort: number,
  ) {
    super(key, flowId, direction, packet.source, packet.destination, now);
    this.sourcePort = packet.sourcePort;
    this.destinationPort = packet.destinationPort;
    this.dnatOrigPort = dnatOrigPort;
  }
}

/**
 * NetBird's userspace UDP tracker.
 *
 * Records: `start` when an entry is created (counters after the first datagram, rule ID of
 * inbound-created entries); `end` when it times out at cleanup, is evicted at the cap, or
 * (netbird-ct only) at {@linkcode flush} / {@linkcode close}.
 *
 * @example Usage
 * ```ts
 * import { UdpTracker } from "./udp.ts";
 * import { createPacket } from "./packet.ts";
 *
 * let now = 0;
 * const tracker = new UdpTracker({ clock: () => now, timeoutMs: 1_000 });
 * const dgram = (out: boolean) =>
 *   createPacket({
 *     source: out ? "192.168.1.2" : "192.168.1.3", destination: out ? "192.168.1.3" : "192.168.1.2",
 *     protocol: 17, sourcePort: out ? 12345 : 53, destinationPort: out ? 53 : 12345,
 *   });
 * tracker.trackOutbound(dgram(true));
 * if (!tracker.isValidInbound(dgram(false))) throw new Error("reply rejected");
 * now = 2_000;
 * if (tracker.isValidInbound(dgram(false))) throw new Error("expired entry accepted");
 * ```
 */
export class UdpTracker {
  #t: IdleTable<UdpEntry>;

  /**
   * Creates the tracker.
   *
   * @param options Timeout, cap, sink and clocks.
   * @throws {RangeError} When a duration or the cap is negative or not a number.
   */
  constructor(options: UdpTrackerOptions = {}) {
    this.#t = new IdleTable<UdpEntry>(
      options,
      UDP_DEFAULTS,
      (type, entry, ruleId) => this.#record(type, entry, ruleId),
    );
  }

  /** Idle timeout (ms). */
  get timeoutMs(): number {
    return this.#t.timeoutMs;
  }

  /** Interval of {@linkcode UdpTracker.tick} (ms). */
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
   * Handles an outbound datagram (NetBird's `TrackOutbound`): a reply on a flow the peer opened
   * refreshes that entry, anything else is tracked under its own key.
   *
   * @param packet The datagram (this host → peer).
   * @returns The port the reply's source must be rewritten to (inbound DNAT), else 0.
   */
  trackOutbound(packet: TrackerPacket): number {
    if (this.#t.closed) return 0;
    const now = this.#t.emitter.clock();
    const reverse = this.#t.entries.get(
      tupleKey(packet.destination, packet.source, packet.destinationPort, packet.sourcePort),
    );
    let port = 0;
    if (reverse !== undefined) {
      this.#t.refresh(reverse, "egress", packet.ipLength, now);
      port = reverse.dnatOrigPort;
    } else {
      this.#track(packet, "egress", null, 0, now);
    }
    this.#t.emitter.flush();
    return port;
  }

  /**
   * Tracks an inbound datagram the ACL allowed (NetBird's `TrackInbound`).
   *
   * @param packet The datagram (peer → this host), after DNAT.
   * @param options `ruleId` of the allowing rule (goes on the start record); `dnatOrigPort`,
   *   the destination port before DNAT.
   */
  trackInbound(
    packet: TrackerPacket,
    options: { ruleId?: string | null; dnatOrigPort?: number } = {},
  ): void {
    if (this.#t.closed) return;
    const now = this.#t.emitter.clock();
    this.#track(packet, "ingress", options.ruleId ?? null, options.dnatOrigPort ?? 0, now);
    this.#t.emitter.flush();
  }

  /**
   * Whether an inbound datagram answers a flow this host opened (reverse key present and not
   * timed out), NetBird's `IsValidInbound`; if so the entry is refreshed and counted.
   *
   * @param packet The datagram (peer → this host).
   * @returns `true` to accept the datagram without consulting the ACL.
   */
  isValidInbound(packet: TrackerPacket): boolean {
    if (this.#t.closed) return false;
    const now = this.#t.emitter.clock();
    const entry = this.#t.entries.get(
      tupleKey(packet.destination, packet.source, packet.destinationPort, packet.sourcePort),
    );
    if (entry === undefined || timedOut(entry, now, this.timeoutMs)) return false;
    this.#t.refresh(entry, "ingress", packet.ipLength, now);
    return true;
  }

  /**
   * Looks up an entry by its key (initiator → responder).
   *
   * @param key The 4-tuple.
   * @returns The entry, or `undefined`.
   */
  getConnection(key: ConnKey): UdpConnection | undefined {
    return this.#t.entries.get(
      tupleKey(key.source, key.destination, key.sourcePort, key.destinationPort),
    );
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
   * Runs {@linkcode UdpTracker.cleanup} if `cleanupIntervalMs` has passed since the last one (or
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

  /** {@linkcode UdpTracker.flush}, then ignore every later packet. Idempotent. */
  close(): void {
    this.#t.close();
  }

  /** Same as {@linkcode UdpTracker.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #track(
    packet: TrackerPacket,
    direction: TrackedDirection,
    ruleId: string | null,
    dnatOrigPort: number,
    now: number,
  ): void {
    const key = tupleKey(
      packet.source,
      packet.destination,
      packet.sourcePort,
      packet.destinationPort,
    );
    const existing = this.#t.entries.get(key);
    if (existing !== undefined) {
      this.#t.refresh(existing, direction, packet.ipLength, now);
      return;
    }
    const entry = new UdpEntry(
      key,
      this.#t.emitter.randomId(),
      direction,
      packet,
      now,
      dnatOrigPort,
    );
    count(entry, direction, packet.ipLength);
    this.#t.insert(entry, ruleId);
  }

  #record(type: "start" | "end", entry: UdpEntry, ruleId: string | null): void {
    this.#t.emitter.emit({
      type,
      flowId: entry.flowId,
      direction: entry.direction,
      protocol: 17,
      source: entry.source,
      destination: entry.destination,
      sourcePort: entry.sourcePort,
      destinationPort: entry.destinationPort,
      icmpType: 0,
      icmpCode: 0,
      rxPackets: entry.packetsRx,
      txPackets: entry.packetsTx,
      rxBytes: entry.bytesRx,
      txBytes: entry.bytesTx,
      ruleId,
    });
  }
}
