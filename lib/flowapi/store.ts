/**
 * Where a Flow API receiver keeps events: an {@linkcode EventStore} that de-duplicates by event ID
 * and answers time-range queries newest first. Two implementations: {@linkcode MemoryEventStore}
 * (lost on exit) and {@linkcode RedisEventStore} (survives a receiver restart).
 *
 * Redis layout (key prefix {@linkcode REDIS_KEY_PREFIX}, in the database named by the URL):
 *
 * | Key | Type | Content |
 * |---|---|---|
 * | `netbird-ct:flow:event:<event_id>` | string | the {@linkcode StoredEvent} as JSON, written once |
 * | `netbird-ct:flow:by_time` | sorted set | member `<event_id>`, score = event timestamp in ms since the epoch |
 *
 * Both are written in one `MULTI`/`EXEC`: `SET … NX` and `ZADD … NX`. The event is new iff the
 * `SET` succeeded, so a resent event (same ID) changes nothing, whatever its content. Writes are
 * grouped: the events `put` (or `putMany`) while earlier transactions are in flight share the next
 * one (up to {@linkcode REDIS_MAX_BATCH} events: one `SET … NX` each, one `ZADD … NX` for all), and
 * each call's promise settles only when its transaction has been answered. Queries read the sorted set
 * by score (`ZRANGE … BYSCORE REV`) and the events with `MGET`. Use a Redis `maxmemory-policy` of
 * `noeviction`: an evicted event key leaves its ID in the index.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { createClient } from "redis";
import type { StoredEvent } from "./proto.ts";

const log = getLogger(["netbird-ct", "collect", "store"]);

/** The filters of a query, already validated (see `parseEventQuery` in `query.ts`). */
export interface EventQuery {
  /** 1-based page number. */
  page: number;
  /** Events per page. */
  pageSize: number;
  /** Exact reporter (base64 public key). */
  reporterId?: string;
  /** Exact IP protocol number. */
  protocol?: number;
  /** Exact event type. */
  type?: StoredEvent["type"];
  /** Exact direction. */
  direction?: StoredEvent["direction"];
  /**
   * Case-insensitive substring of the source or destination address, either resource ID, or the
   * reporter ID.
   */
  search?: string;
  /** Earliest event timestamp, ms since the epoch, inclusive. */
  startMs?: number;
  /** Latest event timestamp, ms since the epoch, inclusive. */
  endMs?: number;
}

/** One page of a query. */
export interface QueryResult {
  /** The page's events, newest first. */
  events: StoredEvent[];
  /** How many events match the filters, over all pages. */
  total: number;
}

/** Keeps received events; a receiver acks an event only after `put` resolved. */
export interface EventStore {
  /**
   * Stores an event unless one with the same `eventId` is already stored.
   *
   * @param event The event.
   * @returns `true` if it was new, `false` for a duplicate (nothing changed).
   * @throws {StoreError} When the event could not be stored (it must not be acked).
   */
  put(event: StoredEvent): Promise<boolean>;
  /**
   * Stores several events at once, each unless one with the same `eventId` is already stored
   * (also earlier in the same list). Optional: a receiver uses it, when present, for the events
   * that arrived together, instead of one `put` (and one promise) per event.
   *
   * @param events The events.
   * @returns For each event, `true` if it was new.
   * @throws {StoreError} When the events could not be stored (none of them may be acked).
   */
  putMany?(events: readonly StoredEvent[]): Promise<boolean[]>;
  /**
   * Finds events: sorted by timestamp, newest first (ties: event ID descending).
   *
   * @param query Filters and page.
   * @returns The page and the total number of matches.
   * @throws {StoreError} When the store cannot answer.
   */
  query(query: EventQuery): Promise<QueryResult>;
  /** Releases the store's resources; waits for pending writes. Idempotent. */
  close(): Promise<void>;
}

/** The store could not do what was asked (e.g. Redis is unreachable). */
export class StoreError extends Error {
  /** The error name, `"StoreError"`. */
  override name = "StoreError";
}

/**
 * Whether an event passes the filters of a query (the page is not considered).
 *
 * @param e The event.
 * @param q The query.
 * @returns `true` if every given filter matches.
 *
 * @example Usage
 * ```ts
 * import { matchesQuery } from "./store.ts";
 * import { flowEventToStored } from "./proto.ts";
 * const e = flowEventToStored({
 *   eventId: new Uint8Array(16), publicKey: new Uint8Array(32), isInitiator: false,
 *   flowFields: {
 *     flowId: new Uint8Array(16), type: 1, ruleId: new Uint8Array(0), direction: 2, protocol: 6,
 *     sourceIp: new Uint8Array([100, 64, 0, 1]), destIp: new Uint8Array([192, 0, 2, 7]),
 *     portInfo: { sourcePort: 40000, destPort: 443 }, rxPackets: 0n, txPackets: 0n,
 *     rxBytes: 0n, txBytes: 0n, sourceResourceId: new Uint8Array(0),
 *     destResourceId: new TextEncoder().encode("Web"), numOfStarts: 0n, numOfEnds: 0n,
 *     numOfDrops: 0n,
 *   },
 * });
 * if (!matchesQuery(e, { page: 1, pageSize: 10, type: "start", search: "web" })) throw new Error();
 * if (matchesQuery(e, { page: 1, pageSize: 10, protocol: 17 })) throw new Error();
 * ```
 */
export function matchesQuery(e: StoredEvent, q: EventQuery): boolean {
  if (q.reporterId !== undefined && e.reporterId !== q.reporterId) return false;
  if (q.protocol !== undefined && e.protocol !== q.protocol) return false;
  if (q.type !== undefined && e.type !== q.type) return false;
  if (q.direction !== undefined && e.direction !== q.direction) return false;
  if (q.startMs !== undefined || q.endMs !== undefined) {
    const ms = Date.parse(e.timestamp);
    if (q.startMs !== undefined && !(ms >= q.startMs)) return false;
    if (q.endMs !== undefined && !(ms <= q.endMs)) return false;
  }
  if (q.search !== undefined && q.search !== "") {
    const needle = q.search.toLowerCase();
    const hit = [e.sourceIp, e.destIp, e.sourceResourceId, e.destResourceId, e.reporterId]
      .some((field) => field.toLowerCase().includes(needle));
    if (!hit) return false;
  }
  return true;
}

// --- memory -------------------------------------------------------------------------------

interface Entry {
  ms: number;
  id: string;
  event: StoredEvent;
}

/** Ascending (timestamp, event ID): the reverse of the query order. */
function before(a: Entry, ms: number, id: string): boolean {
  return a.ms < ms || (a.ms === ms && a.id < id);
}

/**
 * Events in memory, lost when the process exits. Kept sorted by timestamp, so a time range costs
 * a binary search plus the events inside it. An event that arrives out of order is appended and
 * the list is sorted again before the next query (the list is then nearly sorted: a merge sort
 * takes about one pass), instead of an insertion per event that moves the newer events.
 *
 * @example Usage
 * ```ts
 * import { MemoryEventStore } from "./store.ts";
 * import { flowEventToStored } from "./proto.ts";
 * const store = new MemoryEventStore();
 * const event = flowEventToStored({
 *   eventId: new Uint8Array(16).fill(1), publicKey: new Uint8Array(32), isInitiator: false,
 *   timestamp: new Date("2026-01-01T00:00:00Z"),
 * });
 * if (!(await store.put(event)) || (await store.put(event))) throw new Error("dedupe failed");
 * const { total } = await store.query({ page: 1, pageSize: 10 });
 * if (total !== 1) throw new Error(`total ${total}`);
 * ```
 */
export class MemoryEventStore implements EventStore {
  #ids = new Set<string>();
  #entries: Entry[] = [];
  #sorted = true;

  /** How many events are stored. */
  get size(): number {
    return this.#entries.length;
  }

  /**
   * Stores an event unless its ID is known.
   *
   * @param event The event.
   * @returns `true` if it was new.
   */
  put(event: StoredEvent): Promise<boolean> {
    return Promise.resolve(this.#put(event));
  }

  /**
   * Stores events unless their IDs are known.
   *
   * @param events The events.
   * @returns For each, `true` if it was new.
   */
  putMany(events: readonly StoredEvent[]): Promise<boolean[]> {
    return Promise.resolve(events.map((e) => this.#put(e)));
  }

  #put(event: StoredEvent): boolean {
    if (this.#ids.has(event.eventId)) return false;
    const ms = Date.parse(event.timestamp);
    const entry: Entry = { ms: Number.isNaN(ms) ? 0 : ms, id: event.eventId, event };
    const list = this.#entries;
    const last = list[list.length - 1];
    if (last !== undefined && !before(last, entry.ms, entry.id)) this.#sorted = false;
    list.push(entry);
    this.#ids.add(event.eventId);
    return true;
  }

  /** The entries in ascending (timestamp, event ID) order. */
  #list(): Entry[] {
    if (!this.#sorted) {
      this.#entries.sort((a, b) => a.ms - b.ms || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      this.#sorted = true;
    }
    return this.#entries;
  }

  /**
   * Finds events, newest first.
   *
   * @param q Filters and page.
   * @returns The page and the total.
   */
  query(q: EventQuery): Promise<QueryResult> {
    const list = this.#list();
    // First index with ms >= startMs, first index with ms > endMs.
    const bound = (ms: number, inclusive: boolean): number => {
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const v = list[mid]!.ms;
        if (inclusive ? v < ms : v <= ms) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    const from = q.startMs === undefined ? 0 : bound(q.startMs, true);
    const to = q.endMs === undefined ? list.length : bound(q.endMs, false);
    const offset = (q.page - 1) * q.pageSize;
    const events: StoredEvent[] = [];
    let total = 0;
    const rest = { ...q };
    delete rest.startMs;
    delete rest.endMs;
    for (let i = to - 1; i >= from; i--) {
      const e = list[i]!.event;
      if (!matchesQuery(e, rest)) continue;
      if (total >= offset && events.length < q.pageSize) events.push(e);
      total++;
    }
    return Promise.resolve({ events, total });
  }

  /** Forgets every event. */
  close(): Promise<void> {
    this.#ids.clear();
    this.#entries = [];
    this.#sorted = true;
    return Promise.resolve();
  }
}

// --- Redis --------------------------------------------------------------------------------

/** Prefix of every key {@linkcode RedisEventStore} writes. */
export const REDIS_KEY_PREFIX = "netbird-ct:flow:";
const EVENT_KEY = `${REDIS_KEY_PREFIX}event:`;
const TIME_KEY = `${REDIS_KEY_PREFIX}by_time`;
/** Events fetched per round trip while scanning a time range. */
const SCAN_BATCH = 500;
/** Most events written in one `MULTI` by {@linkcode RedisEventStore.put}. */
export const REDIS_MAX_BATCH = 1000;
/** Transactions of {@linkcode RedisEventStore.put} in flight at once, beyond which events wait. */
const MAX_WRITES_IN_FLIGHT = 2;

/** Events of one `put` or `putMany` call waiting for their transaction. */
interface PendingPut {
  events: readonly StoredEvent[];
  resolve: (isNew: boolean[]) => void;
  reject: (err: unknown) => void;
}

/** Options of {@linkcode RedisEventStore.open}. */
export interface RedisStoreOptions {
  /** Give up connecting at startup after this many ms (default 5000). */
  connectTimeoutMs?: number;
  /** Fail a write or query that takes longer than this, in ms (default 5000). */
  commandTimeoutMs?: number;
}

/**
 * Hides the password of a `redis://` URL, for logs.
 *
 * @param url The URL.
 * @returns The URL with `***` in place of a password.
 *
 * @example Usage
 * ```ts
 * import { redactRedisUrl } from "./store.ts";
 * if (redactRedisUrl("redis://u:pw@h:6379/1") !== "redis://u:***@h:6379/1") throw new Error();
 * ```
 */
export function redactRedisUrl(url: string): string {
  return url.replace(/^(rediss?:\/\/[^:@/]*):[^@/]*@/, "$1:***@");
}

type Client = ReturnType<typeof createClient>;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new StoreError(`${what}: no answer from Redis in ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Events in Redis (see the module documentation for the layout). Survives a restart of the
 * receiver. While Redis is unreachable, `put` and `query` fail at once with a
 * {@linkcode StoreError} (no offline queue: a receiver must not ack what is not stored); the
 * client reconnects in the background, and the outage and recovery are logged.
 */
export class RedisEventStore implements EventStore {
  #client: Client;
  #timeoutMs: number;
  #closed = false;
  #down: { since: number; errors: number; lastLog: number } | undefined;
  #batch: PendingPut[] = [];
  #batchEvents = 0;
  #flushQueued = false;
  #writing = 0;

  private constructor(client: Client, timeoutMs: number) {
    this.#client = client;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Connects to Redis.
   *
   * @param url `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` (or `rediss://` for TLS).
   * @param options Timeouts.
   * @returns The connected store.
   * @throws {StoreError} When Redis cannot be reached within the connect timeout.
   *
   * @example Usage
   * ```ts ignore
   * import { RedisEventStore } from "./store.ts";
   * const store = await RedisEventStore.open("redis://127.0.0.1:6379/0");
   * await store.close();
   * ```
   */
  static async open(url: string, options: RedisStoreOptions = {}): Promise<RedisEventStore> {
    const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    let connected = false;
    const client: Client = createClient({
      url,
      // Fail commands while disconnected instead of queueing them: an event must be stored
      // before it is acked, and the sender resends whatever was not acked.
      disableOfflineQueue: true,
      socket: {
        connectTimeout: Math.min(connectTimeoutMs, 5000),
        // Once connected, reconnect forever (100 ms doubling to 2 s). Before that, fail each
        // attempt at once: the loop below retries until the deadline and leaves no timer of
        // node-redis behind when it gives up.
        reconnectStrategy: (retries: number, cause: Error) =>
          connected ? Math.min(100 * 2 ** Math.min(retries, 4), 2000) : cause,
      },
    });
    const store = new RedisEventStore(client, options.commandTimeoutMs ?? 5000);
    client.on("error", (err: unknown) => {
      if (connected) store.#onError(message(err));
    });
    client.on("ready", () => {
      if (connected) store.#onReady();
    });
    const deadline = Date.now() + connectTimeoutMs;
    for (;;) {
      try {
        await client.connect();
        break;
      } catch (err) {
        if (Date.now() + 250 >= deadline) {
          if (client.isOpen) client.destroy();
          throw new StoreError(`Cannot connect to ${redactRedisUrl(url)}: ${message(err)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    connected = true;
    return store;
  }

  #onError(why: string): void {
    const now = Date.now();
    if (this.#down === undefined) {
      this.#down = { since: now, errors: 1, lastLog: now };
      log.error("Redis connection lost: {error}; retrying in the background", { error: why });
      return;
    }
    this.#down.errors++;
    if (now - this.#down.lastLog >= 30_000) {
      this.#down.lastLog = now;
      log.error("Redis still unreachable after {seconds} s ({errors} errors): {error}", {
        seconds: Math.round((now - this.#down.since) / 1000),
        errors: this.#down.errors,
        error: why,
      });
    }
  }

  #onReady(): void {
    if (this.#down === undefined) return;
    log.info("Redis connection restored after {seconds} s", {
      seconds: ((Date.now() - this.#down.since) / 1000).toFixed(1),
    });
    this.#down = undefined;
  }

  async #run<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new StoreError(`${what}: the store is closed`);
    try {
      return await withTimeout(fn(), this.#timeoutMs, what);
    } catch (err) {
      if (err instanceof StoreError) throw err;
      throw new StoreError(`${what}: ${message(err)}`, { cause: err });
    }
  }

  /**
   * Stores an event unless its ID is known (`SET NX` + `ZADD NX` in one transaction, shared with
   * the events put at about the same time: see the module documentation).
   *
   * @param event The event.
   * @returns `true` if it was new.
   * @throws {StoreError} When Redis did not confirm the write.
   */
  put(event: StoredEvent): Promise<boolean> {
    if (this.#closed) {
      return Promise.reject(new StoreError("Cannot store event: the store is closed"));
    }
    const { promise, resolve, reject } = Promise.withResolvers<boolean>();
    this.#batch.push({ events: [event], resolve: (isNew) => resolve(isNew[0]!), reject });
    this.#batchEvents++;
    this.#schedule();
    return promise;
  }

  /**
   * Stores events unless their IDs are known: like {@linkcode RedisEventStore.put} for each, in
   * the same group commit, with one promise for all.
   *
   * @param events The events.
   * @returns For each, `true` if it was new.
   * @throws {StoreError} When Redis did not confirm the write (of some of them; none may be
   * acked).
   */
  putMany(events: readonly StoredEvent[]): Promise<boolean[]> {
    if (this.#closed) {
      return Promise.reject(new StoreError("Cannot store events: the store is closed"));
    }
    if (events.length === 0) return Promise.resolve([]);
    if (events.length > REDIS_MAX_BATCH) {
      const parts: Promise<boolean[]>[] = [];
      for (let i = 0; i < events.length; i += REDIS_MAX_BATCH) {
        parts.push(this.putMany(events.slice(i, i + REDIS_MAX_BATCH)));
      }
      return Promise.all(parts).then((results) => results.flat());
    }
    const { promise, resolve, reject } = Promise.withResolvers<boolean[]>();
    this.#batch.push({ events, resolve, reject });
    this.#batchEvents += events.length;
    this.#schedule();
    return promise;
  }

  /**
   * Group commit: with fewer than {@linkcode MAX_WRITES_IN_FLIGHT} transactions in flight, the
   * pending events are written at the end of this microtask checkpoint (an event alone waits for
   * nothing); otherwise they collect until one is answered and then go in one transaction. A full
   * batch ({@linkcode REDIS_MAX_BATCH}) is written at once.
   */
  #schedule(): void {
    while (this.#batchEvents >= REDIS_MAX_BATCH) this.#flush();
    if (!this.#flushQueued && this.#writing < MAX_WRITES_IN_FLIGHT && this.#batch.length > 0) {
      this.#flushQueued = true;
      queueMicrotask(() => {
        this.#flushQueued = false;
        this.#flush();
      });
    }
  }

  /**
   * Writes pending events (at most {@linkcode REDIS_MAX_BATCH}, whole `put`/`putMany` calls) in
   * one transaction and settles their promises.
   */
  #flush(): void {
    if (this.#batch.length === 0) return;
    let take = 0;
    let count = 0;
    while (take < this.#batch.length) {
      const n = this.#batch[take]!.events.length;
      if (take > 0 && count + n > REDIS_MAX_BATCH) break;
      count += n;
      take++;
    }
    const batch = this.#batch.splice(0, take);
    this.#batchEvents -= count;
    const write = async (): Promise<boolean[]> => {
      // Raw commands (no argument parsing per event): SET key json NX, then one ZADD NX for all
      // (for an ID twice in the batch, the first score stays, as its SET).
      const multi = this.#client.multi();
      const zadd: string[] = ["ZADD", TIME_KEY, "NX"];
      for (const { events } of batch) {
        for (const event of events) {
          multi.addCommand(["SET", EVENT_KEY + event.eventId, JSON.stringify(event), "NX"]);
          const ms = Date.parse(event.timestamp);
          zadd.push(Number.isNaN(ms) ? "0" : String(ms), event.eventId);
        }
      }
      multi.addCommand(zadd);
      const replies = await multi.exec() as unknown[];
      const isNew: boolean[] = new Array(count);
      for (let i = 0; i < count; i++) isNew[i] = replies[i] === "OK";
      return isNew;
    };
    this.#writing++;
    this.#run(`Cannot store ${count === 1 ? "event" : `${count} events`}`, write)
      .then(
        (isNew) => {
          let at = 0;
          for (const p of batch) {
            p.resolve(isNew.slice(at, at + p.events.length));
            at += p.events.length;
          }
        },
        (err) => batch.forEach((p) => p.reject(err)),
      )
      .finally(() => {
        this.#writing--;
        this.#schedule();
      });
  }

  /**
   * Finds events, newest first. Without filters other than the time range this is one
   * `ZCOUNT` + `ZRANGE … LIMIT` and one `MGET` of the page; with filters, the time range is
   * scanned in batches, so its cost grows with the number of events in the range.
   *
   * @param q Filters and page.
   * @returns The page and the total.
   * @throws {StoreError} When Redis cannot answer.
   */
  query(q: EventQuery): Promise<QueryResult> {
    return this.#run("Cannot query events", () => this.#query(q));
  }

  async #fetch(ids: string[]): Promise<StoredEvent[]> {
    if (ids.length === 0) return [];
    const docs = await this.#client.mGet(ids.map((id) => EVENT_KEY + id));
    const events: StoredEvent[] = [];
    for (const doc of docs) {
      if (typeof doc === "string") events.push(JSON.parse(doc) as StoredEvent);
    }
    return events;
  }

  async #query(q: EventQuery): Promise<QueryResult> {
    const min = q.startMs === undefined ? "-inf" : String(q.startMs);
    const max = q.endMs === undefined ? "+inf" : String(q.endMs);
    const offset = (q.page - 1) * q.pageSize;
    const filtered = q.reporterId !== undefined || q.protocol !== undefined ||
      q.type !== undefined || q.direction !== undefined ||
      (q.search !== undefined && q.search !== "");
    if (!filtered) {
      const [count, ids] = await this.#client.multi()
        .zCount(TIME_KEY, min, max)
        .zRange(TIME_KEY, max, min, {
          BY: "SCORE",
          REV: true,
          LIMIT: { offset, count: q.pageSize },
        })
        .exec() as unknown as [number, string[]];
      return { events: await this.#fetch(ids), total: Number(count) };
    }
    // Scan from the newest down with a score cursor (stable while events are being added):
    // members at the cursor's score that were already read are skipped on the next round.
    const events: StoredEvent[] = [];
    let total = 0;
    let upper = max;
    let seenAtUpper = new Set<string>();
    for (;;) {
      const want = SCAN_BATCH + seenAtUpper.size;
      const batch = await this.#client.zRangeWithScores(TIME_KEY, upper, min, {
        BY: "SCORE",
        REV: true,
        LIMIT: { offset: 0, count: want },
      });
      const fresh = batch.filter((m) => !seenAtUpper.has(m.value));
      if (fresh.length === 0) break;
      for (const e of await this.#fetch(fresh.map((m) => m.value))) {
        if (!matchesQuery(e, q)) continue;
        if (total >= offset && events.length < q.pageSize) events.push(e);
        total++;
      }
      const lastScore = batch[batch.length - 1]!.score;
      if (String(lastScore) !== upper) seenAtUpper = new Set();
      for (const m of fresh) if (m.score === lastScore) seenAtUpper.add(m.value);
      upper = String(lastScore);
      if (batch.length < want) break;
    }
    return { events, total };
  }

  /** Closes the connection after pending commands (at most the command timeout). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    while (this.#batch.length > 0) this.#flush();
    this.#closed = true;
    try {
      await withTimeout(this.#client.close(), this.#timeoutMs, "Cannot close");
    } catch {
      this.#client.destroy();
    }
  }
}
