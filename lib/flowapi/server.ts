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
 * @module
 */

import { Buffer } from "node:buffer";
import { getLogger } from "@logtape/logtape";
import {
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServiceDefinition,
} from "@grpc/grpc-js";
import { decodeFlowEvent, encodeFlowEventAck, flowEventToStored } from "./proto.ts";
import { parseEventQuery, QUERY_PATH, QueryParamError, responseJson } from "./query.ts";
import type { EventStore } from "./store.ts";
import { bearerToken, TokenError, verifyToken } from "./token.ts";
import { errorText } from "../_async.ts";

const log = getLogger(["netbird-ct", "collect"]);

/** gRPC status codes used by the receiver. */
export const GrpcStatus = {
  /** The stream ended normally (the client half-closed). */
  OK: 0,
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
  /** One serialized `FlowEvent`. */
  message(bytes: Uint8Array): void;
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

/** Adapts a grpc-js bidi call to {@linkcode EventsCall}. */
function grpcCall(call: ServerDuplexStream<Buffer, Buffer>): EventsCall {
  return {
    authorization: call.metadata.get("authorization").map((v) =>
      typeof v === "string" ? v : v.toString("latin1")
    ),
    peer: call.getPeer(),
    listen(h: EventsCallHandlers): void {
      call.on("data", (b: Buffer) => h.message(b));
      call.on("end", () => h.end());
      call.on("cancelled", () => h.cancel());
      call.on("drain", () => h.drain());
      // Errors on the call end it: treat like a cancel (logged at debug level).
      call.on("error", (err: unknown) => {
        log.debug("Stream from {peer}: {error}", { peer: call.getPeer(), error: String(err) });
        h.cancel();
      });
    },
    write: (message: Uint8Array): boolean => call.write(Buffer.from(message)),
    close(status: StreamStatus): void {
      if (status.code === GrpcStatus.OK) call.end();
      else call.emit("error", { code: status.code, details: status.details });
    },
    pause: (): void => void call.pause(),
    resume: (): void => void call.resume(),
  };
}

const identity = (b: Buffer): Buffer => b;

/** The `flow.FlowService` definition, with raw bytes in and out (decoded by `proto.ts`). */
const FLOW_SERVICE: ServiceDefinition = {
  Events: {
    path: "/flow.FlowService/Events",
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: "events",
  },
};

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
  inFlight: Set<Promise<void>>;
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
  #grpc: Server | undefined;
  #grpcPort = 0;
  #http: Deno.HttpServer<Deno.NetAddr> | undefined;
  #streams = new Set<StreamState>();
  #inFlight = new Set<Promise<void>>();
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
    return { ...this.#stats, activeStreams: this.#streams.size, inFlight: this.#inFlight.size };
  }

  /**
   * Starts listening: gRPC first, then the query API.
   *
   * @throws {Error} `Cannot listen on ADDRESS (gRPC|HTTP): …` when an address cannot be bound.
   */
  async start(): Promise<void> {
    if (this.#grpc !== undefined) return;
    const o = this.#options;
    const maxMessage = o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const server = new Server({
      "grpc.max_receive_message_length": maxMessage,
      "grpc.max_send_message_length": maxMessage,
      "grpc.max_concurrent_streams": 100,
      // Find dead clients on long-lived streams.
      "grpc.keepalive_time_ms": 60_000,
      "grpc.keepalive_timeout_ms": 20_000,
    });
    server.addService(FLOW_SERVICE, {
      Events: (call: ServerDuplexStream<Buffer, Buffer>) => this.handleEventsCall(grpcCall(call)),
    });
    const credentials = o.tls === undefined
      ? ServerCredentials.createInsecure()
      // An empty CA list, not null: with null, grpc-js passes every system root CA as `ca`, and
      // Deno's TLS server then sends them all in the handshake (clients fail with "excessive
      // message size"). Client certificates are not requested, so no CA is needed.
      : ServerCredentials.createSsl(Buffer.alloc(0), [{
        cert_chain: Buffer.from(o.tls.cert),
        private_key: Buffer.from(o.tls.key),
      }], false);
    const address = hostPort(o.listen);
    try {
      this.#grpcPort = await new Promise<number>((resolve, reject) => {
        server.bindAsync(address, credentials, (err, port) => err ? reject(err) : resolve(port));
      });
    } catch (err) {
      server.forceShutdown();
      throw new Error(`Cannot listen on ${address} (gRPC): ${errorText(err)}`);
    }
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
        server.forceShutdown();
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
    const grpc = this.#grpc;
    const grpcClosed = grpc === undefined
      ? Promise.resolve()
      : new Promise<void>((resolve) => grpc.tryShutdown(() => resolve()));
    for (const s of this.#streams) this.#flow(s);
    const deadline = performance.now() + timeoutMs;
    while (this.#inFlight.size > 0) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...this.#inFlight]),
        new Promise((resolve) => timer = setTimeout(resolve, left)),
      ]);
      clearTimeout(timer);
    }
    if (this.#inFlight.size > 0) {
      log.warning(
        "Stopping with {count} events still being stored: not acked, their senders will resend them",
        { count: this.#inFlight.size },
      );
    }
    for (const s of [...this.#streams]) {
      this.#finish(s, { code: GrpcStatus.UNAVAILABLE, details: "receiver is shutting down" });
    }
    if (grpc !== undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const forced = await Promise.race([
        grpcClosed.then(() => false),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(true), 5000)),
      ]);
      clearTimeout(timer);
      if (forced) grpc.forceShutdown();
    }
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
      inFlight: new Set(),
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
      message: (bytes) => this.#onMessage(s, bytes),
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

  #onMessage(s: StreamState, bytes: Uint8Array): void {
    if (s.closed) return;
    let event;
    let stored;
    try {
      event = decodeFlowEvent(bytes);
      if (event.isInitiator) return;
      this.#stats.received++;
      stored = flowEventToStored(event);
    } catch (err) {
      this.#stats.rejected++;
      this.#rejectLog.run((suppressed) =>
        log.warning("Dropped a message from {peer} (not acked): {error}{more}", {
          peer: s.call.peer,
          error: errorText(err),
          more: suppressed > 0 ? ` (and ${suppressed} more)` : "",
        })
      );
      return;
    }
    const eventId = event.eventId;
    const id = stored.eventId;
    const p: Promise<void> = this.#store.put(stored).then((isNew) => {
      if (isNew) this.#stats.stored++;
      else this.#stats.duplicates++;
      this.#ack(s, eventId);
    }, (err) => {
      this.#stats.storeErrors++;
      this.#storeLog.run((suppressed) =>
        log.error("Cannot store event {id} (not acked, the sender will resend it): {error}{more}", {
          id,
          error: errorText(err),
          more: suppressed > 0 ? ` (and ${suppressed} more store errors)` : "",
        })
      );
    }).finally(() => {
      s.inFlight.delete(p);
      this.#inFlight.delete(p);
      this.#flow(s);
      this.#maybeEnd(s);
    });
    s.inFlight.add(p);
    this.#inFlight.add(p);
    this.#flow(s);
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
    const pause = this.#stopping || s.awaitingDrain || s.inFlight.size >= this.#maxInFlight;
    if (pause && !s.paused) {
      s.paused = true;
      s.call.pause();
    } else if (!pause && s.paused) {
      s.paused = false;
      s.call.resume();
    }
  }

  #maybeEnd(s: StreamState): void {
    if (s.halfClosed && s.inFlight.size === 0) {
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
