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
}

/**
 * Columnar table of live flows. Entries are addressed by slot; the conntrack id indexes them, but
 * is not unique on its own: the kernel's ids are 32-bit hashes, so two open connections can share
 * one (measured: about 1 in 20 storms of 20k flows). Entries with the same id are chained, and an
 * entry is identified by id plus original tuple ({@linkcode LiveFlowTable.find}).
 */
export class LiveFlowTable {
  #heads = new U32Index(); // id → first slot of its chain
  #next = new Int32Array(0); // slot → next slot with the same id, -1 = end
  #ids = new Uint32Array(0);
  #used = new Uint8Array(0);
  #size = 0;
  #free: number[] = [];
  #capacity = 0;
  #end = 0;
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
   * Creates the instance.
   *
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
    return this.#size;
  }

  /**
   * Reports whether any live flow has this conntrack id.
   *
   * @param id Conntrack id.
   * @returns `true` if present.
   */
  has(id: number): boolean {
    return this.#heads.has(id);
  }

  /** The slots of all live flows. */
  slots(): number[] {
    const out: number[] = [];
    for (let slot = 0; slot < this.#end; slot++) if (this.#used[slot] === 1) out.push(slot);
    return out;
  }

  /**
   * The conntrack id of a slot.
   *
   * @param slot A live slot.
   * @returns The id.
   */
  idOf(slot: number): number {
    return this.#ids[slot]!;
  }

  #grow(): void {
    const cap = Math.max(1024, this.#capacity * 2);
    const grow = <T extends Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array>(
      old: T,
      make: (n: number) => T,
      per = 1,
    ): T => {
      const a = make(cap * per);
      a.set(old as never);
      return a;
    };
    this.#next = grow(this.#next, (n) => new Int32Array(n));
    this.#ids = grow(this.#ids, (n) => new Uint32Array(n));
    this.#used = grow(this.#used, (n) => new Uint8Array(n));
    this.#src = grow(this.#src, (n) => new Uint32Array(n));
    this.#dst = grow(this.#dst, (n) => new Uint32Array(n));
    this.#sport = grow(this.#sport, (n) => new Uint16Array(n));
    this.#dport = grow(this.#dport, (n) => new Uint16Array(n));
    this.#proto = grow(this.#proto, (n) => new Uint8Array(n));
    this.#dir = grow(this.#dir, (n) => new Uint8Array(n));
    this.#icmp = grow(this.#icmp, (n) => new Uint16Array(n));
    this.#mark = grow(this.#mark, (n) => new Uint32Array(n));
    this.#seen = grow(this.#seen, (n) => new Uint32Array(n));
    if (this.#counters !== undefined) {
      this.#counters = grow(this.#counters, (n) => new Float64Array(n), 4);
    }
    if (this.#reported !== undefined) {
      this.#reported = grow(this.#reported, (n) => new Float64Array(n), 4);
      this.#reportedAt = grow(this.#reportedAt!, (n) => new Float64Array(n));
    }
    this.#capacity = cap;
  }

  /**
   * Finds the entry of a flow: same conntrack id and same original tuple.
   *
   * @param flow The flow.
   * @returns Its slot, or -1.
   */
  find(flow: Flow): number {
    for (let slot = this.#heads.get(flow.id) ?? -1; slot >= 0; slot = this.#next[slot]!) {
      if (this.#sameTuple(slot, flow)) return slot;
    }
    return -1;
  }

  #sameTuple(slot: number, flow: Flow): boolean {
    const o = flow.original;
    if (
      this.#proto[slot] !== o.proto.protocol || this.#sport[slot] !== o.proto.sourcePort ||
      this.#dport[slot] !== o.proto.destinationPort ||
      this.#icmp[slot] !== ((o.proto.icmpType << 8) | o.proto.icmpCode)
    ) return false;
    const v6 = this.#v6.get(slot);
    if (v6 !== undefined) return v6[0] === o.source && v6[1] === o.destination;
    return flow.family === 4 && this.#src[slot] === ipv4ToNumber(o.source) &&
      this.#dst[slot] === ipv4ToNumber(o.destination);
  }

  /**
   * Adds a flow, or returns the slot it already has.
   *
   * @param flow The flow.
   * @param direction Its direction.
   * @param now Monotonic ms: the flow's first "report" time (interim records count from here).
   * @returns Its slot.
   */
  add(flow: Flow, direction: Direction, now = 0): number {
    const existing = this.find(flow);
    if (existing >= 0) return existing;
    const slot = this.#free.pop() ?? this.#end++;
    if (slot >= this.#capacity) this.#grow();
    this.#ids[slot] = flow.id;
    this.#next[slot] = this.#heads.get(flow.id) ?? -1;
    this.#heads.set(flow.id, slot);
    this.#used[slot] = 1;
    this.#size++;
    this.#seen[slot] = 0;
    if (this.#reported !== undefined) {
      this.#reported.fill(0, slot * 4, slot * 4 + 4);
      this.#reportedAt![slot] = now;
    }
    const o = flow.original;
    if (flow.family === 4) {
      this.#src[slot] = ipv4ToNumber(o.source);
      this.#dst[slot] = ipv4ToNumber(o.destination);
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
    return slot;
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
   * @param slot A live slot.
   * @param original Original-direction counters.
   * @param reply Reply-direction counters.
   */
  updateCounters(slot: number, original: Counter, reply: Counter): void {
    this.#writeCounters(slot, original, reply);
  }

  /**
   * Rebuilds an entry.
   *
   * @param slot A slot.
   * @returns The entry, or `undefined` if the slot is not live.
   */
  get(slot: number): LiveFlow | undefined {
    if (this.#used[slot] !== 1) return undefined;
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
        id: this.#ids[slot]!,
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
   * When the flow's last record (start or update) was written, in monotonic ms.
   *
   * @param slot A live slot.
   * @returns The time, or `undefined` if reports are not kept.
   */
  reportedAt(slot: number): number | undefined {
    return this.#reportedAt?.[slot];
  }

  /**
   * Subtracts what was already reported from cumulative counters, and (with `now`) records these
   * counters as reported.
   *
   * @param slot A live slot.
   * @param original Cumulative original-direction counters.
   * @param reply Cumulative reply-direction counters.
   * @param now Monotonic ms to record as report time; omit to only compute.
   * @returns The deltas (never negative), or the counters unchanged when no report is kept.
   */
  delta(
    slot: number,
    original: Counter,
    reply: Counter,
    now?: number,
  ): { original: Counter; reply: Counter } {
    const r = this.#reported;
    if (r === undefined) return { original, reply };
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
   * Marks a live flow as seen in the dump of resync `epoch`.
   *
   * @param slot A live slot.
   * @param epoch Resync number (never 0).
   */
  markSeen(slot: number, epoch: number): void {
    this.#seen[slot] = epoch;
  }

  /**
   * Reports whether a slot was marked in `epoch`.
   *
   * @param slot A slot.
   * @param epoch Resync number.
   * @returns `false` also when the slot is not live.
   */
  seenIn(slot: number, epoch: number): boolean {
    return this.#used[slot] === 1 && this.#seen[slot] === epoch;
  }

  /**
   * The slots of live flows not marked in `epoch`: what a dump no longer showed.
   *
   * @param epoch Resync number.
   * @returns The slots.
   */
  unseen(epoch: number): number[] {
    const out: number[] = [];
    for (let slot = 0; slot < this.#end; slot++) {
      if (this.#used[slot] === 1 && this.#seen[slot] !== epoch) out.push(slot);
    }
    return out;
  }

  /**
   * Removes an entry.
   *
   * @param slot A slot.
   * @returns `true` if it was live.
   */
  remove(slot: number): boolean {
    if (this.#used[slot] !== 1) return false;
    const id = this.#ids[slot]!;
    const head = this.#heads.get(id)!;
    if (head === slot) {
      const next = this.#next[slot]!;
      if (next < 0) this.#heads.delete(id);
      else this.#heads.set(id, next);
    } else {
      let prev = head;
      while (this.#next[prev] !== slot) prev = this.#next[prev]!;
      this.#next[prev] = this.#next[slot]!;
    }
    this.#used[slot] = 0;
    this.#v6.delete(slot);
    this.#free.push(slot);
    this.#size--;
    return true;
  }
}
