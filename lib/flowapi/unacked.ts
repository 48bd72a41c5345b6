/**
 * Where the Flow API client keeps events the receiver has not acknowledged yet: NetBird's
 * `eventsWithoutAcks`, bounded (the oldest event makes room for a new one, counted) and, with
 * {@linkcode RedisUnackedStore}, kept across restarts.
 *
 * Both stores keep every event in memory (a `Map` in insertion order, which is also the eviction
 * order), so reading them is synchronous and cheap; the Redis store writes through to Redis and
 * resolves only once Redis has the change.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { createClient, type RedisClientType } from "redis";

const log = getLogger(["netbird-ct", "flow", "store"]);

/** Default capacity of an un-acked store (`--unacked-max`). */
export const DEFAULT_UNACKED_MAX = 100_000;

/** One event waiting for its ack. */
export interface UnackedEvent {
  /** The event ID as UUID text (lower case): the key, and what the ack names. */
  id: string;
  /** The encoded `flow.FlowEvent`, resent byte for byte (same event_id, so receivers dedupe). */
  data: Uint8Array;
}

/**
 * A bounded set of events waiting for their ack, oldest first.
 *
 * The in-memory view (`size`, `has`, `events`) changes synchronously when `add`/`delete` are
 * called; the returned promises resolve once the change is stored (for a persistent store,
 * durably) and reject when it could not be persisted (the in-memory view keeps the change).
 */
export interface UnackedStore {
  /** Capacity in events. */
  readonly maxEvents: number;
  /** Events held. */
  readonly size: number;
  /** Events dropped to make room (oldest first), since the store was created or opened. */
  readonly dropped: number;
  /**
   * Whether an event is held.
   *
   * @param id Event UUID text.
   */
  has(id: string): boolean;
  /** The held events, oldest first (a snapshot). */
  events(): UnackedEvent[];
  /**
   * Adds an event (replacing one with the same ID in place). When the store is full, the oldest
   * events are dropped first and counted in {@linkcode UnackedStore.dropped}.
   *
   * @param event The event.
   * @returns The IDs of the events dropped to make room.
   */
  add(event: UnackedEvent): Promise<string[]>;
  /**
   * Removes an event (its ack arrived).
   *
   * @param id Event UUID text.
   * @returns Whether it was held.
   */
  delete(id: string): Promise<boolean>;
}

/** Options of {@linkcode MemoryUnackedStore}. */
export interface MemoryUnackedStoreOptions {
  /** Capacity (default {@linkcode DEFAULT_UNACKED_MAX}). */
  maxEvents?: number;
}

function checkMax(maxEvents: number): number {
  if (!Number.isSafeInteger(maxEvents) || maxEvents < 1) {
    throw new RangeError(`Cannot create un-acked store: maxEvents ${maxEvents} is not >= 1`);
  }
  return maxEvents;
}

/**
 * The un-acked store in memory only: bounded, drop-oldest, lost on exit.
 *
 * @example Usage
 * ```ts
 * import { MemoryUnackedStore } from "./unacked.ts";
 * const store = new MemoryUnackedStore({ maxEvents: 2 });
 * await store.add({ id: "a", data: new Uint8Array([1]) });
 * await store.add({ id: "b", data: new Uint8Array([2]) });
 * const dropped = await store.add({ id: "c", data: new Uint8Array([3]) });
 * if (dropped[0] !== "a" || store.dropped !== 1 || store.size !== 2) throw new Error("bound");
 * ```
 */
export class MemoryUnackedStore implements UnackedStore {
  #max: number;
  #events = new Map<string, Uint8Array>();
  #dropped = 0;

  /**
   * Creates an empty store.
   *
   * @param options Capacity.
   */
  constructor(options: MemoryUnackedStoreOptions = {}) {
    this.#max = checkMax(options.maxEvents ?? DEFAULT_UNACKED_MAX);
  }

  /** Capacity in events. */
  get maxEvents(): number {
    return this.#max;
  }

  /** Events held. */
  get size(): number {
    return this.#events.size;
  }

  /** Events dropped to make room. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Whether an event is held.
   *
   * @param id Event UUID text.
   * @returns `true` when held.
   */
  has(id: string): boolean {
    return this.#events.has(id);
  }

  /**
   * The held events, oldest first.
   *
   * @returns A snapshot.
   */
  events(): UnackedEvent[] {
    return Array.from(this.#events, ([id, data]) => ({ id, data }));
  }

  /**
   * Adds an event, dropping the oldest ones when full.
   *
   * @param event The event.
   * @returns The dropped IDs.
   */
  add(event: UnackedEvent): Promise<string[]> {
    return Promise.resolve(this.addSync(event));
  }

  /**
   * Removes an event.
   *
   * @param id Event UUID text.
   * @returns Whether it was held.
   */
  delete(id: string): Promise<boolean> {
    return Promise.resolve(this.#events.delete(id));
  }

  /**
   * {@linkcode MemoryUnackedStore.add}, synchronously (also the in-memory half of the Redis
   * store).
   *
   * @param event The event.
   * @returns The dropped IDs.
   */
  addSync(event: UnackedEvent): string[] {
    const dropped: string[] = [];
    if (!this.#events.has(event.id)) {
      for (const id of this.#events.keys()) {
        if (this.#events.size < this.#max) break;
        this.#events.delete(id);
        dropped.push(id);
      }
    }
    this.#events.set(event.id, event.data);
    this.#dropped += dropped.length;
    return dropped;
  }

  /**
   * Removes an event synchronously.
   *
   * @param id Event UUID text.
   * @returns Whether it was held.
   */
  deleteSync(id: string): boolean {
    return this.#events.delete(id);
  }
}

/** Options of {@linkcode RedisUnackedStore.open}. */
export interface RedisUnackedStoreOptions {
  /** Capacity (default {@linkcode DEFAULT_UNACKED_MAX}); extra events found on open are dropped. */
  maxEvents?: number;
  /** Key prefix: the store uses `PREFIX:events` (hash) and `PREFIX:order` (sorted set). */
  keyPrefix?: string;
  /** Connect timeout in ms (default 5000). */
  connectTimeoutMs?: number;
}

/** Default key prefix of {@linkcode RedisUnackedStore}. */
export const DEFAULT_REDIS_PREFIX = "netbird-ct:unacked";

function base64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function unbase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** `destroy()` throws on a client that is already closed. */
function destroy(client: RedisClientType): void {
  try {
    if (client.isOpen) client.destroy();
  } catch {
    // already closed
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * The un-acked store kept in Redis (and mirrored in memory): events survive a restart of
 * netbird-ct. Layout: hash `PREFIX:events` (event UUID → base64 of the encoded `FlowEvent`) and
 * sorted set `PREFIX:order` (event UUID scored by an insertion sequence, for oldest-first
 * eviction). Every change is one `MULTI` transaction.
 *
 * When Redis is unreachable, changes still apply in memory, the promise rejects, and once Redis
 * is back the whole in-memory set is written again (so nothing acked comes back and nothing
 * un-acked is missing).
 */
export class RedisUnackedStore implements UnackedStore, AsyncDisposable {
  #memory: MemoryUnackedStore;
  #client: RedisClientType;
  #events: string;
  #order: string;
  #seq = new Map<string, number>();
  #next = 1;
  #dirty = false;
  #resyncing: Promise<void> | undefined;
  #closed = false;
  #url: string;

  private constructor(
    client: RedisClientType,
    url: string,
    memory: MemoryUnackedStore,
    prefix: string,
  ) {
    this.#client = client;
    this.#url = url;
    this.#memory = memory;
    this.#events = `${prefix}:events`;
    this.#order = `${prefix}:order`;
  }

  /**
   * Connects to Redis and loads the events a previous run left (oldest first).
   *
   * @param url `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (or `rediss://` for TLS).
   * @param options Capacity and key prefix.
   * @returns The open store.
   * @throws {Error} When Redis cannot be reached or the data cannot be read.
   */
  static async open(
    url: string,
    options: RedisUnackedStoreOptions = {},
  ): Promise<RedisUnackedStore> {
    const memory = new MemoryUnackedStore(
      options.maxEvents === undefined ? {} : { maxEvents: options.maxEvents },
    );
    let opened = false;
    const client: RedisClientType = createClient({
      url,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: options.connectTimeoutMs ?? 5000,
        // Fail fast on the first connect; after that, retry forever (50 ms doubling to 2 s).
        reconnectStrategy: (retries: number, cause: Error): number | Error =>
          opened ? Math.min(50 * 2 ** retries, 2000) : cause,
      },
    }) as RedisClientType;
    let lastError = 0;
    client.on("error", (err: unknown) => {
      if (!opened) return; // reported by open()
      const now = Date.now();
      if (now - lastError < 10_000) return;
      lastError = now;
      log.warning("Redis {url}: {error}", {
        url: redact(url),
        error: err instanceof Error ? err.message : String(err),
      });
    });
    try {
      await client.connect();
    } catch (err) {
      destroy(client);
      const why = err instanceof Error ? err.message : String(err);
      throw new Error(`Cannot connect to Redis at ${redact(url)}: ${why}`, { cause: err });
    }
    const s = new RedisUnackedStore(client, url, memory, options.keyPrefix ?? DEFAULT_REDIS_PREFIX);
    try {
      await s.#load();
    } catch (err) {
      destroy(client);
      throw err;
    }
    opened = true;
    client.on("ready", () => s.#onReady());
    return s;
  }

  async #load(): Promise<void> {
    const order = await this.#client.zRangeWithScores(this.#order, 0, -1);
    const data = await this.#client.hGetAll(this.#events);
    const overflow: string[] = [];
    for (const { value: id, score } of order) {
      const b64 = data[id];
      if (b64 === undefined) continue; // order entry without data: cleaned up below
      delete data[id];
      const dropped = this.#memory.addSync({ id, data: unbase64(b64) });
      for (const d of dropped) this.#seq.delete(d);
      overflow.push(...dropped);
      this.#seq.set(id, score);
      this.#next = Math.max(this.#next, score + 1);
    }
    // Data without an order entry (should not happen): keep it, as the newest.
    for (const [id, b64] of Object.entries(data)) {
      const dropped = this.#memory.addSync({ id, data: unbase64(b64) });
      for (const d of dropped) this.#seq.delete(d);
      overflow.push(...dropped);
      this.#seq.set(id, this.#next++);
    }
    if (overflow.length > 0) {
      log.warning(
        "Un-acked store in Redis held more than {max} events: dropped the {n} oldest",
        { max: this.#memory.maxEvents, n: overflow.length },
      );
    }
    // Rewrite once: clean orphans, overflow and scores in one go.
    await this.#writeAll();
  }

  async #writeAll(): Promise<void> {
    const m = this.#client.multi().del(this.#events).del(this.#order);
    const events = this.#memory.events();
    for (let i = 0; i < events.length; i += 1000) {
      const chunk = events.slice(i, i + 1000);
      m.hSet(this.#events, Object.fromEntries(chunk.map((e) => [e.id, base64(e.data)])));
      m.zAdd(this.#order, chunk.map((e) => ({ score: this.#seq.get(e.id) ?? 0, value: e.id })));
    }
    await m.exec();
  }

  #onReady(): void {
    if (!this.#dirty || this.#closed || this.#resyncing !== undefined) return;
    this.#resyncing = this.#writeAll().then(() => {
      this.#dirty = false;
      log.info("Redis {url} is back: un-acked events written again ({n})", {
        url: redact(this.#url),
        n: this.size,
      });
    }, (err) => {
      log.warning("Cannot rewrite un-acked events to Redis: {error}", {
        error: err instanceof Error ? err.message : String(err),
      });
    }).finally(() => this.#resyncing = undefined);
  }

  /** Capacity in events. */
  get maxEvents(): number {
    return this.#memory.maxEvents;
  }

  /** Events held. */
  get size(): number {
    return this.#memory.size;
  }

  /** Events dropped to make room (including on open). */
  get dropped(): number {
    return this.#memory.dropped;
  }

  /**
   * Whether an event is held.
   *
   * @param id Event UUID text.
   * @returns `true` when held.
   */
  has(id: string): boolean {
    return this.#memory.has(id);
  }

  /**
   * The held events, oldest first.
   *
   * @returns A snapshot.
   */
  events(): UnackedEvent[] {
    return this.#memory.events();
  }

  /**
   * Adds an event in memory at once and in Redis (one transaction, with the drops).
   *
   * @param event The event.
   * @returns The dropped IDs, once Redis has the change.
   * @throws {Error} When Redis did not take the change (it is kept in memory).
   */
  async add(event: UnackedEvent): Promise<string[]> {
    const dropped = this.#memory.addSync(event);
    const score = this.#seq.get(event.id) ?? this.#next++;
    this.#seq.set(event.id, score);
    for (const id of dropped) this.#seq.delete(id);
    const m = this.#client.multi();
    if (dropped.length > 0) m.hDel(this.#events, dropped).zRem(this.#order, dropped);
    m.hSet(this.#events, event.id, base64(event.data));
    m.zAdd(this.#order, { score, value: event.id });
    await this.#exec(m);
    return dropped;
  }

  /**
   * Removes an event in memory at once and in Redis.
   *
   * @param id Event UUID text.
   * @returns Whether it was held, once Redis has the change.
   * @throws {Error} When Redis did not take the change.
   */
  async delete(id: string): Promise<boolean> {
    const held = this.#memory.deleteSync(id);
    this.#seq.delete(id);
    if (!held) return false;
    await this.#exec(this.#client.multi().hDel(this.#events, id).zRem(this.#order, id));
    return true;
  }

  async #exec(m: { exec(): Promise<unknown> }): Promise<void> {
    if (this.#closed) throw new Error("Cannot write to Redis: the store is closed");
    try {
      await m.exec();
    } catch (err) {
      this.#dirty = true;
      const why = err instanceof Error ? err.message : String(err);
      throw new Error(`Cannot write to Redis at ${redact(this.#url)}: ${why}`, { cause: err });
    }
  }

  /** Disconnects (after pending commands). The events stay in Redis. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#resyncing;
    try {
      if (this.#client.isOpen) await this.#client.close();
    } catch {
      destroy(this.#client);
    }
  }

  /** Same as {@linkcode RedisUnackedStore.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
