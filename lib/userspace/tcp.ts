/**
 * NetBird's userspace TCP connection tracker (`uspfilter/conntrack/tcp.go`) as a pure state
 * machine: no timers, no I/O. Time comes from an injected monotonic clock; timed-out entries go
 * when the owner calls {@linkcode TcpTracker.cleanup} (or {@linkcode TcpTracker.tick} at NetBird's
 * 5-minute cadence), so nothing runs in the background and nothing leaks.
 *
 * The state machine follows NetBird exactly: an entry is created only by a legal SYN, advances
 * only on segments from the right side ("same direction as the opener" rules), ignores RSTs in
 * TIME-WAIT and RSTs from the opener in SYN-SENT, never lets an illegal flag combination
 * (SYN+FIN, RST+SYN, RST+FIN) refresh or advance it, and lets a new SYN supersede a closed or
 * TIME-WAIT entry. There is no sequence-number tracking.
 *
 * When the `end` record is written is an option ({@linkcode TcpEndMode}): `"close"` (the
 * default) is NetBird's timing, at the move to TIME-WAIT or CLOSED; `"expire"` (netbird-ct)
 * writes it when the entry leaves the table, with every packet counted until then, like the
 * kernel's conntrack DESTROY.
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
  tupleKey,
} from "./_base.ts";
import type { ConnKey, TrackedDirection, TrackerBaseOptions } from "./common.ts";
import { TcpFlag, type TrackerPacket } from "./packet.ts";

/** TCP connection states, NetBird's `TCPState` numbers. */
export const TcpState = {
  /** Entry created, no SYN seen yet (a SYN|ACK without entry stays here). */
  NEW: 0,
  /** This host sent the SYN. */
  SYN_SENT: 1,
  /** The peer sent the SYN (or simultaneous open). */
  SYN_RECEIVED: 2,
  /** Handshake complete. */
  ESTABLISHED: 3,
  /** The opener sent FIN. */
  FIN_WAIT_1: 4,
  /** The opener's FIN was acknowledged. */
  FIN_WAIT_2: 5,
  /** Both sides sent FIN, the opener's not yet acknowledged. */
  CLOSING: 6,
  /** The opener's close completed; absorbs late segments. */
  TIME_WAIT: 7,
  /** The responder sent FIN first. */
  CLOSE_WAIT: 8,
  /** The opener sent FIN after the responder's. */
  LAST_ACK: 9,
  /** Closed (graceful or RST); the entry is a tombstone. */
  CLOSED: 10,
} as const;

/** One of the {@linkcode TcpState} values. */
export type TcpState = typeof TcpState[keyof typeof TcpState];

const STATE_NAMES = [
  "New",
  "SYN Sent",
  "SYN Received",
  "Established",
  "FIN Wait 1",
  "FIN Wait 2",
  "Closing",
  "Time Wait",
  "Close Wait",
  "Last ACK",
  "Closed",
];

/**
 * NetBird's name of a TCP state (`TCPState.String()`).
 *
 * @param state The state number.
 * @returns `"SYN Sent"`, `"Established"`, …, or `"Unknown"`.
 *
 * @example Usage
 * ```ts
 * import { TcpState, tcpStateName } from "./tcp.ts";
 * if (tcpStateName(TcpState.TIME_WAIT) !== "Time Wait") throw new Error("wrong name");
 * ```
 */
export function tcpStateName(state: number): string {
  return STATE_NAMES[state] ?? "Unknown";
}

/**
 * Whether a flag combination can belong to a legitimate segment: not SYN+FIN, not RST with SYN
 * or FIN (NetBird's `isValidFlagCombination`).
 *
 * @param flags TCP flags.
 * @returns `false` for an illegal combination.
 *
 * @example Usage
 * ```ts
 * import { isLegalTcpFlags } from "./tcp.ts";
 * import { TcpFlag } from "./packet.ts";
 * if (isLegalTcpFlags(TcpFlag.SYN | TcpFlag.FIN)) throw new Error("SYN+FIN is illegal");
 * ```
 */
export function isLegalTcpFlags(flags: number): boolean {
  if ((flags & TcpFlag.SYN) !== 0 && (flags & TcpFlag.FIN) !== 0) return false;
  return (flags & TcpFlag.RST) === 0 || (flags & (TcpFlag.SYN | TcpFlag.FIN)) === 0;
}

/** NetBird's TCP defaults (§8 of the spec), in milliseconds. */
export const TCP_DEFAULTS: Readonly<{
  timeoutMs: number;
  handshakeTimeoutMs: number;
  finWaitTimeoutMs: number;
  closeWaitTimeoutMs: number;
  lastAckTimeoutMs: number;
  timeWaitTimeoutMs: number;
  cleanupIntervalMs: number;
  maxEntries: number;
}> = Object.freeze({
  timeoutMs: 3 * 3600_000,
  handshakeTimeoutMs: 60_000,
  finWaitTimeoutMs: 60_000,
  closeWaitTimeoutMs: 60_000,
  lastAckTimeoutMs: 30_000,
  timeWaitTimeoutMs: 240_000,
  cleanupIntervalMs: 300_000,
  maxEntries: 65_536,
});

/**
 * When the TCP tracker writes a connection's `end` record.
 *
 * - `"close"`: NetBird's timing (spec §6.5): when the connection closes, i.e. on the move to
 *   TIME-WAIT or CLOSED (FIN handshake or accepted RST); an entry that leaves the table before
 *   that (timeout, eviction, {@linkcode TcpTracker.close}) gets it then. Packets after the close,
 *   such as the final ACK of a FIN handshake, are counted on the entry but in no record.
 * - `"expire"` (netbird-ct): when the entry leaves the table, as the kernel's conntrack DESTROY:
 *   its TIME-WAIT or other timeout expires at a cleanup, a closed entry (tombstone) is deleted at
 *   a cleanup, a new SYN on the same 4-tuple supersedes it, it is evicted at the cap, or the
 *   tracker is flushed or closed. The record carries every packet counted until then: the final
 *   ACK, retransmissions in TIME-WAIT, and segments that hit a closed entry (which NetBird
 *   neither matches nor counts; they are counted on it here, without changing any decision).
 *
 * Either way every entry gets exactly one `end` record, after its `start`.
 */
export type TcpEndMode = "close" | "expire";

/** The values of {@linkcode TcpEndMode}. */
export const TCP_END_MODES: readonly TcpEndMode[] = Object.freeze(["close", "expire"]);

/** Options of {@linkcode TcpTracker}. Durations are in milliseconds. */
export interface TcpTrackerOptions extends TrackerBaseOptions {
  /**
   * When the `end` record is written: `"close"` (default, NetBird) or `"expire"` (when the entry
   * leaves the table, with every packet counted until then, like conntrack's DESTROY). See
   * {@linkcode TcpEndMode}.
   */
  end?: TcpEndMode;
  /**
   * Timeout of ESTABLISHED entries; 0 or omitted means 3 h. It also sets the TIME-WAIT timeout
   * as NetBird does: 4 min (2×MSL) with the default, `timeoutMs / 45` otherwise.
   */
  timeoutMs?: number;
  /** TIME-WAIT timeout; overrides the value derived from `timeoutMs`. */
  timeWaitTimeoutMs?: number;
  /** NEW / SYN-SENT / SYN-RECEIVED timeout (NetBird: fixed 60 s). */
  handshakeTimeoutMs?: number;
  /** FIN-WAIT-1 / FIN-WAIT-2 / CLOSING timeout (NB_CONNTRACK_TCP_FIN_WAIT_TIMEOUT, 60 s). */
  finWaitTimeoutMs?: number;
  /** CLOSE-WAIT timeout (NB_CONNTRACK_TCP_CLOSE_WAIT_TIMEOUT, 60 s). */
  closeWaitTimeoutMs?: number;
  /** LAST-ACK timeout (NB_CONNTRACK_TCP_LAST_ACK_TIMEOUT, 30 s). */
  lastAckTimeoutMs?: number;
  /** Interval of {@linkcode TcpTracker.tick} (5 min). */
  cleanupIntervalMs?: number;
  /** Table cap (NB_CONNTRACK_TCP_MAX, 65536); 0 means no cap. */
  maxEntries?: number;
}

/** A read-only view of one tracked TCP connection. */
export interface TcpConnection {
  /** Flow ID of the start and end records. */
  readonly flowId: string;
  /** Which side sent the SYN. */
  readonly direction: TrackedDirection;
  /** Initiator address. */
  readonly source: string;
  /** Responder address. */
  readonly destination: string;
  /** Initiator port. */
  readonly sourcePort: number;
  /** Responder port. */
  readonly destinationPort: number;
  /** Current state. */
  readonly state: TcpState;
  /** Closed (graceful or RST): superseded by the next packet, deleted at the next cleanup. */
  readonly tombstoned: boolean;
  /** Whether the `end` record was written (at the close with `end: "close"`). */
  readonly ended: boolean;
  /** Monotonic ms of the last packet that refreshed the entry. */
  readonly lastSeen: number;
  /** Port before inbound DNAT, or 0 (returned by `trackOutbound` for the reply). */
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

class TcpEntry extends BaseEntry implements TcpConnection {
  readonly sourcePort: number;
  readonly destinationPort: number;
  readonly dnatOrigPort: number;
  state: TcpState = TcpState.NEW;
  tombstoned = false;
  ended = false;

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

const { FIN, SYN, RST, ACK } = TcpFlag;

/** NetBird's IsSupersededBy: a tombstone, or TIME-WAIT hit by a pure SYN. */
function superseded(entry: TcpEntry, flags: number): boolean {
  return entry.tombstoned ||
    ((flags & SYN) !== 0 && (flags & ACK) === 0 && entry.state === TcpState.TIME_WAIT);
}

/** NetBird's transition table; -1 = no transition. `same` = packet from the opener's side. */
function nextState(
  state: TcpState,
  opener: TrackedDirection,
  same: boolean,
  flags: number,
): number {
  switch (state) {
    case TcpState.NEW:
      if ((flags & SYN) !== 0 && (flags & ACK) === 0) {
        return opener === "egress" ? TcpState.SYN_SENT : TcpState.SYN_RECEIVED;
      }
      return -1;
    case TcpState.SYN_SENT:
      if ((flags & SYN) !== 0 && (flags & ACK) !== 0) {
        return same ? TcpState.SYN_RECEIVED : TcpState.ESTABLISHED; // same: simultaneous open
      }
      return -1;
    case TcpState.SYN_RECEIVED:
      return (flags & ACK) !== 0 && (flags & SYN) === 0 && same ? TcpState.ESTABLISHED : -1;
    case TcpState.ESTABLISHED:
      if ((flags & FIN) === 0) return -1;
      return same ? TcpState.FIN_WAIT_1 : TcpState.CLOSE_WAIT;
    case TcpState.FIN_WAIT_1:
      if (same) return -1;
      if ((flags & FIN) !== 0) return (flags & ACK) !== 0 ? TcpState.TIME_WAIT : TcpState.CLOSING;
      return (flags & ACK) !== 0 ? TcpState.FIN_WAIT_2 : -1;
    case TcpState.FIN_WAIT_2:
      return (flags & FIN) !== 0 && !same ? TcpState.TIME_WAIT : -1;
    case TcpState.CLOSING:
      return (flags & ACK) !== 0 && !same ? TcpState.TIME_WAIT : -1;
    case TcpState.CLOSE_WAIT:
      return (flags & FIN) !== 0 && same ? TcpState.LAST_ACK : -1;
    case TcpState.LAST_ACK:
      return (flags & ACK) !== 0 && !same ? TcpState.CLOSED : -1;
    default:
      return -1; // TIME_WAIT, CLOSED
  }
}

/** NetBird's isValidStateForFlags, for inbound packets matched against an existing entry. */
function validStateForFlags(state: TcpState, flags: number): boolean {
  if ((flags & RST) !== 0) return state !== TcpState.SYN_SENT || (flags & ACK) !== 0;
  switch (state) {
    case TcpState.NEW:
      return (flags & SYN) !== 0 && (flags & ACK) === 0;
    case TcpState.SYN_SENT:
      // NetBird TODO: simultaneous open is not supported on this path.
      return (flags & SYN) !== 0 && (flags & ACK) !== 0;
    case TcpState.FIN_WAIT_1:
    case TcpState.FIN_WAIT_2:
    case TcpState.CLOSE_WAIT:
      return (flags & (FIN | ACK)) !== 0;
    default: // SYN_RECEIVED, ESTABLISHED, CLOSING, TIME_WAIT, LAST_ACK, CLOSED
      return (flags & ACK) !== 0;
  }
}

/**
 * NetBird's userspace TCP tracker. Outbound packets go through {@linkcode trackOutbound}; an
 * inbound packet is first checked with {@linkcode isValidInbound} and, when that fails and the
 * ACL allows it, tracked with {@linkcode trackInbound}.
 *
 * Records: `start` when an entry is created (counters after the SYN, rule ID of inbound-created
 * entries); exactly one `end` per entry. With `end: "close"` (NetBird) it comes on the transition
 * to TIME-WAIT or CLOSED, on an accepted RST, when a live entry times out or is evicted, and
 * (netbird-ct only) for every live entry at {@linkcode flush} / {@linkcode close}. With
 * `end: "expire"` it comes only when the entry leaves the table (timeout, cleanup of a closed
 * entry, supersession by a new SYN, eviction, flush, close), carrying every packet counted until
 * then. See {@linkcode TcpEndMode}.
 *
 * @example Usage
 * ```ts
 * import { TcpState, TcpTracker } from "./tcp.ts";
 * import { createPacket, TcpFlag } from "./packet.ts";
 *
 * let now = 0;
 * const tracker = new TcpTracker({ clock: () => now });
 * const seg = (out: boolean, tcpFlags: number) =>
 *   createPacket({
 *     source: out ? "100.64.0.1" : "100.64.0.2", destination: out ? "100.64.0.2" : "100.64.0.1",
 *     protocol: 6, sourcePort: out ? 12345 : 80, destinationPort: out ? 80 : 12345, tcpFlags,
 *   });
 * tracker.trackOutbound(seg(true, TcpFlag.SYN));
 * if (!tracker.isValidInbound(seg(false, TcpFlag.SYN | TcpFlag.ACK))) throw new Error("reply");
 * tracker.trackOutbound(seg(true, TcpFlag.ACK));
 * const conn = tracker.getConnection({
 *   source: "100.64.0.1", destination: "100.64.0.2", sourcePort: 12345, destinationPort: 80,
 * });
 * if (conn?.state !== TcpState.ESTABLISHED) throw new Error("not established");
 * tracker.close();
 * ```
 */
export class TcpTracker {
  /** ESTABLISHED timeout (ms). */
  readonly timeoutMs: number;
  /** TIME-WAIT timeout (ms). */
  readonly timeWaitTimeoutMs: number;
  /** NEW / SYN-SENT / SYN-RECEIVED timeout (ms). */
  readonly handshakeTimeoutMs: number;
  /** FIN-WAIT-1 / FIN-WAIT-2 / CLOSING timeout (ms). */
  readonly finWaitTimeoutMs: number;
  /** CLOSE-WAIT timeout (ms). */
  readonly closeWaitTimeoutMs: number;
  /** LAST-ACK timeout (ms). */
  readonly lastAckTimeoutMs: number;
  /** Interval of {@linkcode tick} (ms). */
  readonly cleanupIntervalMs: number;
  /** Table cap; 0 = none. */
  readonly maxEntries: number;
  /** When the `end` record is written. */
  readonly end: TcpEndMode;
  #emitter: Emitter;
  #table = new Map<string, TcpEntry>();
  /** Keys of tombstoned entries still in the table, oldest first: evicted before live ones. */
  #tombstones = new Set<string>();
  #lastCleanup: number;
  #closed = false;

  /**
   * Creates the tracker.
   *
   * @param options Timeouts, cap, end mode, sink and clocks.
   * @throws {RangeError} When a duration or the cap is negative or not a number, or `end` is
   *   not a {@linkcode TcpEndMode}.
   */
  constructor(options: TcpTrackerOptions = {}) {
    const end = options.end ?? "close";
    if (!TCP_END_MODES.includes(end)) {
      throw new RangeError(`Invalid end: ${end}, must be one of ${TCP_END_MODES.join(", ")}`);
    }
    this.end = end;
    const timeout = nonNegative("timeoutMs", options.timeoutMs ?? 0);
    this.timeoutMs = timeout === 0 ? TCP_DEFAULTS.timeoutMs : timeout;
    this.timeWaitTimeoutMs = nonNegative(
      "timeWaitTimeoutMs",
      options.timeWaitTimeoutMs ?? (timeout === 0 ? TCP_DEFAULTS.timeWaitTimeoutMs : timeout / 45),
    );
    this.handshakeTimeoutMs = nonNegative(
      "handshakeTimeoutMs",
      options.handshakeTimeoutMs ?? TCP_DEFAULTS.handshakeTimeoutMs,
    );
    this.finWaitTimeoutMs = nonNegative(
      "finWaitTimeoutMs",
      options.finWaitTimeoutMs ?? TCP_DEFAULTS.finWaitTimeoutMs,
    );
    this.closeWaitTimeoutMs = nonNegative(
      "closeWaitTimeoutMs",
      options.closeWaitTimeoutMs ?? TCP_DEFAULTS.closeWaitTimeoutMs,
    );
    this.lastAckTimeoutMs = nonNegative(
      "lastAckTimeoutMs",
      options.lastAckTimeoutMs ?? TCP_DEFAULTS.lastAckTimeoutMs,
    );
    this.cleanupIntervalMs = nonNegative(
      "cleanupIntervalMs",
      options.cleanupIntervalMs ?? TCP_DEFAULTS.cleanupIntervalMs,
    );
    this.maxEntries = nonNegative("maxEntries", options.maxEntries ?? TCP_DEFAULTS.maxEntries);
    this.#emitter = new Emitter(options);
    this.#lastCleanup = this.#emitter.clock();
  }

  /** Number of entries in the table (tombstones included). */
  get size(): number {
    return this.#table.size;
  }

  /**
   * Handles an outbound packet (NetBird's `TrackOutbound`): a reply on an entry the peer opened
   * (reverse key) advances that entry, anything else is tracked under its own key. With
   * `end: "expire"`, a packet that neither matches a live entry nor creates one but hits a
   * closed entry (either key) is counted on that entry.
   *
   * @param packet The packet (this host → peer).
   * @returns The port the reply's source must be rewritten to (inbound DNAT), else 0.
   */
  trackOutbound(packet: TrackerPacket): number {
    if (this.#closed) return 0;
    const now = this.#emitter.clock();
    const flags = packet.tcpFlags;
    const reverse = this.#table.get(
      tupleKey(packet.destination, packet.source, packet.destinationPort, packet.sourcePort),
    );
    let port = 0;
    if (reverse !== undefined && !superseded(reverse, flags)) {
      this.#update(reverse, flags, "egress", packet.ipLength, now);
      port = reverse.dnatOrigPort;
    } else if (!this.#track(packet, "egress", null, 0, now)) {
      this.#countOnClosed(packet, "egress");
    }
    this.#emitter.flush();
    return port;
  }

  /**
   * Tracks an inbound packet the ACL allowed (NetBird's `TrackInbound`): only a legal SYN
   * creates an entry. With `end: "expire"`, a packet that neither matches a live entry nor
   * creates one but hits a closed entry (either key) is counted on that entry.
   *
   * @param packet The packet (peer → this host), after DNAT.
   * @param options `ruleId` of the allowing rule (goes on the start record); `dnatOrigPort`,
   *   the destination port before DNAT.
   */
  trackInbound(
    packet: TrackerPacket,
    options: { ruleId?: string | null; dnatOrigPort?: number } = {},
  ): void {
    if (this.#closed) return;
    const now = this.#emitter.clock();
    const ruleId = options.ruleId ?? null;
    if (!this.#track(packet, "ingress", ruleId, options.dnatOrigPort ?? 0, now)) {
      this.#countOnClosed(packet, "ingress");
    }
    this.#emitter.flush();
  }

  /**
   * Whether an inbound packet belongs to a tracked connection this host opened (reverse key),
   * NetBird's `IsValidInbound`; if so the entry is advanced and counted. Like NetBird, does not
   * look at timeouts (an entry lives until the next cleanup).
   *
   * @param packet The packet (peer → this host).
   * @returns `true` to accept the packet without consulting the ACL.
   */
  isValidInbound(packet: TrackerPacket): boolean {
    if (this.#closed) return false;
    const flags = packet.tcpFlags;
    const entry = this.#table.get(
      tupleKey(packet.destination, packet.source, packet.destinationPort, packet.sourcePort),
    );
    if (entry === undefined || superseded(entry, flags)) return false;
    if (!isLegalTcpFlags(flags)) return false;
    if (!validStateForFlags(entry.state, flags)) return false;
    this.#update(entry, flags, "ingress", packet.ipLength, this.#emitter.clock());
    this.#emitter.flush();
    return true;
  }

  /**
   * Looks up an entry by its key (initiator → responder).
   *
   * @param key The 4-tuple.
   * @returns The entry, or `undefined`.
   */
  getConnection(key: ConnKey): TcpConnection | undefined {
    return this.#table.get(
      tupleKey(key.source, key.destination, key.sourcePort, key.destinationPort),
    );
  }

  /**
   * Deletes tombstones and timed-out entries, NetBird's periodic cleanup, run now. Each gets its
   * `end` record unless it already has one (with `end: "close"`, tombstones and TIME-WAIT
   * entries were reported at the close).
   *
   * @param now Monotonic ms; defaults to the clock.
   */
  cleanup(now: number = this.#emitter.clock()): void {
    this.#lastCleanup = now;
    for (const [key, entry] of this.#table) {
      if (entry.tombstoned || timedOut(entry, now, this.#timeoutOf(entry.state))) {
        this.#delete(key);
        this.#end(entry);
      }
    }
    this.#emitter.flush();
  }

  /**
   * Runs {@linkcode cleanup} if `cleanupIntervalMs` has passed since the last one (or since
   * construction), NetBird's ticker cadence. Call it from the owner's own timer or packet loop.
   *
   * @param now Monotonic ms; defaults to the clock.
   * @returns Whether a cleanup ran.
   */
  tick(now: number = this.#emitter.clock()): boolean {
    if (this.#closed || now - this.#lastCleanup < this.cleanupIntervalMs) return false;
    this.cleanup(now);
    return true;
  }

  /**
   * Emits an `end` record for every entry that has none yet and empties the table: with
   * `end: "close"` the live ones (not closed, not in TIME-WAIT), with `end: "expire"` all of them.
   * NetBird drops the table silently at `Close()`; netbird-ct reports the flows.
   */
  flush(): void {
    for (const entry of this.#table.values()) this.#end(entry);
    this.#table.clear();
    this.#tombstones.clear();
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

  #timeoutOf(state: TcpState): number {
    switch (state) {
      case TcpState.TIME_WAIT:
        return this.timeWaitTimeoutMs;
      case TcpState.ESTABLISHED:
        return this.timeoutMs;
      case TcpState.FIN_WAIT_1:
      case TcpState.FIN_WAIT_2:
      case TcpState.CLOSING:
        return this.finWaitTimeoutMs;
      case TcpState.CLOSE_WAIT:
        return this.closeWaitTimeoutMs;
      case TcpState.LAST_ACK:
        return this.lastAckTimeoutMs;
      default:
        return this.handshakeTimeoutMs; // NEW, SYN_SENT, SYN_RECEIVED
    }
  }

  /** NetBird's track; returns whether the packet updated or created an entry. */
  #track(
    packet: TrackerPacket,
    direction: TrackedDirection,
    ruleId: string | null,
    dnatOrigPort: number,
    now: number,
  ): boolean {
    const flags = packet.tcpFlags;
    const key = tupleKey(
      packet.source,
      packet.destination,
      packet.sourcePort,
      packet.destinationPort,
    );
    const existing = this.#table.get(key);
    if (existing !== undefined && !superseded(existing, flags)) {
      this.#update(existing, flags, direction, packet.ipLength, now);
      return true;
    }
    if ((flags & SYN) === 0 || !isLegalTcpFlags(flags)) return false;
    const entry = new TcpEntry(
      key,
      this.#emitter.randomId(),
      direction,
      packet,
      now,
      dnatOrigPort,
    );
    this.#update(entry, flags, direction, packet.ipLength, now);
    // A superseded entry (tombstone or TIME-WAIT) leaves the table: its end comes now unless
    // it was written at the close, before the new entry's start. Only a genuinely new key can
    // push the table over its cap.
    if (existing !== undefined) {
      this.#delete(key);
      this.#end(existing);
    } else if (this.maxEntries > 0 && this.#table.size >= this.maxEntries) this.#evictOne();
    this.#table.set(key, entry);
    this.#record("start", entry, ruleId);
    return true;
  }

  /**
   * `end: "expire"` only: counts a packet that matched no live entry and created none on the
   * closed entry it hit, looked up in NetBird's order (reverse key, then forward key). The
   * kernel's conntrack keeps counting a closed connection's packets until DESTROY; NetBird's
   * tracker ignores them. Nothing else changes: no refresh, no state change, same verdicts.
   */
  #countOnClosed(packet: TrackerPacket, direction: TrackedDirection): void {
    if (this.end !== "expire") return;
    const reverse = this.#table.get(
      tupleKey(packet.destination, packet.source, packet.destinationPort, packet.sourcePort),
    );
    const entry = reverse?.tombstoned ? reverse : this.#table.get(
      tupleKey(packet.source, packet.destination, packet.sourcePort, packet.destinationPort),
    );
    if (entry?.tombstoned) count(entry, direction, packet.ipLength);
  }

  /** NetBird's updateState. */
  #update(
    entry: TcpEntry,
    flags: number,
    direction: TrackedDirection,
    size: number,
    now: number,
  ): void {
    count(entry, direction, size);
    // Illegal combinations are counted but must neither refresh nor advance the entry, or
    // spoofed segments would keep a dead flow alive.
    if (!isLegalTcpFlags(flags)) return;
    touch(this.#table, entry, now);
    const state = entry.state;
    if ((flags & RST) !== 0) {
      // Without sequence numbers the RFC 5961 in-window check is impossible: ignore a late RST
      // in TIME-WAIT and a RST from the opener's side in SYN-SENT.
      if (state === TcpState.TIME_WAIT) return;
      if (state === TcpState.SYN_SENT && direction === entry.direction) return;
      entry.state = TcpState.CLOSED;
      this.#tombstone(entry);
      this.#closeEnd(entry);
      return;
    }
    const next = nextState(state, entry.direction, direction === entry.direction, flags);
    if (next < 0) return;
    entry.state = next as TcpState;
    if (next === TcpState.TIME_WAIT) {
      this.#closeEnd(entry);
    } else if (next === TcpState.CLOSED) {
      this.#tombstone(entry);
      this.#closeEnd(entry);
    }
  }

  #tombstone(entry: TcpEntry): void {
    entry.tombstoned = true;
    if (this.#table.get(entry.key) === entry) this.#tombstones.add(entry.key);
  }

  #delete(key: string): void {
    this.#table.delete(key);
    this.#tombstones.delete(key);
  }

  /**
   * Makes room for one entry: a tombstone if there is one, else the stalest of the sampled
   * entries. The victim gets its `end` record unless it already has one (with `end: "close"`,
   * tombstones and TIME-WAIT entries go silently).
   */
  #evictOne(): void {
    let victim: TcpEntry | undefined;
    for (const key of this.#tombstones) {
      victim = this.#table.get(key);
      break;
    }
    victim ??= oldestInSample(this.#table);
    if (victim === undefined) return;
    this.#delete(victim.key);
    this.#end(victim);
  }

  /** The close of a connection (TIME-WAIT, CLOSED, RST): its `end` with `end: "close"`. */
  #closeEnd(entry: TcpEntry): void {
    if (this.end === "close") this.#end(entry);
  }

  /** Writes the entry's `end` record, once. */
  #end(entry: TcpEntry): void {
    if (entry.ended) return;
    entry.ended = true;
    this.#record("end", entry, null);
  }

  #record(type: "start" | "end", entry: TcpEntry, ruleId: string | null): void {
    this.#emitter.emit({
      type,
      flowId: entry.flowId,
      direction: entry.direction,
      protocol: 6,
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
