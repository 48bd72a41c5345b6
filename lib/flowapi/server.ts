/**
 * The receiver side of NetBird's Flow API: `/flow.FlowService/Events` over gRPC (h2c, or TLS),
 * authenticated by a bearer token, storing each event in an {@linkcode EventStore} and acking it
 * only once stored; plus the read-only query API `GET /api/events/network-traffic` over HTTP.
 *
 * Stream protocol (what NetBird's flow client expects): the receiver first sends
 * `FlowEventAck{isInitiator: true}`; then each `FlowEvent` the client sends is stored and acked
 * with `FlowEventAck{event_id}`. Client messages with `isInitiator` set are not events (no ack).
 * A resent event (same ID) is stored once and acked again. An event that cannot be stored is not
 * acked, so the sender resends it; one that cannot be decoded is dropped and counted.
 *
 * Transport: the project's own HTTP/2 server for gRPC (`h2/`), h2c with prior knowledge or TLS
 * with ALPN `h2`. The messages of one socket read are handled as one batch: decoded together,
 * stored with one `EventStore.putMany` call when the store has it, and their acks sent together
 * once stored (as few DATA frames and socket writes as possible).
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { GrpcServer, type GrpcStream } from "./h2/server.ts";
import {
  decodeStoredEvent,
  encodeFlowEventAck,
  type StoredEvent,
  UnstorableEventError,
} from "./proto.ts";
import { parseEventQuery, QUERY_PATH, QueryParamError, responseJson } from "./query.ts";
import type { EventStore } from "./store.ts";
import { bearerToken, TokenError, verifyToken } from "./token.ts";
import { errorText } from "../_async.ts";

const log = getLogger(["netbird-ct", "collect"]);

/** gRPC status codes used by the receiver. */
export const GrpcStatus = {
  /** The stream ended normally (the client half-closed). */
  OK: 0,
  /** A message larger than the limit. */
  RESOURCE_EXHAUSTED: 8,
  /** Unknown method, or a compressed message. */
  UNIMPLEMENTED: 12,
  /** The receiver is shutting down; the client should reconnect later. */
  UNAVAILABLE: 14,
  /** Missing, malformed, expired or forged token. */
  UNAUTHENTICATED: 16,
} as const;

/** Default largest accepted gRPC message: a `FlowEvent` is a few hundred bytes. */
export const DEFAULT_MAX_MESSAGE_BYTES: number = 64 * 1024;
/** Default number of events of one stream being stored at once before reading pauses. */
export const DEFAULT_MAX_IN_FLIGHT = 256;
const MAX_URL_LENGTH = 8192;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** The Events method's path. */
const EVENTS_PATH = "/flow.FlowService/Events";

/** A host and port to listen on (port 0: any free port). */
export interface ListenAddress {
  /** IP address or host name. */
  hostname: string;
  /** TCP port. */
  port: number;
}

/** Options of {@linkcode FlowReceiver}. */
export interface FlowReceiverOptions {
  /** Where events go. The receiver does not close it. */
  store: EventStore;
  /** The HMAC secret tokens are checked against. */
  tokenSecret: Uint8Array;
  /** The gRPC address. */
  listen: ListenAddress;
  /** The query API's address; without it, no HTTP server is started. */
  httpListen?: ListenAddress;
  /** PEM certificate chain and private key: serve gRPC over TLS instead of h2c. */
  tls?: { cert: string; key: string };
  /** Largest accepted gRPC message in bytes (default {@linkcode DEFAULT_MAX_MESSAGE_BYTES}). */
  maxMessageBytes?: number;
  /** Events of one stream stored concurrently (default {@linkcode DEFAULT_MAX_IN_FLIGHT}). */
  maxInFlightPerStream?: number;
}

/** Counters of a {@linkcode FlowReceiver}. */
export interface ReceiverStats {
  /** Authenticated streams opened. */
  streams: number;
  /** Streams open now. */
  activeStreams: number;
  /** Events received, rejected ones included (client initiator messages excluded). */
  received: number;
  /** Events stored for the first time. */
  stored: number;
  /** Events received again (same event ID) and not stored again. */
  duplicates: number;
  /** Event acks sent. */
  acks: number;
  /** Messages that could not be decoded or stored as an event (not acked). */
  rejected: number;
  /** Streams refused for a missing, malformed, expired or forged token. */
  authFailures: number;
  /** Events the store failed to keep (not acked; the sender resends them). */
  storeErrors: number;
  /** Events being stored now. */
  inFlight: number;
  /** Query API requests answered with 200. */
  queries: number;
  /** Query API requests answered with an error status. */
  queryErrors: number;
}

/** A gRPC status to end a stream with. */
export interface StreamStatus {
  /** gRPC status code (see {@linkcode GrpcStatus}). */
  code: number;
  /** Message for the client. */
  details: string;
}

/** Callbacks a stream delivers to its handler. */
export interface EventsCallHandlers {
  /** One serialized `FlowEvent` (always taken, even while paused). */
  message(bytes: Uint8Array): void;
  /**
   * Serialized `FlowEvent`s that arrived together (views valid during the call only). Returns
   * how many were taken: the handler stops taking (and pauses the call) when too many events
   * are in flight; the transport offers the rest again after `resume`.
   */
  messages(batch: Uint8Array[]): number;
  /** The client half-closed the stream. */
  end(): void;
  /** The client went away (reset, disconnect); nothing more can be written. */
  cancel(): void;
  /** A `write` that returned `false` has been flushed. */
  drain(): void;
}

/**
 * One `Events` stream, as the receiver sees it: an adapter over a gRPC server call, small
 * enough to fake in tests.
 */
export interface EventsCall {
  /** Every value of the `authorization` metadata. */
  readonly authorization: readonly string[];
  /** The client's address, for logs. */
  readonly peer: string;
  /** Starts delivering messages and events. */
  listen(handlers: EventsCallHandlers): void;
  /** Sends one serialized `FlowEventAck`; `false` means "wait for drain". */
  write(message: Uint8Array): boolean;
  /** Ends the stream with a status. */
  close(status: StreamStatus): void;
  /** Stops delivering messages (flow control pushes back on the client). */
  pause(): void;
  /** Resumes delivering messages. */
  resume(): void;
}

/** Adapts a stream of the HTTP/2 transport to {@linkcode EventsCall}. */
function h2Call(stream: GrpcStream): EventsCall {
  return {
    authorization: stream.metadata("authorization"),
    peer: stream.peer,
    listen: (h: EventsCallHandlers): void =>
      stream.listen({ messages: h.messages, end: h.end, cancel: h.cancel, drain: h.drain }),
    write: (message: Uint8Array): boolean => stream.write(message),
    close: (status: StreamStatus): void => stream.end(status.code, status.details),
    pause: (): void => stream.pause(),
    resume: (): void => stream.resume(),
  };
}

/** Logs the first occurrence, then at most once per interval with a count of the others. */
class Throttle {
  #intervalMs: number;
  #last = -Infinity;
  #suppressed = 0;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  run(fn: (suppressed: number) => void): void {
    const now = performance.now();
    if (now - this.#last < this.#intervalMs) {
      this.#suppressed++;
      return;
    }
    this.#last = now;
    const n = this.#suppressed;
    this.#suppressed = 0;
    fn(n);
  }
}

interface StreamState {
  id: number;
  call: EventsCall;
  /** Events of this stream being stored. */
  inFlight: number;
  paused: boolean;
  awaitingDrain: boolean;
  halfClosed: boolean;
  closed: boolean;
  expiryTimer: ReturnType<typeof setTimeout> | undefined;
}

function hostPort(a: ListenAddress): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

function jsonResponse(
  status: number,
  body: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function errorResponse(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return jsonResponse(status, JSON.stringify({ message }), headers);
}

/**
 * A Flow API receiver: gRPC `FlowService.Events` plus the HTTP query API.
 *
 * @example Serving streams handed over by a custom transport (no sockets)
 * ```ts
 * import { FlowReceiver } from "./server.ts";
 * import { MemoryEventStore } from "./store.ts";
 * const secret = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
 * const receiver = new FlowReceiver({
 *   store: new MemoryEventStore(),
 *   tokenSecret: secret,
 *   listen: { hostname: "127.0.0.1", port: 0 },
 * });
 * const res = await receiver.handleHttp(
 *   new Request("http://localhost/api/events/network-traffic?page_size=0"),
 * );
 * if (res.status !== 400) throw new Error(`status ${res.status}`);
 * await res.body?.cancel();
 * ```
 */
export class FlowReceiver {
  #store: EventStore;
  #secret: Uint8Array;
  #options: FlowReceiverOptions;
  #maxInFlight: number;
  #grpc: GrpcServer | undefined;
  #grpcPort = 0;
  #http: Deno.HttpServer<Deno.NetAddr> | undefined;
  #streams = new Set<StreamState>();
  /** Store operations (one per batch, or per event without `putMany`) not yet settled. */
  #pending = new Set<Promise<void>>();
  /** Events being stored. */
  #inFlight = 0;
  #streamSeq = 0;
  #stopping = false;
  #stopped: Promise<void> | undefined;
  #stats = {
    streams: 0,
    received: 0,
    stored: 0,
    duplicates: 0,
    acks: 0,
    rejected: 0,
    authFailures: 0,
    storeErrors: 0,
    queries: 0,
    queryErrors: 0,
  };
  #authLog = new Throttle(10_000);
  #rejectLog = new Throttle(10_000);
  #storeLog = new Throttle(10_000);

  /**
   * Creates the receiver; nothing listens until {@linkcode FlowReceiver.start}.
   *
   * @param options Store, secret, addresses, limits.
   */
  constructor(options: FlowReceiverOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#secret = options.tokenSecret;
    this.#maxInFlight = options.maxInFlightPerStream ?? DEFAULT_MAX_IN_FLIGHT;
  }

  /** The gRPC address after {@linkcode FlowReceiver.start} (with the actual port). */
  get grpcAddress(): ListenAddress {
    return { hostname: this.#options.listen.hostname, port: this.#grpcPort };
  }

  /** The query API's address after {@linkcode FlowReceiver.start}, if it has one. */
  get httpAddress(): ListenAddress | undefined {
    const a = this.#http?.addr;
    return a === undefined ? undefined : { hostname: a.hostname, port: a.port };
  }

  /** The counters. */
  stats(): ReceiverStats {
    return { ...this.#stats, activeStreams: this.#streams.size, inFlight: this.#inFlight };
  }

  /**
   * Starts listening: gRPC first, then the query API.
   *
   * @throws {Error} `Cannot listen on ADDRESS (gRPC|HTTP): …` when an address cannot be bound.
   */
  async start(): Promise<void> {
    if (this.#grpc !== undefined) return;
    const o = this.#options;
    const server = new GrpcServer({
      methods: { [EVENTS_PATH]: (stream) => this.handleEventsCall(h2Call(stream)) },
      maxMessageBytes: o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
      maxConcurrentStreams: 100,
      // Find dead clients on long-lived streams.
      keepaliveMs: 60_000,
      keepaliveTimeoutMs: 20_000,
    });
    const address = hostPort(o.listen);
    let listener: Deno.Listener<Deno.Conn, Deno.NetAddr> | Deno.TlsListener;
    try {
      listener = o.tls === undefined
        ? Deno.listen({ hostname: o.listen.hostname, port: o.listen.port })
        : Deno.listenTls({
          hostname: o.listen.hostname,
          port: o.listen.port,
          cert: o.tls.cert,
          key: o.tls.key,
          alpnProtocols: ["h2"],
        });
    } catch (err) {
      throw new Error(`Cannot listen on ${address} (gRPC): ${errorText(err)}`);
    }
    this.#grpcPort = (listener.addr as Deno.NetAddr).port;
    server.serve(listener, o.tls !== undefined);
    this.#grpc = server;
    if (o.httpListen !== undefined) {
      try {
        this.#http = Deno.serve({
          hostname: o.httpListen.hostname,
          port: o.httpListen.port,
          onListen: () => {},
          onError: (err) => {
            log.error("Query API failure: {error}", { error: errorText(err) });
            return errorResponse(500, "internal error");
          },
        }, (req) => this.handleHttp(req));
      } catch (err) {
        await server.close(0);
        this.#grpc = undefined;
        throw new Error(`Cannot listen on ${hostPort(o.httpListen)} (HTTP): ${errorText(err)}`);
      }
    }
  }

  /**
   * Stops without losing an acked event: refuses new streams, stops reading, waits for the
   * events being stored (and sends their acks), then ends every stream with UNAVAILABLE and
   * closes the query API. Events still unstored after `timeoutMs` are not acked (their senders
   * resend them). Does not close the store. Idempotent.
   *
   * @param options `timeoutMs`: how long to wait for stores in flight (default 10 s).
   */
  stop(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#stopped ??= this.#stop(options.timeoutMs ?? 10_000);
    return this.#stopped;
  }

  async #stop(timeoutMs: number): Promise<void> {
    this.#stopping = true;
    // No new connections; GOAWAY on every connection (no new streams), open streams go on.
    this.#grpc?.shutdown();
    for (const s of this.#streams) this.#flow(s);
    const deadline = performance.now() + timeoutMs;
    while (this.#pending.size > 0) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.#pending]),
        new Promise((resolve) => timer = setTimeout(resolve, left)),
      ]);
      clearTimeout(timer);
    }
    if (this.#inFlight > 0) {
      log.warning(
        "Stopping with {count} events still being stored: not acked, their senders will resend them",
        { count: this.#inFlight },
      );
    }
    for (const s of [...this.#streams]) {
      this.#finish(s, { code: GrpcStatus.UNAVAILABLE, details: "receiver is shutting down" });
    }
    // Each connection closes once its last frames (acks, trailers) are sent.
    await this.#grpc?.close(5000);
    await this.#http?.shutdown();
  }

  // --- gRPC streams ----------------------------------------------------------------------

  /**
   * Serves one `Events` stream: checks the token, sends the initiator ack, then stores and acks
   * each event. Called by the gRPC server for every stream; public for tests and other
   * transports.
   *
   * @param call The stream.
   */
  handleEventsCall(call: EventsCall): void {
    if (this.#stopping) {
      call.close({ code: GrpcStatus.UNAVAILABLE, details: "receiver is shutting down" });
      return;
    }
    let expiresAt: number;
    try {
      expiresAt = verifyToken(this.#secret, bearerToken(call.authorization)).expiresAt.getTime();
    } catch (err) {
      if (!(err instanceof TokenError)) throw err;
      this.#stats.authFailures++;
      this.#authLog.run((suppressed) =>
        log.warning("Refused a stream from {peer}: {error}{more}", {
          peer: call.peer,
          error: err.message,
          more: suppressed > 0 ? ` (and ${suppressed} more refusals)` : "",
        })
      );
      call.close({ code: GrpcStatus.UNAUTHENTICATED, details: err.message });
      return;
    }
    const s: StreamState = {
      id: ++this.#streamSeq,
      call,
      inFlight: 0,
      paused: false,
      awaitingDrain: false,
      halfClosed: false,
      closed: false,
      expiryTimer: undefined,
    };
    this.#stats.streams++;
    this.#streams.add(s);
    const arm = (): void => {
      const left = expiresAt - Date.now();
      if (left <= 0) {
        log.info("Stream {id} from {peer}: token expired, ending it", {
          id: s.id,
          peer: call.peer,
        });
        this.#finish(s, { code: GrpcStatus.UNAUTHENTICATED, details: "token expired" });
      } else {
        s.expiryTimer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
      }
    };
    arm();
    call.listen({
      message: (bytes) => void this.#onMessages(s, [bytes], true),
      messages: (batch) => this.#onMessages(s, batch, false),
      end: () => {
        s.halfClosed = true;
        this.#maybeEnd(s);
      },
      cancel: () => this.#finish(s, undefined),
      drain: () => {
        s.awaitingDrain = false;
        this.#flow(s);
      },
    });
    s.awaitingDrain = !call.write(encodeFlowEventAck({
      eventId: new Uint8Array(0),
      isInitiator: true,
    }));
    this.#flow(s);
    log.debug("Stream {id} from {peer} opened", { id: s.id, peer: call.peer });
  }

  /**
   * Decodes messages and starts storing their events (one `putMany` for all when the store has
   * it). Without `force`, stops taking when the stream must pause.
   *
   * @returns How many messages were taken.
   */
  #onMessages(s: StreamState, batch: Uint8Array[], force: boolean): number {
    if (s.closed) return batch.length;
    const events: StoredEvent[] = [];
    const ids: Uint8Array[] = [];
    let i = 0;
    for (; i < batch.length; i++) {
      if (
        !force &&
        (this.#stopping || s.awaitingDrain || s.inFlight + events.length >= this.#maxInFlight)
      ) break;
      try {
        const decoded = decodeStoredEvent(batch[i]!);
        if (decoded === null) continue; // the client's initiator message
        this.#stats.received++;
        events.push(decoded.event);
        ids.push(decoded.eventId);
      } catch (err) {
        if (err instanceof UnstorableEventError) this.#stats.received++;
        this.#stats.rejected++;
        this.#rejectLog.run((suppressed) =>
          log.warning("Dropped a message from {peer} (not acked): {error}{more}", {
            peer: s.call.peer,
            error: errorText(err),
            more: suppressed > 0 ? ` (and ${suppressed} more)` : "",
          })
        );
      }
    }
    if (events.length > 0) {
      const store = this.#store;
      if (store.putMany !== undefined) this.#storeEvents(s, events, ids, store.putMany(events));
      else {
        for (let k = 0; k < events.length; k++) {
          this.#storeEvents(s, [events[k]!], [ids[k]!], store.put(events[k]!).then((n) => [n]));
        }
      }
    }
    this.#flow(s);
    return i;
  }

  /** Acks the events once `put` settles; counts and logs failures. */
  #storeEvents(
    s: StreamState,
    events: StoredEvent[],
    ids: Uint8Array[],
    put: Promise<boolean[]>,
  ): void {
    const n = events.length;
    s.inFlight += n;
    this.#inFlight += n;
    const settle = (): void => {
      s.inFlight -= n;
      this.#inFlight -= n;
      this.#pending.delete(p);
      this.#flow(s);
      this.#maybeEnd(s);
    };
    const p: Promise<void> = put.then((isNew) => {
      try {
        for (let k = 0; k < n; k++) {
          if (isNew[k]) this.#stats.stored++;
          else this.#stats.duplicates++;
          this.#ack(s, ids[k]!);
        }
      } finally {
        settle();
      }
    }, (err) => {
      this.#stats.storeErrors += n;
      this.#storeLog.run((suppressed) =>
        log.error(
          "Cannot store {what} (not acked, the sender will resend {them}): {error}{more}",
          {
            what: n === 1 ? `event ${events[0]!.eventId}` : `${n} events`,
            them: n === 1 ? "it" : "them",
            error: errorText(err),
            more: suppressed > 0 ? ` (and ${suppressed} more store errors)` : "",
          },
        )
      );
      settle();
    });
    this.#pending.add(p);
  }

  #ack(s: StreamState, eventId: Uint8Array): void {
    if (s.closed) return; // stored, but the stream is gone: the sender resends, we dedupe
    this.#stats.acks++;
    if (!s.call.write(encodeFlowEventAck({ eventId, isInitiator: false }))) {
      s.awaitingDrain = true;
    }
  }

  /** Pauses reading while too much is in flight, acks are not flushed, or we are stopping. */
  #flow(s: StreamState): void {
    if (s.closed) return;
    const pause = this.#stopping || s.awaitingDrain || s.inFlight >= this.#maxInFlight;
    if (pause && !s.paused) {
      s.paused = true;
      s.call.pause();
    } else if (!pause && s.paused) {
      s.paused = false;
      s.call.resume();
    }
  }

  #maybeEnd(s: StreamState): void {
    if (s.halfClosed && s.inFlight === 0) {
      this.#finish(s, { code: GrpcStatus.OK, details: "OK" });
    }
  }

  /** Ends a stream (with a status, or none when the client is gone already). */
  #finish(s: StreamState, status: StreamStatus | undefined): void {
    if (s.closed) return;
    s.closed = true;
    clearTimeout(s.expiryTimer);
    this.#streams.delete(s);
    if (status !== undefined) s.call.close(status);
    log.debug("Stream {id} closed ({status})", {
      id: s.id,
      status: status === undefined ? "client gone" : status.details,
    });
  }

  // --- HTTP query API --------------------------------------------------------------------

  /**
   * Answers one HTTP request to the query API. Public for tests.
   *
   * @param req The request.
   * @returns 200 with NetBird's envelope; 400 for a bad parameter; 404, 405, 414; 503 when the
   * store cannot answer. Error bodies are `{"message": "..."}`.
   */
  async handleHttp(req: Request): Promise<Response> {
    const res = await this.#answer(req);
    if (res.status === 200) this.#stats.queries++;
    else this.#stats.queryErrors++;
    return res;
  }

  async #answer(req: Request): Promise<Response> {
    if (req.method !== "GET") {
      await req.body?.cancel();
      return errorResponse(
        405,
        `method ${req.method} not allowed: the query API only answers GET`,
        { allow: "GET" },
      );
    }
    const length = req.headers.get("content-length");
    if ((length !== null && length !== "0") || req.headers.has("transfer-encoding")) {
      await req.body?.cancel();
      return errorResponse(400, "request body not allowed on GET");
    }
    if (req.url.length > MAX_URL_LENGTH) {
      return errorResponse(414, `request URL longer than ${MAX_URL_LENGTH} characters`);
    }
    const url = new URL(req.url);
    if (url.pathname !== QUERY_PATH) {
      return errorResponse(
        404,
        `no such endpoint "${url.pathname}": the query API is ${QUERY_PATH}`,
      );
    }
    let query;
    try {
      query = parseEventQuery(url.searchParams);
    } catch (err) {
      if (err instanceof QueryParamError) return errorResponse(400, err.message);
      throw err;
    }
    let result;
    try {
      result = await this.#store.query(query);
    } catch (err) {
      log.error("Cannot answer a query: {error}", { error: errorText(err) });
      return errorResponse(503, `cannot query the event store: ${errorText(err)}`);
    }
    return jsonResponse(200, responseJson(result, query));
  }
}

/**
 * Formats the receiver's counters as `key=value` pairs; with a previous snapshot, also the
 * event rate.
 *
 * @param now The current counters.
 * @param previous The previous counters and how many ms lie between the two.
 * @returns The line (without the log prefix).
 *
 * @example Usage
 * ```ts
 * import { formatReceiverStats, type ReceiverStats } from "./server.ts";
 * const zero: ReceiverStats = { streams: 0, activeStreams: 0, received: 0, stored: 0,
 *   duplicates: 0, acks: 0, rejected: 0, authFailures: 0, storeErrors: 0, inFlight: 0,
 *   queries: 0, queryErrors: 0 };
 * const line = formatReceiverStats({ ...zero, received: 20 }, { stats: zero, elapsedMs: 2000 });
 * if (!line.startsWith("events_per_s=10 received=20 ")) throw new Error(line);
 * ```
 */
export function formatReceiverStats(
  now: ReceiverStats,
  previous?: { stats: ReceiverStats; elapsedMs: number },
): string {
  const parts: string[] = [];
  if (previous !== undefined) {
    const seconds = Math.max(0.001, previous.elapsedMs / 1000);
    parts.push(`events_per_s=${Math.round((now.received - previous.stats.received) / seconds)}`);
  }
  parts.push(
    `received=${now.received}`,
    `stored=${now.stored}`,
    `duplicates=${now.duplicates}`,
    `acks=${now.acks}`,
    `rejected=${now.rejected}`,
    `auth_failures=${now.authFailures}`,
    `store_errors=${now.storeErrors}`,
    `in_flight=${now.inFlight}`,
    `streams=${now.streams}`,
    `active_streams=${now.activeStreams}`,
    `queries=${now.queries}`,
    `query_errors=${now.queryErrors}`,
  );
  return parts.join(" ");
}
