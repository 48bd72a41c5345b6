/**
 * NetBird's memory store and per-window aggregation, with netbird-ct's fixes: a bounded store
 * whose overflow is explicit and counted, counters that are deltas (the tracker's records already
 * are: starts carry nothing, updates and ends carry what crossed the wire since the flow's last
 * record), and a deterministic output order.
 *
 * @module
 */

import { Protocol } from "./flow.ts";
import type { FlowRecord, RecordType } from "./record.ts";

/** Protocols whose events merge by key; any other protocol is never merged (as in NetBird). */
const MERGED_PROTOCOLS: ReadonlySet<number> = new Set([
  Protocol.ICMP,
  Protocol.ICMPV6,
  Protocol.TCP,
  Protocol.UDP,
]);

/**
 * The aggregation key: source IP, destination IP, destination port, direction, protocol, ICMP
 * type. Source port, flow ID, ICMP code, resource IDs and type are not part of it.
 *
 * @param r A record.
 * @returns The key, or `undefined` for protocols that are never merged.
 */
export function aggregationKey(r: FlowRecord): string | undefined {
  if (!MERGED_PROTOCOLS.has(r.protocol)) return undefined;
  return `${r.sourceIp}|${r.destIp}|${r.destPort}|${r.direction}|${r.protocol}|${r.icmpType}`;
}

function countOf(
  type: RecordType,
): "numOfStarts" | "numOfEnds" | "numOfDrops" | "numOfUpdates" | undefined {
  switch (type) {
    case "drop":
      return "numOfDrops";
    case "start":
      return "numOfStarts";
    case "end":
      return "numOfEnds";
    case "update":
      return "numOfUpdates";
    default:
      return undefined;
  }
}

const U64 = (v: bigint): bigint => BigInt.asUintN(64, v);

/**
 * Aggregates the records of one window, NetBird's way: one record per key with summed counters
 * (mod 2^64) and counts per type; the earliest record's ID, timestamp and source port win; the
 * rule ID is the first non-empty one of the key (so a window that merges a kernel record, which
 * has none, with a drop keeps the drop's rule); every other field comes from the first record of
 * the key. Unlike NetBird (random map order), the output keeps the order in which keys first
 * appeared, so equal input gives equal output.
 *
 * @param records The window's records, in arrival order.
 * @param windowStart Start of the window.
 * @param windowEnd End of the window.
 * @returns The aggregated records (type `window`).
 *
 * @example Usage
 * ```ts
 * import { aggregate } from "./aggregate.ts";
 * const base = {
 *   flowId: "f", direction: "egress" as const, protocol: 6, sourceIp: "100.64.0.1",
 *   destIp: "100.64.0.2", sourcePort: 1, destPort: 80, icmpType: 0, icmpCode: 0,
 *   rxPackets: 1n, txPackets: 1n, rxBytes: 60n, txBytes: 60n, conntrackId: 1,
 * };
 * const out = aggregate([
 *   { ...base, eventId: "a", timestamp: new Date(1000), type: "start" },
 *   { ...base, eventId: "b", timestamp: new Date(2000), type: "end" },
 * ], new Date(0), new Date(10_000));
 * if (out.length !== 1 || out[0]!.rxBytes !== 120n) throw new Error("not merged");
 * ```
 */
export function aggregate(
  records: Iterable<FlowRecord>,
  windowStart: Date,
  windowEnd: Date,
): FlowRecord[] {
  const byKey = new Map<string, FlowRecord>();
  const out: FlowRecord[] = [];
  for (const r of records) {
    const key = aggregationKey(r);
    const existing = key === undefined ? undefined : byKey.get(key);
    if (existing === undefined) {
      const first: FlowRecord = {
        ...r,
        type: "window",
        window: {
          windowStart,
          windowEnd,
          numOfStarts: 0,
          numOfEnds: 0,
          numOfDrops: 0,
          numOfUpdates: 0,
        },
      };
      delete first.reason;
      const c = countOf(r.type);
      if (c !== undefined) first.window![c]++;
      out.push(first);
      if (key !== undefined) byKey.set(key, first);
      continue;
    }
    existing.rxPackets = U64(existing.rxPackets + r.rxPackets);
    existing.txPackets = U64(existing.txPackets + r.txPackets);
    existing.rxBytes = U64(existing.rxBytes + r.rxBytes);
    existing.txBytes = U64(existing.txBytes + r.txBytes);
    const c = countOf(r.type);
    if (c !== undefined) existing.window![c]++;
    // NetBird: "if aggregate RuleID empty and this one non-empty → take it".
    if (!existing.ruleId && r.ruleId) existing.ruleId = r.ruleId;
    if (existing.timestamp > r.timestamp) {
      existing.timestamp = r.timestamp;
      existing.eventId = r.eventId;
      existing.sourcePort = r.sourcePort;
    }
  }
  return out;
}

/** Counters of an {@linkcode AggregatingStore}. */
export interface StoreStats {
  /** Records stored. */
  stored: number;
  /** Windows closed early because the store was full (nothing is dropped). */
  earlyWindows: number;
}

/** A window's content, detached from the store. */
export interface WindowSnapshot {
  /** Start of the window. */
  windowStart: Date;
  /** End of the window. */
  windowEnd: Date;
  /** Its records, in arrival order. */
  records: FlowRecord[];
}

/**
 * NetBird's `AggregatingMemory`: the records of the current window, keyed by event ID, plus the
 * window's start. Bounded: when `maxEvents` is reached the caller must close the window
 * ({@linkcode AggregatingStore.isFull}), which netbird-ct does early rather than drop anything.
 */
export class AggregatingStore {
  /** Capacity in records. */
  readonly maxEvents: number;
  #records = new Map<string, FlowRecord>();
  #windowStart: Date;
  #now: () => Date;
  #stats: StoreStats = { stored: 0, earlyWindows: 0 };

  /**
   * Creates the instance.
   *
   * @param options Capacity and clock.
   */
  constructor(options: { maxEvents?: number; now?: () => Date } = {}) {
    this.maxEvents = options.maxEvents ?? 100_000;
    if (!Number.isInteger(this.maxEvents) || this.maxEvents < 1) {
      throw new RangeError(`Cannot hold ${this.maxEvents} records: maxEvents must be at least 1`);
    }
    this.#now = options.now ?? (() => new Date());
    this.#windowStart = this.#now();
  }

  /** Start of the current window. */
  get windowStart(): Date {
    return this.#windowStart;
  }

  /** Records in the current window. */
  get size(): number {
    return this.#records.size;
  }

  /** Whether the store is at capacity. */
  get isFull(): boolean {
    return this.#records.size >= this.maxEvents;
  }

  /** Counters. */
  stats(): StoreStats {
    return { ...this.#stats };
  }

  /**
   * Stores a record (overwriting one with the same event ID).
   *
   * @param r The record.
   * @returns `false` if the store is full and the record was not stored.
   */
  store(r: FlowRecord): boolean {
    if (this.isFull && !this.#records.has(r.eventId)) return false;
    this.#records.set(r.eventId, r);
    this.#stats.stored++;
    return true;
  }

  /** The current window's records, in arrival order. */
  getEvents(): FlowRecord[] {
    return [...this.#records.values()];
  }

  /**
   * Removes records by event ID; unknown IDs are ignored.
   *
   * @param ids Event IDs.
   */
  deleteEvents(ids: Iterable<string>): void {
    for (const id of ids) this.#records.delete(id);
  }

  /**
   * Closes the current window: returns its records with `[windowStart, now)` and starts a new,
   * empty window at `now`.
   *
   * @param early Count the close as an early one (the store was full).
   * @returns The closed window.
   */
  resetWindow(early = false): WindowSnapshot {
    const now = this.#now();
    const snapshot = {
      windowStart: this.#windowStart,
      windowEnd: now,
      records: [...this.#records.values()],
    };
    this.#records = new Map();
    this.#windowStart = now;
    if (early) this.#stats.earlyWindows++;
    return snapshot;
  }

  /** Aggregates the current window without closing it. */
  getAggregatedEvents(): FlowRecord[] {
    return aggregate(this.#records.values(), this.#windowStart, this.#now());
  }

  /** Empties the current window (NetBird's `Close`); the window start stays. */
  clear(): void {
    this.#records = new Map();
  }
}
