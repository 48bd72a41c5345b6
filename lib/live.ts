/**
 * The live-flow table: every relevant connection the tracker has seen start and not yet end,
 * with its last known counters. Resync reconciles it with a dump of the kernel table.
 *
 * Storage is columnar (typed arrays indexed by slot, plus one id → slot map), about 50 bytes per
 * flow (80 once counters are known), so a router with a million open connections stays within
 * its memory budget. IPv6 addresses, rare in comparison, are kept as strings in a side map.
 *
 * @module
 */

import type { Counter, Flow } from "./flow.ts";
import { ipv4ToNumber } from "./net.ts";
import type { Direction } from "./overlay.ts";

const DIRECTIONS: readonly Direction[] = ["unknown", "ingress", "egress"];
const DIRECTION_CODE: Record<Direction, number> = { unknown: 0, ingress: 1, egress: 2 };

/** One entry of the table, rebuilt as plain values. */
export interface LiveFlow {
  /** The flow as last seen (tuple from its start; counters as last known). */
  flow: Flow;
  /** Direction decided at start. */
  direction: Direction;
}

function numberToIpv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

/**
 * A u32 → slot index in typed arrays (open addressing, linear probing, backward-shift deletion):
 * 8 bytes per bucket at most 50 % load, outside the JS heap, so a million entries cost ~16 MB and
 * nothing for the garbage collector to scan. The subset of `Map` the table needs.
 */
class U32Index {
  #keys = new Uint32Array(0);
  #values = new Int32Array(0); // -1 = empty bucket
  #mask = -1;
  #size = 0;

  constructor() {
    this.#resize(1024);
  }

  get size(): number {
    return this.#size;
  }

  #bucket(key: number): number {
    // Fibonacci hashing spreads the kernel's ids (already hashes) and sequential test ids alike.
    return Math.imul(key, 0x9e3779b1) >>> 0 & this.#mask;
  }

  #resize(capacity: number): void {
    const keys = this.#keys;
    const values = this.#values;
    this.#keys = new Uint32Array(capacity);
    this.#values = new Int32Array(capacity).fill(-1);
    this.#mask = capacity - 1;
    this.#size = 0;
    for (let i = 0; i < values.length; i++) {
      if (values[i]! >= 0) this.set(keys[i]!, values[i]!);
    }
  }

  get(key: number): number | undefined {
    const k = key >>> 0;
    for (let i = this.#bucket(k);; i = (i + 1) & this.#mask) {
      const v = this.#values[i]!;
      if (v < 0) return undefined;
      if (this.#keys[i] === k) return v;
    }
  }

  has(key: number): boolean {
    return this.get(key) !== undefined;
  }

  set(key: number, value: number): void {
    if ((this.#size + 1) * 2 > this.#values.length) this.#resize(this.#values.length * 2);
    const k = key >>> 0;
    for (let i = this.#bucket(k);; i = (i + 1) & this.#mask) {
      const v = this.#values[i]!;
      if (v < 0) {
        this.#keys[i] = k;
        this.#values[i] = value;
        this.#size++;
        return;
      }
      if (this.#keys[i] === k) {
        this.#values[i] = value;
        return;
      }
    }
  }

  delete(key: number): boolean {
    const k = key >>> 0;
    const mask = this.#mask;
    let i = this.#bucket(k);
    for (;; i = (i + 1) & mask) {
      const v = this.#values[i]!;
      if (v < 0) return false;
      if (this.#keys[i] === k) break;
    }
    // Backward-shift deletion keeps probe chains intact without tombstones.
    let hole = i;
    for (let j = (i + 1) & mask;; j = (j + 1) & mask) {
      if (this.#values[j]! < 0) break;
      const home = this.#bucket(this.#keys[j]!);
      // Move j into the hole if its home bucket is not in the (hole, j] range.
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!between) {
        this.#keys[hole] = this.#keys[j]!;
        this.#values[hole] = this.#values[j]!;
        hole = j;
      }
    }
    this.#values[hole] = -1;
    this.#size--;
    return true;
  }

  *entries(): Generator<[number, number]> {
    for (let i = 0; i < this.#values.length; i++) {
      const v = this.#values[i]!;
      if (v >= 0) yield [this.#keys[i]!, v];
    }
  }

  *keys(): Generator<number> {
    for (const [k] of this.entries()) yield k;
  }
}

/** Columnar table of live flows keyed by conntrack id. */
export class LiveFlowTable {
  #slots = new U32Index();
  #free: number[] = [];
  #capacity = 0;
  #next = 0;
  #src = new Uint32Array(0);
  #dst = new Uint32Array(0);
  #sport = new Uint16Array(0);
  #dport = new Uint16Array(0);
  #proto = new Uint8Array(0);
  #dir = new Uint8Array(0);
  #icmp = new Uint16Array(0); // type << 8 | code
  #mark = new Uint32Array(0);
  /** 4 per slot (orig packets, orig bytes, reply packets, reply bytes); allocated on first use. */
  #counters: Float64Array | undefined;
  #seen = new Uint32Array(0); // resync epoch in which the slot was last seen in a dump
  /** With interim records: counters already reported (4 per slot) and when (monotonic ms). */
  #reported: Float64Array | undefined;
  #reportedAt: Float64Array | undefined;
  #v6 = new Map<number, [string, string]>(); // slot → [source, destination]

  /**
   * @param options `reports`: keep per-flow reported counters and report times, for interim
   *   records (`--active-timeout`).
   */
  constructor(options: { reports?: boolean } = {}) {
    if (options.reports) {
      this.#reported = new Float64Array(0);
      this.#reportedAt = new Float64Array(0);
    }
  }

  /** Number of live flows. */
  get size(): number {
    return this.#slots.size;
  }

  /**
   * Reports whether a conntrack id is live.
   *
   * @param id Conntrack id.
   * @returns `true` if present.
   */
  has(id: number): boolean {
    return this.#slots.has(id);
  }

  /** The ids of all live flows (a copy, safe to mutate the table while iterating it). */
  ids(): number[] {
    return [...this.#slots.keys()];
  }

  #grow(): void {
    const cap = Math.max(1024, this.#capacity * 2);
    const grow = <T extends Uint8Array | Uint16Array | Uint32Array | Float64Array>(
      old: T,
      make: (n: number) => T,
      per = 1,
    ): T => {
      const a = make(cap * per);
      a.set(old as never);
      return a;
    };
    this.#src = grow(this.#src, (n) => new Uint32Array(n));
    this.#dst = grow(this.#dst, (n) => new Uint32Array(n));
    this.#sport = grow(this.#sport, (n) => new Uint16Array(n));
    this.#dport = grow(this.#dport, (n) => new Uint16Array(n));
    this.#proto = grow(this.#proto, (n) => new Uint8Array(n));
    this.#dir = grow(this.#dir, (n) => new Uint8Array(n));
    this.#icmp = grow(this.#icmp, (n) => new Uint16Array(n));
    this.#mark = grow(this.#mark, (n) => new Uint32Array(n));
    this.#seen = grow(this.#seen, (n) => new Uint32Array(n));
    if (this.#reported !== undefined) {
      this.#reported = grow(this.#reported, (n) => new Float64Array(n), 4);
      this.#reportedAt = grow(this.#reportedAt!, (n) => new Float64Array(n));
    }
    if (this.#counters !== undefined) {
      this.#counters = grow(this.#counters, (n) => new Float64Array(n), 4);
    }
    this.#capacity = cap;
  }

  /**
   * Adds a flow (or replaces the entry with the same id).
   *
   * @param flow The flow.
   * @param direction Its direction.
   * @param now Monotonic ms: the flow's first "report" time (interim records count from here).
   */
  set(flow: Flow, direction: Direction, now = 0): void {
    let slot = this.#slots.get(flow.id);
    if (slot === undefined) {
      slot = this.#free.pop() ?? this.#next++;
      if (slot >= this.#capacity) this.#grow();
      this.#slots.set(flow.id, slot);
      this.#seen[slot] = 0;
      if (this.#reported !== undefined) {
        this.#reported.fill(0, slot * 4, slot * 4 + 4);
        this.#reportedAt![slot] = now;
      }
    }
    const o = flow.original;
    if (flow.family === 4) {
      this.#src[slot] = ipv4ToNumber(o.source);
      this.#dst[slot] = ipv4ToNumber(o.destination);
      this.#v6.delete(slot);
    } else {
      this.#v6.set(slot, [o.source, o.destination]);
    }
    this.#sport[slot] = o.proto.sourcePort;
    this.#dport[slot] = o.proto.destinationPort;
    this.#proto[slot] = o.proto.protocol;
    this.#dir[slot] = DIRECTION_CODE[direction];
    this.#icmp[slot] = (o.proto.icmpType << 8) | o.proto.icmpCode;
    this.#mark[slot] = flow.mark >>> 0;
    this.#writeCounters(slot, flow.countersOriginal, flow.countersReply);
  }

  #writeCounters(slot: number, original: Counter, reply: Counter): void {
    let c = this.#counters;
    if (c === undefined) {
      if (original.packets === 0n && reply.packets === 0n) return; // nothing to remember yet
      c = this.#counters = new Float64Array(this.#capacity * 4);
    }
    c[slot * 4] = Number(original.packets);
    c[slot * 4 + 1] = Number(original.bytes);
    c[slot * 4 + 2] = Number(reply.packets);
    c[slot * 4 + 3] = Number(reply.bytes);
  }

  /**
   * Records newer counters for a live flow (from a table dump).
   *
   * @param id Conntrack id.
   * @param original Original-direction counters.
   * @param reply Reply-direction counters.
   * @returns `false` if the id is not live.
   */
  updateCounters(id: number, original: Counter, reply: Counter): boolean {
    const slot = this.#slots.get(id);
    if (slot === undefined) return false;
    this.#writeCounters(slot, original, reply);
    return true;
  }

  /**
   * Reports whether a flow has the same id and original tuple as the live entry. Conntrack ids
   * are hashes and can in principle repeat; a dump entry with a known id but another tuple is a
   * different connection.
   *
   * @param flow The flow to compare.
   * @returns `true` when the live entry describes the same connection.
   */
  matches(flow: Flow): boolean {
    const slot = this.#slots.get(flow.id);
    if (slot === undefined) return false;
    const o = flow.original;
    if (
      this.#proto[slot] !== o.proto.protocol || this.#sport[slot] !== o.proto.sourcePort ||
      this.#dport[slot] !== o.proto.destinationPort
    ) return false;
    const v6 = this.#v6.get(slot);
    if (v6 !== undefined) return v6[0] === o.source && v6[1] === o.destination;
    return flow.family === 4 && this.#src[slot] === ipv4ToNumber(o.source) &&
      this.#dst[slot] === ipv4ToNumber(o.destination);
  }

  /**
   * Rebuilds an entry.
   *
   * @param id Conntrack id.
   * @returns The entry, or `undefined` if not live.
   */
  get(id: number): LiveFlow | undefined {
    const slot = this.#slots.get(id);
    if (slot === undefined) return undefined;
    const v6 = this.#v6.get(slot);
    const source = v6?.[0] ?? numberToIpv4(this.#src[slot]!);
    const destination = v6?.[1] ?? numberToIpv4(this.#dst[slot]!);
    const protocol = this.#proto[slot]!;
    const sourcePort = this.#sport[slot]!;
    const destinationPort = this.#dport[slot]!;
    const icmp = this.#icmp[slot]!;
    const c = this.#counters;
    const at = (i: number): bigint => c === undefined ? 0n : BigInt(c[slot * 4 + i]!);
    const countersOriginal = { packets: at(0), bytes: at(1) };
    const countersReply = { packets: at(2), bytes: at(3) };
    const proto = {
      protocol,
      sourcePort,
      destinationPort,
      icmpType: icmp >> 8,
      icmpCode: icmp & 0xff,
      icmpId: 0,
    };
    return {
      direction: DIRECTIONS[this.#dir[slot]!]!,
      flow: {
        id,
        family: v6 === undefined ? 4 : 6,
        original: { source, destination, proto },
        reply: {
          source: destination,
          destination: source,
          proto: { ...proto, sourcePort: destinationPort, destinationPort: sourcePort },
        },
        mark: this.#mark[slot]!,
        zone: 0,
        status: 0,
        countersOriginal,
        countersReply,
        hasCounters: countersOriginal.packets > 0n || countersReply.packets > 0n,
      },
    };
  }

  /**
   * Marks a live flow as seen in the dump of resync `epoch`.
   *
   * @param id Conntrack id.
   * @param epoch Resync number (never 0).
   */
  markSeen(id: number, epoch: number): void {
    const slot = this.#slots.get(id);
    if (slot !== undefined) this.#seen[slot] = epoch;
  }

  /**
   * When the flow's last record (start or update) was written, in monotonic ms.
   *
   * @param id Conntrack id.
   * @returns The time, or `undefined` if not live or reports are not kept.
   */
  reportedAt(id: number): number | undefined {
    const slot = this.#slots.get(id);
    return slot === undefined || this.#reportedAt === undefined
      ? undefined
      : this.#reportedAt[slot];
  }

  /**
   * Subtracts what was already reported from cumulative counters, and (with `now`) records these
   * counters as reported.
   *
   * @param id Conntrack id.
   * @param original Cumulative original-direction counters.
   * @param reply Cumulative reply-direction counters.
   * @param now Monotonic ms to record as report time; omit to only compute.
   * @returns The deltas (never negative), or the counters unchanged when no report is kept.
   */
  delta(
    id: number,
    original: Counter,
    reply: Counter,
    now?: number,
  ): { original: Counter; reply: Counter } {
    const slot = this.#slots.get(id);
    const r = this.#reported;
    if (slot === undefined || r === undefined) return { original, reply };
    const o = slot * 4;
    const sub = (v: bigint, i: number): bigint => {
      const d = v - BigInt(r[o + i]!);
      return d > 0n ? d : 0n;
    };
    const out = {
      original: { packets: sub(original.packets, 0), bytes: sub(original.bytes, 1) },
      reply: { packets: sub(reply.packets, 2), bytes: sub(reply.bytes, 3) },
    };
    if (now !== undefined) {
      r[o] = Number(original.packets);
      r[o + 1] = Number(original.bytes);
      r[o + 2] = Number(reply.packets);
      r[o + 3] = Number(reply.bytes);
      this.#reportedAt![slot] = now;
    }
    return out;
  }

  /**
   * Reports whether a live flow was marked in `epoch`.
   *
   * @param id Conntrack id.
   * @param epoch Resync number.
   * @returns `false` also when the id is not live.
   */
  seenIn(id: number, epoch: number): boolean {
    const slot = this.#slots.get(id);
    return slot !== undefined && this.#seen[slot] === epoch;
  }

  /**
   * The ids of live flows not marked in `epoch`: what a dump no longer showed.
   *
   * @param epoch Resync number.
   * @returns The ids.
   */
  unseen(epoch: number): number[] {
    const out: number[] = [];
    for (const [id, slot] of this.#slots.entries()) if (this.#seen[slot] !== epoch) out.push(id);
    return out;
  }

  /**
   * Removes an entry.
   *
   * @param id Conntrack id.
   * @returns `true` if it was live.
   */
  delete(id: number): boolean {
    const slot = this.#slots.get(id);
    if (slot === undefined) return false;
    this.#slots.delete(id);
    this.#v6.delete(slot);
    this.#free.push(slot);
    return true;
  }
}
