/**
 * Internals shared by the userspace trackers: the base entry, counting, the record batcher and
 * sampled eviction. Not part of the public API.
 *
 * @module
 */

import type { FlowRecord, RecordType } from "../record.ts";
import type { RecordSink } from "../tracker.ts";
import { uuidV4 } from "../uuid.ts";
import { EVICTION_SAMPLE_SIZE, type TrackedDirection, type TrackerBaseOptions } from "./common.ts";

/**
 * What every tracked entry has (NetBird's `BaseConnTrack`). Counters are numbers: exact up to
 * 2^53 (8 PiB per flow), converted to bigint only when a record is built.
 */
export class BaseEntry {
  /** Table key. */
  readonly key: string;
  /** Flow ID shared by the start and end records. */
  readonly flowId: string;
  /** Which side opened the flow. */
  readonly direction: TrackedDirection;
  /** Initiator address. */
  readonly source: string;
  /** Responder address. */
  readonly destination: string;
  /** Monotonic ms of the last packet that refreshed the entry. */
  lastSeen: number;
  /** Packets sent by this host. */
  packetsTx = 0;
  /** Packets received by this host. */
  packetsRx = 0;
  /** Bytes sent by this host. */
  bytesTx = 0;
  /** Bytes received by this host. */
  bytesRx = 0;

  constructor(
    key: string,
    flowId: string,
    direction: TrackedDirection,
    source: string,
    destination: string,
    lastSeen: number,
  ) {
    this.key = key;
    this.flowId = flowId;
    this.direction = direction;
    this.source = source;
    this.destination = destination;
    this.lastSeen = lastSeen;
  }
}

/** NetBird's `UpdateCounters`: egress counts as sent, anything else as received. */
export function count(entry: BaseEntry, direction: TrackedDirection, size: number): void {
  if (direction === "egress") {
    entry.packetsTx++;
    entry.bytesTx += size;
  } else {
    entry.packetsRx++;
    entry.bytesRx += size;
  }
}

/**
 * Refreshes `lastSeen` and moves the entry to the back of its table, so that table order is
 * least-recently-seen first and the eviction sample looks at the stalest entries (NetBird samples
 * random map entries, which can hit busy flows while idle ones survive).
 */
export function touch<E extends BaseEntry>(table: Map<string, E>, entry: E, now: number): void {
  entry.lastSeen = now;
  if (table.get(entry.key) === entry) {
    table.delete(entry.key);
    table.set(entry.key, entry);
  }
}

/** NetBird's timeoutExceeded: strictly more than `timeout` since the last refresh. */
export function timedOut(entry: BaseEntry, now: number, timeout: number): boolean {
  return now - entry.lastSeen > timeout;
}

/**
 * The eviction victim: the entry with the smallest `lastSeen` among the first
 * {@linkcode EVICTION_SAMPLE_SIZE} entries of the table, ties going to the earlier one.
 *
 * Table order is an insertion sequence: {@linkcode touch} re-inserts an entry on every refresh,
 * so the table runs from least to most recently seen and ties in `lastSeen` (same millisecond)
 * are broken by that sequence, deterministically. With a monotonic clock the first entry is the
 * victim; the sample only matters when an injected clock steps back (e.g. replayed captures).
 */
export function oldestInSample<E extends BaseEntry>(table: Map<string, E>): E | undefined {
  let victim: E | undefined;
  let sampled = 0;
  for (const entry of table.values()) {
    if (victim === undefined || entry.lastSeen < victim.lastSeen) victim = entry;
    if (++sampled >= EVICTION_SAMPLE_SIZE) break;
  }
  return victim;
}

/** The fields of one record besides IDs and timestamp. */
export interface EmitFields {
  /** Record type. */
  type: RecordType;
  /** Flow ID. */
  flowId: string;
  /** Initiator direction. */
  direction: TrackedDirection;
  /** IANA protocol number. */
  protocol: number;
  /** Initiator address. */
  source: string;
  /** Responder address. */
  destination: string;
  /** Initiator port or 0. */
  sourcePort: number;
  /** Responder port or 0. */
  destinationPort: number;
  /** ICMP type or 0. */
  icmpType: number;
  /** ICMP code or 0. */
  icmpCode: number;
  /** Packets received. */
  rxPackets: number;
  /** Packets sent. */
  txPackets: number;
  /** Bytes received. */
  rxBytes: number;
  /** Bytes sent. */
  txBytes: number;
  /** Allowing/denying rule, when known. */
  ruleId: string | null;
}

/** Builds records and hands them to the sink in one batch per public call. */
export class Emitter {
  /** Monotonic clock (ms). */
  readonly clock: () => number;
  /** Wall clock for timestamps. */
  readonly wallClock: () => Date;
  /** Flow/event ID generator. */
  readonly randomId: () => string;
  #sink: RecordSink | undefined;
  #pending: FlowRecord[] = [];

  constructor(options: TrackerBaseOptions) {
    this.clock = options.clock ?? (() => performance.now());
    this.wallClock = options.wallClock ?? (() => new Date());
    this.randomId = options.randomId ?? uuidV4;
    this.#sink = options.sink;
  }

  /** Queues one record. */
  emit(f: EmitFields): void {
    if (this.#sink === undefined) return;
    const record: FlowRecord = {
      eventId: this.randomId(),
      timestamp: this.wallClock(),
      flowId: f.flowId,
      type: f.type,
      direction: f.direction,
      protocol: f.protocol,
      sourceIp: f.source,
      destIp: f.destination,
      sourcePort: f.sourcePort,
      destPort: f.destinationPort,
      icmpType: f.icmpType,
      icmpCode: f.icmpCode,
      rxPackets: BigInt(f.rxPackets),
      txPackets: BigInt(f.txPackets),
      rxBytes: BigInt(f.rxBytes),
      txBytes: BigInt(f.txBytes),
      conntrackId: 0,
    };
    if (f.ruleId !== null) record.ruleId = f.ruleId;
    this.#pending.push(record);
  }

  /** Writes the queued records, if any, as one batch. */
  flush(): void {
    if (this.#pending.length === 0 || this.#sink === undefined) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#sink.write(batch);
  }
}

/**
 * Checks a duration or count option.
 *
 * @throws {RangeError} When it is negative or not a number.
 */
export function nonNegative(name: string, value: number): number {
  if (!(value >= 0)) throw new RangeError(`Invalid ${name}: ${value}, must be a number ≥ 0`);
  return value;
}

/** Key of a TCP/UDP entry: the 4-tuple. */
export function tupleKey(
  source: string,
  destination: string,
  sourcePort: number,
  destinationPort: number,
): string {
  return `${source}|${destination}|${sourcePort}|${destinationPort}`;
}

/** Limits of an {@linkcode IdleTable}. */
export interface IdleTableLimits {
  /** Idle timeout (ms); 0 means the default. */
  timeoutMs?: number;
  /** Interval of `tick()` (ms). */
  cleanupIntervalMs?: number;
  /** Table cap; 0 = none. */
  maxEntries?: number;
}

/** Writes a start or end record of an entry. */
export type EntryRecorder<E> = (type: "start" | "end", entry: E, ruleId: string | null) => void;

/**
 * The table behind the UDP and ICMP trackers: entries that expire after an idle timeout, with
 * NetBird's cleanup cadence, a cap with sampled eviction, and an `end` record for every entry
 * that leaves. The trackers hold one and delegate to it.
 */
export class IdleTable<E extends BaseEntry> {
  /** Idle timeout (ms). */
  readonly timeoutMs: number;
  /** Interval of {@linkcode IdleTable.tick} (ms). */
  readonly cleanupIntervalMs: number;
  /** Table cap; 0 = none. */
  readonly maxEntries: number;
  /** Builds and batches the records. */
  readonly emitter: Emitter;
  /** The entries by key, least recently seen first. */
  readonly entries: Map<string, E> = new Map();
  #record: EntryRecorder<E>;
  #lastCleanup: number;
  #closed = false;

  constructor(
    options: IdleTableLimits & TrackerBaseOptions,
    defaults: Required<IdleTableLimits>,
    record: EntryRecorder<E>,
  ) {
    const timeout = nonNegative("timeoutMs", options.timeoutMs ?? 0);
    this.timeoutMs = timeout === 0 ? defaults.timeoutMs : timeout;
    this.cleanupIntervalMs = nonNegative(
      "cleanupIntervalMs",
      options.cleanupIntervalMs ?? defaults.cleanupIntervalMs,
    );
    this.maxEntries = nonNegative("maxEntries", options.maxEntries ?? defaults.maxEntries);
    this.emitter = new Emitter(options);
    this.#record = record;
    this.#lastCleanup = this.emitter.clock();
  }

  /** Whether {@linkcode IdleTable.close} ran: later packets are ignored. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Deletes timed-out entries, each with an `end` record. */
  cleanup(now: number): void {
    this.#lastCleanup = now;
    for (const [key, entry] of this.entries) {
      if (timedOut(entry, now, this.timeoutMs)) {
        this.entries.delete(key);
        this.#record("end", entry, null);
      }
    }
    this.emitter.flush();
  }

  /** Runs {@linkcode IdleTable.cleanup} when `cleanupIntervalMs` has passed; reports whether. */
  tick(now: number): boolean {
    if (this.#closed || now - this.#lastCleanup < this.cleanupIntervalMs) return false;
    this.cleanup(now);
    return true;
  }

  /** Emits an `end` record for every entry and empties the table. */
  flush(): void {
    for (const entry of this.entries.values()) this.#record("end", entry, null);
    this.entries.clear();
    this.emitter.flush();
  }

  /** {@linkcode IdleTable.flush}, then ignore every later packet. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
  }

  /** Counts a packet on an existing entry and marks it most recently seen. */
  refresh(entry: E, direction: TrackedDirection, size: number, now: number): void {
    touch(this.entries, entry, now);
    count(entry, direction, size);
  }

  /** Adds a new entry (evicting a sampled old one at the cap) and writes its `start` record. */
  insert(entry: E, ruleId: string | null): void {
    if (this.maxEntries > 0 && this.entries.size >= this.maxEntries) {
      const victim = oldestInSample(this.entries);
      if (victim !== undefined) {
        this.entries.delete(victim.key);
        this.#record("end", victim, null);
      }
    }
    this.entries.set(entry.key, entry);
    this.#record("start", entry, ruleId);
  }
}
