/**
 * The client side of NetBird's Flow API: sends aggregated flow records as `flow.FlowEvent`s on
 * one `/flow.FlowService/Events` bidi stream and keeps each one until the receiver acks it,
 * as NetBird's manager and `flow/client` do:
 *
 * - the stream opens with `FlowEvent{isInitiator: true}` and carries the metadata
 *   `authorization: Bearer <signature>.<payload>`; it is ready once the response headers arrive;
 * - every event is put in the un-acked store *before* it is sent, and deleted only when an ack
 *   with its event_id arrives; a retry loop (every 1 s) resends un-acked events older than the
 *   1 s grace period, each with the same bytes (same event_id, so receivers dedupe), at
 *   per-event intervals growing ×1.7 up to interval/2; on a send failure the loop backs off
 *   (1 s ×1.7 ±50 %, at most interval/2);
 * - a failed stream is reopened on a new connection after a backoff of 800 ms ×1.7 ±50 %, at
 *   most interval/2, reset when the stream had lived ≥ 5 s; once the new stream is ready every
 *   un-acked event is resent at once.
 *
 * Where NetBird falls short, this client does not: the un-acked store is bounded (drop oldest,
 * counted and logged), it can live in Redis and survive restarts (see `unacked.ts`), interval
 * changes reschedule the timers ({@linkcode FlowClient.setInterval}), {@linkcode FlowClient.close}
 * tries to deliver for a bounded time, and every count is in {@linkcode FlowClient.stats}.
 *
 * The transport is a seam ({@linkcode FlowDialer}). The default is {@linkcode h2Dialer}
 * (`./h2/client.ts`: netbird-ct's own HTTP/2 client on `Deno.connect`/`Deno.connectTls`, TLS for
 * `https://`, h2c for `http://`); {@linkcode grpcDialer} (`npm:@grpc/grpc-js` on Deno's
 * `node:http2`, which can abort the process on a GOAWAY, denoland/deno#36788) stays available
 * with `transport: "grpc-js"`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { getLogger } from "@logtape/logtape";
import { parseIp } from "../net.ts";
import type { FlowRecord } from "../record.ts";
import type { RecordSink } from "../tracker.ts";
import { bytesToUuid } from "../uuid.ts";
import {
  decodeFlowEventAck,
  encodeFlowEvent,
  type FlowEventAck,
  recordToFlowEvent,
} from "./proto.ts";
import { MemoryUnackedStore, type UnackedEvent, type UnackedStore } from "./unacked.ts";
import { h2Dialer } from "./h2/client.ts";

const log = getLogger(["netbird-ct", "flow"]);

/** The gRPC method of the events stream. */
export const EVENTS_METHOD = "/flow.FlowService/Events";

/** NetBird's retry loop period (`retryInterval`), ms. */
export const RETRY_INTERVAL_MS = 1000;
/** NetBird's grace period before an un-acked event is resent, ms. */
export const RESEND_GRACE_MS = 1000;
/** NetBird's backoff multiplier (retries and reconnects). */
export const BACKOFF_MULTIPLIER = 1.7;
/** NetBird's backoff randomization factor (±50 %). */
export const BACKOFF_RANDOMIZATION = 0.5;
/** NetBird's first reconnect delay, ms. */
export const RECONNECT_INITIAL_MS = 800;
/** A stream that lived this long resets the reconnect backoff (NetBird), ms. */
export const STREAM_RESET_MS = 5000;
/** How long a new stream may take to get response headers before it is given up, ms. */
export const READY_TIMEOUT_MS = 10_000;
/** Default bound of {@linkcode FlowClient.close}'s delivery attempt, ms. */
export const CLOSE_TIMEOUT_MS = 2000;

// ---------------------------------------------------------------------------------------------
// Transport seam.

/** What a {@linkcode FlowStream} reports. Each handler is called on the event loop, never inline. */
export interface FlowStreamHandlers {
  /** The response headers arrived: the receiver accepted the stream. */
  onReady(): void;
  /**
   * An ack arrived.
   *
   * @param ack The decoded `flow.FlowEventAck`.
   */
  onAck(ack: FlowEventAck): void;
  /** The stream takes writes again after {@linkcode FlowStream.write} returned `false`. */
  onDrain(): void;
  /**
   * The stream ended (error, or the receiver closed it). Called at most once, and never after
   * {@linkcode FlowStream.cancel}.
   *
   * @param error Why.
   */
  onClose(error: Error): void;
}

/** One open `Events` stream. */
export interface FlowStream {
  /**
   * Queues one encoded `flow.FlowEvent`.
   *
   * @param event Protobuf bytes.
   * @returns `false` when the send buffer is full: the event is queued, but wait for `onDrain`.
   */
  write(event: Uint8Array): boolean;
  /** Cancels the stream; no handler is called afterwards. */
  cancel(): void;
}

/** One connection to the receiver. */
export interface FlowConnection {
  /**
   * Opens an `Events` stream (with the authorization metadata).
   *
   * @param handlers Where the stream reports.
   * @returns The stream.
   */
  openStream(handlers: FlowStreamHandlers): FlowStream;
  /** Closes the connection and its streams. */
  close(): void;
}

/**
 * Makes a new connection (NetBird recreates the whole connection after a stream failure).
 *
 * @param options The current flow interval (the gRPC idle timeout is twice it).
 * @returns The connection (lazy: connecting happens when a stream opens).
 */
export type FlowDialer = (options: { intervalMs: number }) => FlowConnection;

/** Options of {@linkcode grpcDialer}. */
export interface GrpcDialerOptions {
  /** `https://HOST[:PORT]` (TLS, port 443 by default) or `http://HOST[:PORT]` (h2c, port 80). */
  url: string;
  /** The token, `<signature>.<payload>`: sent as `authorization: Bearer <token>`. */
  token: string;
  /** PEM root certificates for TLS instead of the system's (e.g. a private CA, tests). */
  rootCerts?: Uint8Array;
}

/**
 * The gRPC target (`host:port`) and whether to use TLS, from a flow URL (the path is ignored,
 * as in NetBird).
 *
 * @param url `https://…` or `http://…`.
 * @returns Target and TLS flag.
 * @throws {TypeError} For any other URL, and for `https://` with an IP address (Deno's TLS
 *   cannot use an address as the server name).
 */
export function flowTarget(url: string): { target: string; tls: boolean } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TypeError(`Cannot parse flow URL "${url}"`);
  }
  if ((u.protocol !== "https:" && u.protocol !== "http:") || u.hostname === "") {
    throw new TypeError(`Cannot use flow URL "${url}": expected http:// or https:// and a host`);
  }
  const tls = u.protocol === "https:";
  if (tls && parseIp(u.hostname.replace(/^\[|\]$/g, "")) !== undefined) {
    // Deno's node:tls refuses an IP address as the TLS server name, which grpc-js always sets.
    throw new TypeError(`Cannot use flow URL "${url}": https:// needs a host name, not an address`);
  }
  return { target: `${u.hostname}:${u.port || (tls ? "443" : "80")}`, tls };
}

/**
 * The real transport: `@grpc/grpc-js`, one channel per connection (local subchannel pool, so
 * closing it closes its socket), keepalive pings every 30 s with a 10 s timeout and an idle
 * timeout of twice the interval, as NetBird's client.
 *
 * @param options URL, token, optional root certificates.
 * @returns The dialer.
 * @throws {TypeError} When the URL is not `http://` or `https://`.
 */
export function grpcDialer(options: GrpcDialerOptions): FlowDialer {
  const { target, tls } = flowTarget(options.url);
  const bearer = `Bearer ${options.token}`;
  const roots = options.rootCerts === undefined ? null : Buffer.from(options.rootCerts);
  const serialize = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const deserialize = (b: Buffer): FlowEventAck =>
    decodeFlowEventAck(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  return ({ intervalMs }) => {
    const client = new grpc.Client(
      target,
      tls ? grpc.credentials.createSsl(roots) : grpc.credentials.createInsecure(),
      {
        "grpc.use_local_subchannel_pool": 1,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.client_idle_timeout_ms": Math.max(2 * intervalMs, 1000),
        // This client makes a new channel per attempt with its own backoff, so grpc-js's
        // subchannel backoff never delays anything; keep it short, because Client.close() does
        // not cancel its (unref'd) timer.
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 100,
      },
    );
    return {
      openStream(h: FlowStreamHandlers): FlowStream {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", bearer);
        const call = client.makeBidiStreamRequest(EVENTS_METHOD, serialize, deserialize, metadata);
        let done = false;
        const finish = (error: Error): void => {
          if (done) return;
          done = true;
          h.onClose(error);
        };
        call.on("metadata", () => {
          if (!done) h.onReady();
        });
        call.on("data", (ack: FlowEventAck) => {
          if (!done) h.onAck(ack);
        });
        call.on("drain", () => {
          if (!done) h.onDrain();
        });
        call.on("error", (err: Error) => finish(err));
        call.on("status", (s: grpc.StatusObject) => {
          finish(new Error(`stream closed by the receiver: ${s.code} ${s.details}`));
        });
        return {
          write(event: Uint8Array): boolean {
            if (done) return false;
            try {
              return call.write(event);
            } catch (err) {
              queueMicrotask(() => finish(err instanceof Error ? err : new Error(String(err))));
              return false;
            }
          },
          cancel(): void {
            done = true;
            call.cancel();
          },
        };
      },
      close(): void {
        client.close();
      },
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Backoff.

/** cenkalti/backoff's exponential backoff (what NetBird uses), with a settable cap. */
class Backoff {
  #initial: number;
  #current: number;
  max: number;
  #random: () => number;

  constructor(initialMs: number, maxMs: number, random: () => number) {
    this.#initial = initialMs;
    this.max = maxMs;
    this.#random = random;
    this.#current = Math.min(initialMs, maxMs);
  }

  /** The next delay: the current one ±50 %; the current one then grows ×1.7 up to the cap. */
  next(): number {
    const c = Math.min(this.#current, this.max);
    const delta = BACKOFF_RANDOMIZATION * c;
    const d = c - delta + this.#random() * 2 * delta;
    this.#current = Math.min(c * BACKOFF_MULTIPLIER, this.max);
    return d;
  }

  reset(): void {
    this.#current = Math.min(this.#initial, this.max);
  }
}

// ---------------------------------------------------------------------------------------------
// The client.

/** Counters of a {@linkcode FlowClient}. */
export interface FlowClientStats {
  /** Records taken by `write` (each one event). */
  events: number;
  /** Events found in the un-acked store at start (left by a previous run). */
  restored: number;
  /** Events sent for the first time (by this process). */
  sent: number;
  /** Repeated sends of un-acked events (retries, and everything on a reconnect). */
  resent: number;
  /** Acks that removed an un-acked event. */
  acked: number;
  /** Acks for events not (or no longer) held: duplicates, or from a previous run. */
  duplicateAcks: number;
  /** Events waiting for their ack now. */
  unacked: number;
  /** Events dropped because the un-acked store was full (the oldest go first). */
  overflowDrops: number;
  /** Streams opened after the first (after errors). */
  reconnects: number;
  /** Store writes (adds, deletes) that failed, e.g. Redis unreachable (kept in memory). */
  storeErrors: number;
  /** Whether a stream is up and ready now. */
  connected: boolean;
}

/** A built-in transport of {@linkcode FlowClient}. */
export type FlowTransport = "h2" | "grpc-js";

/** The default of {@linkcode FlowClientOptions.transport}. */
export const DEFAULT_FLOW_TRANSPORT: FlowTransport = "h2";

/** Options of {@linkcode FlowClient}. */
export interface FlowClientOptions {
  /** Receiver URL, `https://…` (TLS) or `http://…` (h2c). Needed unless `dial` is given. */
  url?: string;
  /** Token, `<signature>.<payload>`. Needed unless `dial` is given. */
  token?: string;
  /**
   * PEM root certificates for `https://`: with the `h2` transport trusted in addition to the
   * system's (a certificate used as the server's own must not be a CA certificate), with
   * `grpc-js` instead of them.
   */
  rootCerts?: Uint8Array;
  /** The peer's WireGuard public key, 32 bytes (every event's `public_key`). */
  publicKey: Uint8Array;
  /** The flow interval (the aggregation window), ms: backoffs are capped at half of it. */
  intervalMs: number;
  /**
   * Un-acked events (default: a {@linkcode MemoryUnackedStore} of the default size). The
   * client never closes it: a store passed in belongs to the caller.
   */
  store?: UnackedStore;
  /**
   * Transport (default: the one `transport` names, on `url`, `token` and `rootCerts`).
   */
  dial?: FlowDialer;
  /**
   * The built-in transport used without `dial`: `"h2"` ({@linkcode h2Dialer}, the default) or
   * `"grpc-js"` ({@linkcode grpcDialer}, for comparison).
   */
  transport?: FlowTransport;
  /** Retry loop period, ms (default {@linkcode RETRY_INTERVAL_MS}). */
  retryIntervalMs?: number;
  /** First resend delay of an event, ms (default {@linkcode RESEND_GRACE_MS}). */
  graceMs?: number;
  /** First reconnect delay, ms (default {@linkcode RECONNECT_INITIAL_MS}). */
  reconnectInitialMs?: number;
  /** Stream lifetime that resets the reconnect backoff, ms (default {@linkcode STREAM_RESET_MS}). */
  streamResetMs?: number;
  /** Time a stream may take to become ready, ms (default {@linkcode READY_TIMEOUT_MS}). */
  readyTimeoutMs?: number;
  /** Random numbers in [0, 1) for the backoff jitter. */
  random?: () => number;
  /** Monotonic clock, ms. */
  now?: () => number;
}

/** Per-event resend state. */
interface Tracking {
  /** Sends by this process. */
  sends: number;
  /** Monotonic time of the last send. */
  lastSent: number;
  /** Delay after `lastSent` before the next resend. */
  delay: number;
}

/** A timer and when it fires (monotonic), so that it can be moved. */
interface Scheduled {
  id: ReturnType<typeof setTimeout>;
  at: number;
}

const INITIATOR = encodeFlowEvent({
  eventId: new Uint8Array(0),
  publicKey: new Uint8Array(0),
  isInitiator: true,
});

/**
 * Sends flow records to a NetBird-style receiver and keeps them until acked. A
 * {@linkcode RecordSink}: put it behind the {@linkcode WindowAggregator} (it sends whatever it is
 * given; NetBird sends the aggregated window records).
 *
 * Life cycle: `new FlowClient(...)`, {@linkcode FlowClient.start}, `write`…,
 * {@linkcode FlowClient.close} (bounded delivery attempt) or `[Symbol.dispose]` (stop now).
 *
 * @example Usage
 * ```ts
 * import { FlowClient } from "./client.ts";
 * import { MemoryUnackedStore } from "./unacked.ts";
 * const store = new MemoryUnackedStore({ maxEvents: 1000 });
 * const client = new FlowClient({
 *   url: "http://127.0.0.1:9", // nothing listens: the events stay un-acked
 *   token: "signature.payload",
 *   publicKey: new Uint8Array(32),
 *   intervalMs: 60_000,
 *   store,
 * });
 * // client.start(); then the aggregator writes window records: client.write(records)
 * await client.close(0);
 * if (client.stats().unacked !== 0) throw new Error("nothing was written");
 * ```
 */
export class FlowClient implements RecordSink, Disposable, AsyncDisposable {
  #publicKey: Uint8Array;
  #store: UnackedStore;
  #dial: FlowDialer;
  #intervalMs: number;
  #retryIntervalMs: number;
  #graceMs: number;
  #streamResetMs: number;
  #readyTimeoutMs: number;
  #now: () => number;
  #url: string;

  #track = new Map<string, Tracking>();
  /** Events handed to the store whose add has not completed: not to be sent yet. */
  #storing = new Set<string>();
  #inflight = new Set<Promise<void>>();
  #connection: FlowConnection | undefined;
  #stream: FlowStream | undefined;
  #ready = false;
  #blocked = false;
  #streamOpenedAt = 0;
  #everConnected = false;
  #failures = 0;
  #reconnect: Backoff;
  #retryBackoff: Backoff;
  #reconnectTimer: Scheduled | undefined;
  #retryTimer: Scheduled | undefined;
  #readyTimer: ReturnType<typeof setTimeout> | undefined;
  #drainWaiters: (() => void)[] = [];
  #lastOverflowLog = -Infinity;
  #lastStoreErrorLog = -Infinity;
  #loggedDropped = 0;
  #started = false;
  #closing = false;
  #stopped = false;
  #stats = {
    events: 0,
    restored: 0,
    sent: 0,
    resent: 0,
    acked: 0,
    duplicateAcks: 0,
    reconnects: 0,
    storeErrors: 0,
  };

  /**
   * Creates the client; nothing connects before {@linkcode FlowClient.start}.
   *
   * @param options Receiver, key, interval, store, timings.
   * @throws {TypeError} On a public key that is not 32 bytes, a bad URL, or no URL/token.
   * @throws {RangeError} On an interval that is not positive.
   */
  constructor(options: FlowClientOptions) {
    if (options.publicKey.length !== 32) {
      throw new TypeError(
        `Cannot create flow client: public key has ${options.publicKey.length} bytes, want 32`,
      );
    }
    checkInterval(options.intervalMs);
    this.#publicKey = options.publicKey;
    this.#store = options.store ?? new MemoryUnackedStore();
    this.#url = options.url ?? "(custom transport)";
    if (options.dial !== undefined) {
      this.#dial = options.dial;
    } else {
      if (options.url === undefined || options.token === undefined) {
        throw new TypeError("Cannot create flow client: url and token are required");
      }
      const transport = options.transport ?? DEFAULT_FLOW_TRANSPORT;
      if (transport !== "h2" && transport !== "grpc-js") {
        throw new TypeError(`Cannot create flow client: unknown transport "${transport}"`);
      }
      const dialerOptions = {
        url: options.url,
        token: options.token,
        ...(options.rootCerts === undefined ? {} : { rootCerts: options.rootCerts }),
      };
      this.#dial = transport === "h2" ? h2Dialer(dialerOptions) : grpcDialer(dialerOptions);
    }
    this.#intervalMs = options.intervalMs;
    this.#retryIntervalMs = options.retryIntervalMs ?? RETRY_INTERVAL_MS;
    this.#graceMs = options.graceMs ?? RESEND_GRACE_MS;
    this.#streamResetMs = options.streamResetMs ?? STREAM_RESET_MS;
    this.#readyTimeoutMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS;
    this.#now = options.now ?? (() => performance.now());
    const random = options.random ?? Math.random;
    this.#reconnect = new Backoff(
      options.reconnectInitialMs ?? RECONNECT_INITIAL_MS,
      this.#intervalMs / 2,
      random,
    );
    this.#retryBackoff = new Backoff(this.#retryIntervalMs, this.#intervalMs / 2, random);
  }

  /** The un-acked store. */
  get store(): UnackedStore {
    return this.#store;
  }

  /** The current flow interval, ms. */
  get intervalMs(): number {
    return this.#intervalMs;
  }

  /** Whether a stream is up and ready. */
  get connected(): boolean {
    return this.#ready;
  }

  /** Counters. */
  stats(): FlowClientStats {
    return {
      ...this.#stats,
      unacked: this.#store.size,
      overflowDrops: this.#store.dropped,
      connected: this.#ready,
    };
  }

  /**
   * Opens the stream and starts the retry loop. Events already in the store (a previous run's,
   * with a persistent store) are sent as soon as the stream is ready. Idempotent.
   */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#stats.restored = this.#store.size;
    this.#loggedDropped = this.#store.dropped;
    if (this.#store.size > 0) {
      log.info("Flow API: {n} un-acked events from a previous run will be resent", {
        n: this.#store.size,
      });
    }
    this.#connect();
    this.#scheduleRetry(this.#retryIntervalMs);
  }

  /**
   * Changes the flow interval (NetBird ignores such changes while enabled): the backoff caps
   * become half of it, pending retry and reconnect timers and per-event resend delays longer
   * than the new cap are shortened to it, and the next connection's idle timeout follows.
   *
   * @param ms The new interval, ms.
   * @throws {RangeError} When not positive.
   */
  setInterval(ms: number): void {
    checkInterval(ms);
    this.#intervalMs = ms;
    const cap = ms / 2;
    this.#reconnect.max = cap;
    this.#retryBackoff.max = cap;
    const eventCap = this.#eventDelayCap();
    for (const t of this.#track.values()) t.delay = Math.min(t.delay, eventCap);
    const now = this.#now();
    if (this.#reconnectTimer !== undefined && this.#reconnectTimer.at - now > cap) {
      clearTimeout(this.#reconnectTimer.id);
      this.#reconnectTimer = undefined;
      this.#scheduleReconnect(cap);
    }
    const retryCap = Math.min(this.#retryIntervalMs, eventCap);
    if (this.#retryTimer !== undefined && this.#retryTimer.at - now > retryCap) {
      clearTimeout(this.#retryTimer.id);
      this.#retryTimer = undefined;
      this.#scheduleRetry(retryCap);
    }
  }

  /**
   * Takes records (the aggregator's window records): each becomes a `FlowEvent`, goes into the
   * un-acked store, and is sent once stored. Never throws and never blocks.
   *
   * @param records The batch.
   */
  write(records: readonly FlowRecord[]): void {
    for (const r of records) {
      let event: UnackedEvent;
      try {
        event = {
          id: r.eventId.toLowerCase(),
          data: encodeFlowEvent(recordToFlowEvent(r, this.#publicKey)),
        };
      } catch (err) {
        // Only a record whose IDs are not UUIDs gets here (a bug upstream): skip it, loudly.
        log.error("Flow API: cannot encode record {eventId}: {error}", {
          eventId: r.eventId,
          error: err instanceof Error ? err.message : String(err),
        });
        continue;
      }
      this.#stats.events++;
      const id = event.id;
      this.#storing.add(id);
      const stored = this.#store.add(event).then((dropped) => {
        for (const d of dropped) this.#track.delete(d);
      }, (err) => this.#storeError("store", err));
      this.#background(stored.then(() => {
        this.#storing.delete(id);
        this.#checkOverflow();
        this.#sendNew(event);
      }));
    }
  }

  /**
   * Stops: waits for pending store writes, then gives the receiver up to `timeoutMs` to ack
   * what is un-acked (sending what was never sent, reconnecting at once if the stream is down),
   * then closes the stream and the connection. What stays un-acked stays in the store (and so
   * in Redis, with a persistent store; the caller closes the store). Idempotent.
   *
   * @param timeoutMs Bound of the delivery attempt (default {@linkcode CLOSE_TIMEOUT_MS}).
   * @returns The final counters (`unacked`: events not delivered).
   */
  async close(timeoutMs: number = CLOSE_TIMEOUT_MS): Promise<FlowClientStats> {
    if (this.#closing || this.#stopped) {
      await this.#settle();
      return this.stats();
    }
    this.#closing = true;
    const deadline = this.#now() + timeoutMs;
    const remaining = (): number => Math.max(0, deadline - this.#now());
    await withTimeout(this.#settle(), remaining());
    if (this.#started && this.#store.size > 0 && remaining() > 0) {
      if (this.#stream === undefined && this.#reconnectTimer !== undefined) {
        clearTimeout(this.#reconnectTimer.id);
        this.#reconnectTimer = undefined;
        this.#connect();
      } else if (this.#ready) {
        this.#resendPass(true);
      }
      await withTimeout(this.#drained(), remaining());
    }
    this.#stop();
    await withTimeout(this.#settle(), 1000);
    const s = this.stats();
    log.debug("Flow API: closed with {n} events un-acked", { n: s.unacked });
    return s;
  }

  /** Stops at once, without a delivery attempt (un-acked events stay in the store). */
  [Symbol.dispose](): void {
    this.#closing = true;
    this.#stop();
  }

  /** Same as {@linkcode FlowClient.close} with the default bound. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // --- sending -------------------------------------------------------------------------------

  #sendNew(event: UnackedEvent): void {
    if (!this.#store.has(event.id) || this.#track.has(event.id)) return;
    this.#track.set(event.id, { sends: 0, lastSent: 0, delay: this.#graceMs });
    if (this.#ready && !this.#blocked && !this.#stopped) {
      this.#send(event, this.#track.get(event.id)!);
    }
  }

  /** Writes one event; returns false when the stream's buffer is full (stop the pass). */
  #send(event: UnackedEvent, t: Tracking): boolean {
    const stream = this.#stream;
    if (stream === undefined) return false;
    const ok = stream.write(event.data);
    if (t.sends === 0) this.#stats.sent++;
    else this.#stats.resent++;
    if (t.sends > 0) {
      t.delay = Math.min(t.delay * BACKOFF_MULTIPLIER, this.#eventDelayCap());
    }
    t.sends++;
    t.lastSent = this.#now();
    if (!ok) this.#blocked = true;
    return ok;
  }

  /** Per-event resend delays grow up to half the interval, but never below the grace. */
  #eventDelayCap(): number {
    return Math.max(this.#graceMs, this.#intervalMs / 2);
  }

  /**
   * Sends every due un-acked event (all of them with `all`, e.g. on a new stream). Returns
   * false when it could not finish (no stream, or its buffer is full).
   */
  #resendPass(all: boolean): boolean {
    if (!this.#ready || this.#stream === undefined) return false;
    if (this.#blocked) return false;
    const now = this.#now();
    if (this.#track.size > this.#store.size) this.#prune();
    for (const e of this.#store.events()) {
      if (this.#storing.has(e.id)) continue; // sent once stored (see write)
      let t = this.#track.get(e.id);
      if (t === undefined) {
        t = { sends: 0, lastSent: 0, delay: this.#graceMs };
        this.#track.set(e.id, t);
      }
      if (!all && t.sends > 0 && now - t.lastSent < t.delay) continue;
      if (!this.#send(e, t)) return false;
    }
    return true;
  }

  #prune(): void {
    for (const id of this.#track.keys()) if (!this.#store.has(id)) this.#track.delete(id);
  }

  #scheduleRetry(delay: number): void {
    if (this.#stopped || this.#retryTimer !== undefined) return;
    const id = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#retryTick();
    }, delay);
    this.#retryTimer = { id, at: this.#now() + delay };
  }

  #retryTick(): void {
    if (this.#stopped) return;
    // NetBird: a send error (no stream) backs the loop off; a clean pass resets it.
    if (this.#store.size > 0 && !this.#resendPass(false) && !this.#blocked) {
      this.#scheduleRetry(this.#retryBackoff.next());
      return;
    }
    this.#retryBackoff.reset();
    this.#scheduleRetry(Math.min(this.#retryIntervalMs, this.#eventDelayCap()));
  }

  // --- the stream ----------------------------------------------------------------------------

  #connect(): void {
    if (this.#stopped) return;
    if (this.#everConnected || this.#failures > 0) this.#stats.reconnects++;
    this.#connection?.close();
    let connection: FlowConnection;
    try {
      connection = this.#dial({ intervalMs: this.#intervalMs });
    } catch (err) {
      this.#connection = undefined;
      this.#streamFailed(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.#connection = connection;
    this.#streamOpenedAt = this.#now();
    this.#ready = false;
    this.#blocked = false;
    const self: { stream?: FlowStream } = {};
    const current = (): boolean => self.stream !== undefined && self.stream === this.#stream;
    const stream = connection.openStream({
      onReady: () => {
        if (current()) this.#onReady();
      },
      onAck: (ack) => {
        if (current()) this.#onAck(ack);
      },
      onDrain: () => {
        if (!current()) return;
        this.#blocked = false;
        this.#resendPass(false);
      },
      onClose: (error) => {
        if (!current()) return;
        this.#stream = undefined;
        this.#streamFailed(error);
      },
    });
    self.stream = stream;
    this.#stream = stream;
    this.#readyTimer = setTimeout(() => {
      this.#readyTimer = undefined;
      if (!current() || this.#ready) return;
      stream.cancel();
      this.#stream = undefined;
      this.#streamFailed(new Error(`no response headers within ${this.#readyTimeoutMs} ms`));
    }, this.#readyTimeoutMs);
    // NetBird: the first message of a stream is FlowEvent{isInitiator: true}.
    if (!stream.write(INITIATOR)) this.#blocked = true;
  }

  #onReady(): void {
    clearTimeout(this.#readyTimer);
    this.#readyTimer = undefined;
    this.#ready = true;
    if (this.#failures > 0 || this.#everConnected) {
      log.info("Flow API: stream to {url} is back; resending {n} un-acked events", {
        url: this.#url,
        n: this.#store.size,
      });
    } else {
      log.info("Flow API: stream to {url} is up", { url: this.#url });
    }
    this.#everConnected = true;
    this.#failures = 0;
    // Everything un-acked goes again on a new stream, each event's resend delay starting over.
    for (const t of this.#track.values()) t.delay = this.#graceMs;
    this.#retryBackoff.reset();
    this.#resendPass(true);
  }

  #onAck(ack: FlowEventAck): void {
    if (ack.isInitiator) return;
    if (ack.eventId.length !== 16) {
      log.warning("Flow API: ignoring an ack with a {n}-byte event_id", { n: ack.eventId.length });
      return;
    }
    const id = bytesToUuid(ack.eventId);
    if (!this.#store.has(id)) {
      this.#stats.duplicateAcks++;
      return;
    }
    this.#track.delete(id);
    this.#stats.acked++;
    this.#background(
      this.#store.delete(id).then(() => {}, (err) => this.#storeError("delete", err)),
    );
    if (this.#store.size === 0) this.#wakeDrained();
  }

  #streamFailed(error: Error): void {
    clearTimeout(this.#readyTimer);
    this.#readyTimer = undefined;
    const lived = this.#now() - this.#streamOpenedAt;
    const wasReady = this.#ready;
    this.#ready = false;
    this.#blocked = false;
    this.#connection?.close();
    this.#connection = undefined;
    if (this.#stopped) return;
    if (lived >= this.#streamResetMs) this.#reconnect.reset();
    const delay = this.#reconnect.next();
    this.#failures++;
    const fields = { url: this.#url, error: error.message, delay: Math.round(delay) };
    if (wasReady || this.#failures === 1) {
      log.warning("Flow API: stream to {url} failed ({error}); reconnecting in {delay} ms", fields);
    } else {
      log.debug("Flow API: stream to {url} failed ({error}); reconnecting in {delay} ms", fields);
    }
    this.#scheduleReconnect(delay);
  }

  #scheduleReconnect(delay: number): void {
    if (this.#stopped || this.#reconnectTimer !== undefined) return;
    const id = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect();
    }, delay);
    this.#reconnectTimer = { id, at: this.#now() + delay };
  }

  // --- bookkeeping ---------------------------------------------------------------------------

  #stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer?.id);
    clearTimeout(this.#retryTimer?.id);
    clearTimeout(this.#readyTimer);
    this.#reconnectTimer = undefined;
    this.#retryTimer = undefined;
    this.#readyTimer = undefined;
    const stream = this.#stream;
    this.#stream = undefined;
    this.#ready = false;
    stream?.cancel();
    this.#connection?.close();
    this.#connection = undefined;
    this.#wakeDrained();
  }

  #background(p: Promise<void>): void {
    const tracked = p.catch((err) => {
      log.error("Flow API: unexpected error: {error}", { error: String(err) });
    }).finally(() => this.#inflight.delete(tracked));
    this.#inflight.add(tracked);
  }

  /** Resolves once every pending store write (and the sends behind it) has run. */
  async #settle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.all([...this.#inflight]);
  }

  #drained(): Promise<void> {
    if (this.#store.size === 0 || this.#stopped) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#drainWaiters.push(resolve);
    return promise;
  }

  #wakeDrained(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w();
  }

  #checkOverflow(): void {
    const dropped = this.#store.dropped;
    if (dropped === this.#loggedDropped) return;
    const now = this.#now();
    if (now - this.#lastOverflowLog < 10_000) return;
    this.#lastOverflowLog = now;
    log.warning(
      "Flow API: un-acked store full ({max} events): dropped {n} oldest events ({total} so far)",
      { max: this.#store.maxEvents, n: dropped - this.#loggedDropped, total: dropped },
    );
    this.#loggedDropped = dropped;
  }

  #storeError(what: string, err: unknown): void {
    this.#stats.storeErrors++;
    const now = this.#now();
    if (now - this.#lastStoreErrorLog < 10_000) return;
    this.#lastStoreErrorLog = now;
    log.warning("Flow API: un-acked store {what} failed (kept in memory): {error}", {
      what,
      error: err instanceof Error ? err.message : String(err),
    });
  }
}

function checkInterval(ms: number): void {
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new RangeError(`Cannot use flow interval ${ms} ms: expected a positive number`);
  }
}

async function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([p, new Promise<void>((r) => timer = setTimeout(r, ms))]);
  } finally {
    clearTimeout(timer);
  }
}
