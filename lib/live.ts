/**
 * The live-flow table: every relevant connection the tracker has seen start and not yet end,
 * with its last known counters. Resync reconciles it with a dump of the kernel table.
 *
 * Storage is columnar (typed arrays indexed by slot, plus one id → slot index), about 31 bytes
 * per flow (63 once counters are known), so a router with a million open connections stays within
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
 * A u32 key → slot index (open addressing, linear probing, backward-shift deletion). Buckets hold
 * only the slot: the key is read back from the table's own id column, so a bucket costs 4 bytes,
 * outside the JS heap, and a million entries (at most 50 % load) cost 8 MB and nothing for the
 * garbage collector to scan. The subset of `Map` the table needs.
 */
class SlotIndex {
  #slots = new Int32Array(0); // -1 = empty bucket
  #mask = -1;
  #size = 0;
  #keyOf: (slot: number) => number;

  constructor(keyOf: (slot: number) => number) {
    this.#keyOf = keyOf;
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
    const old = this.#slots;
    this.#slots = new Int32Array(capacity).fill(-1);
    this.#mask = capacity - 1;
    this.#size = 0;
    for (let i = 0; i < old.length; i++) {
      const slot = old[i]!;
      if (slot >= 0) this.#insert(this.#keyOf(slot) >>> 0, slot);
    }
  }

  #insert(key: number, slot: number): void {
    const slots = this.#slots;
    let i = this.#bucket(key);
    while (slots[i]! >= 0) i = (i + 1) & this.#mask;
    slots[i] = slot;
    this.#size++;
  }

  #find(key: number): number {
    const slots = this.#slots;
    const k = key >>> 0;
    for (let i = this.#bucket(k);; i = (i + 1) & this.#mask) {
      const slot = slots[i]!;
      if (slot < 0 || this.#keyOf(slot) >>> 0 === k) return i;
    }
  }

  get(key: number): number | undefined {
    const slot = this.#slots[this.#find(key)]!;
    return slot < 0 ? undefined : slot;
  }

  has(key: number): boolean {
    return this.#slots[this.#find(key)]! >= 0;
  }

  /** Points `key` at `slot`; the id column must already hold `key` for `slot`. */
  set(key: number, slot: number): void {
    const i = this.#find(key);
    if (this.#slots[i]! >= 0) {
      this.#slots[i] = slot;
      return;
    }
    if ((this.#size + 1) * 2 > this.#slots.length) {
      this.#resize(this.#slots.length * 2);
      this.#insert(key >>> 0, slot);
      return;
    }
    this.#slots[i] = slot;
    this.#size++;
  }

  delete(key: number): boolean {
    const slots = this.#slots;
    const mask = this.#mask;
    const i = this.#find(key);
    if (slots[i]! < 0) return false;
    // Backward-shift deletion keeps probe chains intact without tombstones.
    let hole = i;
    for (let j = (i + 1) & mask;; j = (j + 1) & mask) {
      const slot = slots[j]!;
      if (slot < 0) break;
      const home = this.#bucket(this.#keyOf(slot) >>> 0);
      // Move j into the hole if its home bucket is not in the (hole, j] range.
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!between) {
        slots[hole] = slot;
        hole = j;
      }
    }
    slots[hole] = -1;
    this.#size--;
    return true;
  }
}

/** ICMP and ICMPv6: their type and code take the place of the ports in a slot. */
function isIcmp(protocol: number): boolean {
  return protocol === 1 || protocol === 58;
}

const USED = 0x80; // flag bit in the direction column
const DIRECTION_MASK = 0x03;

/**
 * Columnar table of live flows. Entries are addressed by slot; the conntrack id indexes them, but
 * is not unique on its own: the kernel's ids are 32-bit hashes, so two open connections can share
 * one (measured: about 1 in 20 storms of 20k flows). Entries with the same id are chained, and an
 * entry is identified by id plus original tuple ({@linkcode LiveFlowTable.find}).
 *
 * A slot costs 23 bytes (id, chain link, IPv4 addresses, ports or ICMP type/code, protocol,
 * direction and use flag, resync epoch) plus 8 bytes of index at worst; marks (4 bytes) and
 * counters (32 bytes) get their columns only once a flow has them. A million open flows take
 * about 32 MB, outside the JS heap.
 */
export class LiveFlowTable {
  #ids = new Uint32Array(0);
  #heads = new SlotIndex((slot) => this.#ids[slot]!); // id → first slot of its chain
  /** Slot → next slot with the same id (-1 = end); for a free slot: the next free slot. */
  #next = new Int32Array(0);
  #flags = new Uint8Array(0); // USED | direction code
  #size = 0;
  #freeHead = -1;
  #capacity = 0;
  #end = 0;
  #src = new Uint32Array(0);
  #dst = new Uint32Array(0);
  /** Source and destination ports; for ICMP, `type << 8 | code` and 0. */
  #sport = new Uint16Array(0);
  #dport = new Uint16Array(0);
  #proto = new Uint8Array(0);
  /** Allocated when the first flow with a non-zero mark arrives. */
  #mark: Uint32Array | undefined;
  /** 4 per slot (orig packets, orig bytes, reply packets, reply bytes); allocated on first use. */
  #counters: Float64Array | undefined;
  /** Dump epoch in which the slot was last seen, as a code 1..255 (0 = never). */
  #seen = new Uint8Array(0);
  #epoch = 0; // the caller's epoch number that #epochCode stands for
  #epochCode = 0;
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
    for (let slot = 0; slot < this.#end; slot++) if (this.#isUsed(slot)) out.push(slot);
    return out;
  }

  #isUsed(slot: number): boolean {
    return (this.#flags[slot]! & USED) !== 0;
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
    this.#flags = grow(this.#flags, (n) => new Uint8Array(n));
    this.#src = grow(this.#src, (n) => new Uint32Array(n));
    this.#dst = grow(this.#dst, (n) => new Uint32Array(n));
    this.#sport = grow(this.#sport, (n) => new Uint16Array(n));
    this.#dport = grow(this.#dport, (n) => new Uint16Array(n));
    this.#proto = grow(this.#proto, (n) => new Uint8Array(n));
    this.#seen = grow(this.#seen, (n) => new Uint8Array(n));
    if (this.#mark !== undefined) this.#mark = grow(this.#mark, (n) => new Uint32Array(n));
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
    const p = o.proto;
    if (this.#proto[slot] !== p.protocol) return false;
    if (isIcmp(p.protocol)) {
      if (this.#sport[slot] !== ((p.icmpType << 8) | p.icmpCode)) return false;
    } else if (this.#sport[slot] !== p.sourcePort || this.#dport[slot] !== p.destinationPort) {
      return false;
    }
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
    let slot = this.#freeHead;
    if (slot >= 0) {
      this.#freeHead = this.#next[slot]!;
    } else {
      slot = this.#end++;
      if (slot >= this.#capacity) this.#grow();
    }
    this.#ids[slot] = flow.id;
    this.#next[slot] = this.#heads.get(flow.id) ?? -1;
    this.#heads.set(flow.id, slot);
    this.#flags[slot] = USED | DIRECTION_CODE[direction];
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
    const p = o.proto;
    this.#proto[slot] = p.protocol;
    if (isIcmp(p.protocol)) {
      this.#sport[slot] = (p.icmpType << 8) | p.icmpCode;
      this.#dport[slot] = 0;
    } else {
      this.#sport[slot] = p.sourcePort;
      this.#dport[slot] = p.destinationPort;
    }
    const mark = flow.mark >>> 0;
    if (mark !== 0 && this.#mark === undefined) this.#mark = new Uint32Array(this.#capacity);
    if (this.#mark !== undefined) this.#mark[slot] = mark;
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
    if (!this.#isUsed(slot)) return undefined;
    const v6 = this.#v6.get(slot);
    const source = v6?.[0] ?? numberToIpv4(this.#src[slot]!);
    const destination = v6?.[1] ?? numberToIpv4(this.#dst[slot]!);
    const protocol = this.#proto[slot]!;
    const icmp = isIcmp(protocol);
    const sourcePort = icmp ? 0 : this.#sport[slot]!;
    const destinationPort = icmp ? 0 : this.#dport[slot]!;
    const icmpTypeCode = icmp ? this.#sport[slot]! : 0;
    const c = this.#counters;
    const at = (i: number): bigint => c === undefined ? 0n : BigInt(c[slot * 4 + i]!);
    const countersOriginal = { packets: at(0), bytes: at(1) };
    const countersReply = { packets: at(2), bytes: at(3) };
    const proto = {
      protocol,
      sourcePort,
      destinationPort,
      icmpType: icmpTypeCode >> 8,
      icmpCode: icmpTypeCode & 0xff,
      icmpId: 0,
    };
    return {
      direction: DIRECTIONS[this.#flags[slot]! & DIRECTION_MASK]!,
      flow: {
        id: this.#ids[slot]!,
        family: v6 === undefined ? 4 : 6,
        original: { source, destination, proto },
        reply: {
          source: destination,
          destination: source,
          proto: { ...proto, sourcePort: destinationPort, destinationPort: sourcePort },
        },
        mark: this.#mark?.[slot] ?? 0,
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
   * The one-byte code of a dump epoch. Only the newest epoch is remembered exactly: a new epoch
   * takes the next code (1..255), and when the codes wrap, every mark is cleared first, so an old
   * mark can never pass for a new one.
   */
  #codeOf(epoch: number, advance: boolean): number {
    if (epoch === this.#epoch) return this.#epochCode;
    if (!advance) return 0; // an epoch never marked
    if (epoch < this.#epoch) {
      throw new RangeError(`Dump epoch ${epoch} is older than ${this.#epoch}`);
    }
    this.#epoch = epoch;
    if (this.#epochCode === 255) {
      this.#seen.fill(0);
      this.#epochCode = 0;
    }
    return ++this.#epochCode;
  }

  /**
   * Marks a live flow as seen in the dump of resync `epoch`. Epochs only grow; the marks of the
   * newest one are the ones {@linkcode LiveFlowTable.seenIn} and {@linkcode LiveFlowTable.unseen}
   * report.
   *
   * @param slot A live slot.
   * @param epoch Dump number (never 0; not older than any epoch marked before).
   */
  markSeen(slot: number, epoch: number): void {
    this.#seen[slot] = this.#codeOf(epoch, true);
  }

  /**
   * Reports whether a slot was marked in `epoch`, the newest epoch marked.
   *
   * @param slot A slot.
   * @param epoch Dump number.
   * @returns `false` also when the slot is not live, or nothing was marked in `epoch`.
   */
  seenIn(slot: number, epoch: number): boolean {
    const code = this.#codeOf(epoch, false);
    return code !== 0 && this.#isUsed(slot) && this.#seen[slot] === code;
  }

  /**
   * The slots of live flows not marked in `epoch`: what a dump no longer showed. Lazy, so that a
   * million slots are never listed at once; the table must not change while it is iterated.
   *
   * @param epoch Dump number.
   * @returns The slots.
   */
  *unseen(epoch: number): Generator<number> {
    const code = this.#codeOf(epoch, false);
    for (let slot = 0; slot < this.#end; slot++) {
      if (this.#isUsed(slot) && (code === 0 || this.#seen[slot] !== code)) yield slot;
    }
  }

  /**
   * Removes an entry. Its slot is reused by a later {@linkcode LiveFlowTable.add}.
   *
   * @param slot A slot.
   * @returns `true` if it was live.
   */
  remove(slot: number): boolean {
    if (!this.#isUsed(slot)) return false;
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
    this.#flags[slot] = 0;
    this.#v6.delete(slot);
    this.#next[slot] = this.#freeHead;
    this.#freeHead = slot;
    this.#size--;
    return true;
  }
}
