/**
 * A small HTTP/2 server for gRPC (RFC 9113, gRPC over HTTP/2): h2c with prior knowledge over
 * `Deno.listen`, or TLS with ALPN `h2` over `Deno.listenTls`. Only what a gRPC server needs:
 * no server push, no priorities, no HTTP/1.1 upgrade.
 *
 * Work is done per socket read: every frame of one read is processed, the gRPC messages of each
 * stream are handed to the stream's handler as one batch, and everything that becomes ready to
 * send (acks, window updates, PING and SETTINGS acks) goes out in as few frames and socket writes
 * as possible (one write per flush; the flush runs after the microtasks that the batch started,
 * so replies to already-settled work join it).
 *
 * Flow control: the connection window is credited back as data arrives; a stream's window only
 * while its handler takes messages, so a paused stream (`pause()`) stops its sender after at
 * most one stream window. Reading the socket stops while too much is queued for handlers or
 * waiting to be written. Sending respects the peer's stream and connection windows and maximum
 * frame size.
 *
 * Errors: peer input never throws out of a connection; protocol errors end the connection with
 * GOAWAY and the matching error code, stream errors reset only the stream (RST_STREAM).
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  CONNECTION_PREFACE,
  DEFAULT_MAX_FRAME_SIZE,
  ErrorCode,
  errorCodeName,
  Flag,
  FrameReader,
  FrameType,
  H2Error,
  MAX_WINDOW_SIZE,
  OutBuffer,
  Setting,
} from "./frames.ts";
import { type HeaderField, HpackDecoder, HpackEncoder } from "./hpack.ts";
import {
  checkPing,
  checkPriority,
  connectionError,
  creditStream,
  goawayCode,
  goawayDebug,
  HeaderBlocks,
  PeerSettings,
  ReceiveWindow,
  rstStreamCode,
  windowIncrement,
} from "./_conn.ts";

const log = getLogger(["netbird-ct", "collect", "h2"]);

/** gRPC status codes the transport itself uses. */
export const GrpcCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

/** The byte stream a connection runs on: a `Deno.Conn`, a `Deno.TlsConn`, or a test double. */
export interface Duplex {
  /** Reads into `p`; `null` at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; returns how many bytes. */
  write(p: Uint8Array): Promise<number>;
  /** Closes both directions. */
  close(): void;
  /** Closes the write direction (TCP FIN), if supported. */
  closeWrite?(): Promise<void>;
}

/** What a stream delivers to its handler (see {@linkcode GrpcStream.listen}). */
export interface GrpcStreamHandlers {
  /**
   * Messages that arrived, in order. The views are only valid during the call (they may point
   * into the connection's read buffer). Returns how many were taken; the rest are kept and
   * offered again after `resume()` (the handler should `pause()` the stream when it stops
   * taking).
   */
  messages(batch: Uint8Array[]): number;
  /** The client half-closed the stream, after its last message was taken. */
  end(): void;
  /** The stream was reset or the connection lost; nothing more can be written. */
  cancel(): void;
  /** Output that made `write` return `false` has been sent. */
  drain(): void;
}

/** Handles a new stream of one method; call `listen` (or `end`) before returning. */
export type GrpcMethodHandler = (stream: GrpcStream) => void;

/** Options of {@linkcode GrpcServer}. */
export interface GrpcServerOptions {
  /** Handlers by path, e.g. `/flow.FlowService/Events`; other paths get UNIMPLEMENTED. */
  methods: Record<string, GrpcMethodHandler>;
  /** Largest accepted message (default 4 MiB); larger ones end the stream (RESOURCE_EXHAUSTED). */
  maxMessageBytes?: number;
  /** `SETTINGS_MAX_CONCURRENT_STREAMS` (default 100). */
  maxConcurrentStreams?: number;
  /** Receive window of each stream (default 128 KiB). */
  streamWindow?: number;
  /** Receive window of each connection (default 1 MiB). */
  connectionWindow?: number;
  /** `SETTINGS_MAX_HEADER_LIST_SIZE` (default 16 KiB): larger requests are refused. */
  maxHeaderListSize?: number;
  /** PING a connection idle this long (default 60 s; 0 = never). */
  keepaliveMs?: number;
  /** Close a connection whose PING is not answered within this time (default 20 s). */
  keepaliveTimeoutMs?: number;
  /** How long a TLS handshake may take (default 10 s). */
  handshakeTimeoutMs?: number;
}

/** Counters of a {@linkcode GrpcServer}. */
export interface GrpcServerStats {
  /** Connections accepted. */
  connections: number;
  /** Connections open now. */
  activeConnections: number;
  /** Connections ended with a protocol error (GOAWAY with an error code sent). */
  protocolErrors: number;
  /** Streams reset by the peer. */
  resetsReceived: number;
  /** GOAWAY frames received. */
  goawaysReceived: number;
}

const RESPONSE_HEADERS: readonly HeaderField[] = [
  [":status", "200"],
  ["content-type", "application/grpc"],
  ["grpc-accept-encoding", "identity"],
];

/** A stream's unsent output beyond which `write` returns `false`. */
const STREAM_HIGH_WATER = 64 * 1024;
/** A connection's unsent output beyond which writes return `false` and reading stops. */
const CONNECTION_HIGH_WATER = 1024 * 1024;
/** Messages queued for handlers on one connection beyond which reading stops. */
const QUEUED_HIGH_WATER = 1024 * 1024;
/** How long a closing connection waits for its last bytes to be sent / the peer to close. */
const LINGER_MS = 2000;
/** Streams a client may reset within {@linkcode RESET_WINDOW_MS} (rapid reset, CVE-2023-44487). */
const MAX_RESETS = 1000;
const RESET_WINDOW_MS = 10_000;
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
]);
const REQUEST_PSEUDO = new Set([":method", ":scheme", ":path", ":authority"]);

/**
 * Percent-encodes a `grpc-message` (gRPC over HTTP/2: UTF-8, then `%XX` for bytes outside
 * 0x20–0x7E and for `%`).
 *
 * @param message The text.
 * @returns The header value.
 *
 * @example Usage
 * ```ts
 * import { percentEncode } from "./server.ts";
 * if (percentEncode("50% ü\n") !== "50%25 %C3%BC%0A") throw new Error();
 * ```
 */
export function percentEncode(message: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(message)) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** A reason to reject a request's header list (a stream error of type PROTOCOL_ERROR). */
function malformed(headers: HeaderField[]): string | undefined {
  let regular = false;
  const seen = new Set<string>();
  for (const [name, value] of headers) {
    if (name === "") return "empty field name";
    if (name.charCodeAt(0) === 0x3a) {
      if (regular) return `pseudo-header ${name} after a regular field`;
      if (!REQUEST_PSEUDO.has(name)) return `pseudo-header ${name} not allowed in a request`;
      if (seen.has(name)) return `pseudo-header ${name} twice`;
      seen.add(name);
    } else {
      regular = true;
      for (let i = 0; i < name.length; i++) {
        const c = name.charCodeAt(i);
        if (c <= 0x20 || (c >= 0x41 && c <= 0x5a) || c >= 0x7f || c === 0x3a) {
          return `invalid field name ${JSON.stringify(name)}`;
        }
      }
      if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
      if (name === "te" && value !== "trailers") return `te: ${value}`;
    }
    for (let i = 0; i < value.length; i++) {
      const c = value.charCodeAt(i);
      if (c === 0 || c === 0x0a || c === 0x0d) return `invalid character in ${name}`;
    }
    const first = value.charCodeAt(0);
    const last = value.charCodeAt(value.length - 1);
    if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) {
      return `whitespace around the value of ${name}`;
    }
  }
  for (const name of [":method", ":scheme", ":path"]) {
    if (!seen.has(name)) return `missing ${name}`;
  }
  return undefined;
}

/**
 * One gRPC call (one HTTP/2 stream) on the server: request metadata, incoming messages, outgoing
 * messages and the final status.
 */
export class GrpcStream {
  /** The stream identifier. */
  readonly id: number;
  /** The request path (`/package.Service/Method`). */
  readonly path: string;
  /** The request header list (pseudo-headers included), in order. */
  readonly headers: readonly HeaderField[];
  /** The client's address, `host:port`. */
  readonly peer: string;

  /** @internal */ recvWindow: number;
  /** @internal */ credit = 0;
  /** @internal */ held = 0;
  /** @internal */ remoteEnded = false;
  /** @internal */ queue: Uint8Array[] = [];
  /** @internal */ queueBytes = 0;
  /** @internal */ queueInReadBuffer = false;
  /** @internal */ paused = false;
  /** @internal */ dirty = false;
  /** @internal */ handlers: GrpcStreamHandlers | undefined;
  /** @internal */ endDelivered = false;
  /** @internal */ sendWindow: number;
  /** @internal Output chunks; the last one is filled up to `outTail`. */
  out: Uint8Array[] = [];
  /** @internal */ outHead = 0;
  /** @internal */ outOff = 0;
  /** @internal */ outTail = 0;
  /** @internal */ outBytes = 0;
  /** @internal */ headersSent = false;
  /** @internal */ trailers: HeaderField[] | undefined;
  /** @internal */ httpStatus = "200";
  /** @internal */ localEnded = false;
  /** @internal */ closed = false;
  /** @internal */ needDrain = false;
  #conn: H2Connection;
  #msgHeader = new Uint8Array(5);
  #msgHeaderFill = 0;
  #msg: Uint8Array | undefined;
  #msgFill = 0;

  /** @internal */
  constructor(
    conn: H2Connection,
    id: number,
    headers: HeaderField[],
    recvWindow: number,
    sendWindow: number,
  ) {
    this.#conn = conn;
    this.id = id;
    this.headers = headers;
    this.path = headers.find(([n]) => n === ":path")?.[1] ?? "";
    this.peer = conn.peer;
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
  }

  /**
   * Every value of a request header.
   *
   * @param name Lowercase name.
   * @returns The values, in order.
   */
  metadata(name: string): string[] {
    const values: string[] = [];
    for (const [n, v] of this.headers) if (n === name) values.push(v);
    return values;
  }

  /** Whether the stream is finished (status sent, or reset, or the connection is gone). */
  get finished(): boolean {
    return this.trailers !== undefined || this.closed;
  }

  /**
   * Starts delivering messages and events to `handlers`.
   *
   * @param handlers The callbacks.
   */
  listen(handlers: GrpcStreamHandlers): void {
    this.handlers = handlers;
    if (this.closed) {
      queueMicrotask(() => handlers.cancel());
      return;
    }
    if (this.queue.length > 0 || this.remoteEnded) this.#conn.scheduleDeliver(this);
  }

  /**
   * Queues one message (the 5-byte prefix is added). Sent in the next flush, within the peer's
   * flow-control windows.
   *
   * @param message The serialized message.
   * @returns `false` when the stream or connection has too much unsent output: wait for
   * `drain`.
   */
  write(message: Uint8Array): boolean {
    if (this.finished) return true;
    const n = message.length;
    const need = 5 + n;
    const chunks = this.out;
    let last = chunks[chunks.length - 1];
    if (last === undefined || last.length - this.outTail < need) {
      if (last !== undefined) chunks[chunks.length - 1] = last.subarray(0, this.outTail);
      last = new Uint8Array(Math.max(4096, need));
      chunks.push(last);
      this.outTail = 0;
    }
    const t = this.outTail;
    last[t] = 0;
    last[t + 1] = n >>> 24;
    last[t + 2] = (n >>> 16) & 0xff;
    last[t + 3] = (n >>> 8) & 0xff;
    last[t + 4] = n & 0xff;
    last.set(message, t + 5);
    this.outTail = t + need;
    this.outBytes += need;
    this.#conn.queueSend(this);
    if (this.outBytes > STREAM_HIGH_WATER || this.#conn.backlogged) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  /**
   * Ends the call with a status: trailers after the queued messages, or a Trailers-Only
   * response when nothing was sent. If the client has not half-closed, the stream is then reset
   * with NO_ERROR (RFC 9113 §8.1). Idempotent.
   *
   * @param code gRPC status code.
   * @param message Status message (percent-encoded on the wire).
   * @param httpStatus `:status` of a Trailers-Only response (default 200).
   */
  end(code: number, message = "", httpStatus = 200): void {
    if (this.finished) return;
    this.trailers = [["grpc-status", String(code)]];
    if (message !== "") this.trailers.push(["grpc-message", percentEncode(message.slice(0, 1024))]);
    this.httpStatus = String(httpStatus);
    this.#dropQueue();
    this.#conn.queueSend(this);
  }

  /** Stops delivering messages and stops crediting the stream's receive window. */
  pause(): void {
    this.paused = true;
  }

  /** Resumes delivering messages (also those kept while paused) and crediting the window. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.closed) return;
    this.credit += this.held;
    this.held = 0;
    this.#conn.addCredit(this);
    this.#conn.scheduleDeliver(this);
  }

  /** @internal Message bytes of one DATA frame (padding removed). */
  onData(data: Uint8Array, maxMessage: number): void {
    let p = 0;
    const len = data.length;
    while (p < len) {
      if (this.#msg === undefined) {
        let flag: number;
        let size: number;
        if (this.#msgHeaderFill === 0 && len - p >= 5) {
          flag = data[p]!;
          size = (data[p + 1]! << 24 | data[p + 2]! << 16 | data[p + 3]! << 8 | data[p + 4]!) >>> 0;
          p += 5;
        } else {
          const n = Math.min(5 - this.#msgHeaderFill, len - p);
          this.#msgHeader.set(data.subarray(p, p + n), this.#msgHeaderFill);
          this.#msgHeaderFill += n;
          p += n;
          if (this.#msgHeaderFill < 5) return;
          this.#msgHeaderFill = 0;
          const h = this.#msgHeader;
          flag = h[0]!;
          size = (h[1]! << 24 | h[2]! << 16 | h[3]! << 8 | h[4]!) >>> 0;
        }
        if (flag !== 0) {
          const encoding = this.metadata("grpc-encoding")[0] ?? "identity";
          if (flag !== 1) {
            this.#fail(GrpcCode.INTERNAL, `invalid message flags 0x${flag.toString(16)}`);
          } else if (encoding === "identity") {
            this.#fail(GrpcCode.INTERNAL, "compressed message without grpc-encoding");
          } else {
            this.#fail(
              GrpcCode.UNIMPLEMENTED,
              `message compression ${JSON.stringify(encoding)} is not supported (identity only)`,
            );
          }
          return;
        }
        if (size > maxMessage) {
          this.#fail(
            GrpcCode.RESOURCE_EXHAUSTED,
            `Received message larger than max (${size} vs. ${maxMessage})`,
          );
          return;
        }
        if (len - p >= size) {
          this.#push(data.subarray(p, p + size), true);
          p += size;
        } else {
          this.#msg = new Uint8Array(size);
          this.#msgFill = len - p;
          this.#msg.set(data.subarray(p));
          return;
        }
      } else {
        const n = Math.min(this.#msg.length - this.#msgFill, len - p);
        this.#msg.set(data.subarray(p, p + n), this.#msgFill);
        this.#msgFill += n;
        p += n;
        if (this.#msgFill === this.#msg.length) {
          this.#push(this.#msg, false);
          this.#msg = undefined;
        }
      }
    }
  }

  /** @internal The client half-closed. */
  onRemoteEnd(): void {
    this.remoteEnded = true;
    if (this.#msg !== undefined || this.#msgHeaderFill > 0) {
      this.#fail(GrpcCode.INTERNAL, "stream ended inside a message");
      return;
    }
    this.#conn.markDirty(this);
  }

  #push(message: Uint8Array, inReadBuffer: boolean): void {
    if (this.finished) return;
    this.queue.push(message);
    this.queueBytes += message.length;
    this.#conn.queued += message.length;
    if (inReadBuffer) this.queueInReadBuffer = true;
    this.#conn.markDirty(this);
  }

  #dropQueue(): void {
    this.#conn.queued -= this.queueBytes;
    this.queue = [];
    this.queueBytes = 0;
  }

  #fail(code: number, message: string): void {
    log.debug("Stream {id} from {peer}: {message}", { id: this.id, peer: this.peer, message });
    const handlers = this.handlers;
    const cancel = !this.finished && handlers !== undefined;
    this.end(code, message);
    if (cancel) this.#conn.safely(() => handlers.cancel());
  }
}

/** One HTTP/2 connection on the server side. */
export class H2Connection {
  /** The client's address, `host:port`. */
  readonly peer: string;
  /** Resolves when the connection is closed. */
  readonly closed: Promise<void>;
  /** @internal Bytes of messages queued for handlers. */
  queued = 0;

  #conn: Duplex;
  #server: GrpcServer;
  #o: Required<Omit<GrpcServerOptions, "methods">>;
  #reader: FrameReader;
  #decoder = new HpackDecoder(4096);
  #encoder = new HpackEncoder();
  #out = new OutBuffer();
  #streams = new Map<number, GrpcStream>();
  #lastStreamId = 0;
  #prefaceFill = 0;
  #settingsReceived = false;
  #peer = new PeerSettings(this.#encoder, false);
  #recv = new ReceiveWindow();
  #hb = new HeaderBlocks();
  #dirty: GrpcStream[] = [];
  #deliverQueue = new Set<GrpcStream>();
  #deliverScheduled = false;
  #sendQueue = new Set<GrpcStream>();
  #creditStreams = new Set<GrpcStream>();
  #batchDepth = 0;
  #flushScheduled = false;
  #flushWanted = false;
  #writing = false;
  #inWrite = 0;
  #goawaySent = false;
  #goawayReceived = false;
  #draining = false;
  #closing = false;
  #destroyed = false;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  #resets = 0;
  #resetsSince = 0;
  #readWake: (() => void) | undefined;
  #resolveClosed!: () => void;
  /** @internal performance.now() of the last read. */
  lastActivity = performance.now();
  /** @internal performance.now() of an unanswered keepalive PING. */
  pingSentAt: number | undefined;

  /** @internal */
  constructor(
    conn: Duplex,
    peer: string,
    server: GrpcServer,
    options: Required<Omit<GrpcServerOptions, "methods">>,
  ) {
    this.#conn = conn;
    this.peer = peer;
    this.#server = server;
    this.#o = options;
    // 32 KiB to start with, 64 KiB once reads fill it.
    this.#reader = new FrameReader(DEFAULT_MAX_FRAME_SIZE, 32 * 1024, 64 * 1024);
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** Streams open now. */
  get streamCount(): number {
    return this.#streams.size;
  }

  /** @internal Whether unsent output is above the high-water mark. */
  get backlogged(): boolean {
    return this.#out.length + this.#inWrite > CONNECTION_HIGH_WATER;
  }

  /** @internal Runs the connection until it closes (never rejects). */
  async run(handshake?: () => Promise<void>): Promise<void> {
    try {
      if (handshake !== undefined) await handshake();
      this.#out.settings([
        [Setting.MAX_CONCURRENT_STREAMS, this.#o.maxConcurrentStreams],
        [Setting.INITIAL_WINDOW_SIZE, this.#o.streamWindow],
        [Setting.MAX_HEADER_LIST_SIZE, this.#o.maxHeaderListSize],
        [Setting.ENABLE_PUSH, 0],
      ]);
      this.#recv.open(this.#out, this.#o.connectionWindow);
      this.#flush();
      await this.#readLoop();
    } catch (err) {
      log.debug("Connection from {peer}: {error}", { peer: this.peer, error: String(err) });
    } finally {
      this.#destroy();
    }
  }

  async #readLoop(): Promise<void> {
    const reader = this.#reader;
    while (!this.#destroyed) {
      while (
        !this.#destroyed && !this.#closing && (this.backlogged || this.queued > QUEUED_HIGH_WATER)
      ) {
        await new Promise<void>((resolve) => this.#readWake = resolve);
        this.#readWake = undefined;
      }
      if (this.#destroyed) return;
      const n = await this.#conn.read(reader.space());
      if (n === null) return;
      this.lastActivity = performance.now();
      this.pingSentAt = undefined;
      if (this.#closing) continue; // lingering: discard until the peer closes
      reader.commit(n);
      this.#onBytes();
    }
  }

  #wakeReader(): void {
    const wake = this.#readWake;
    if (wake !== undefined && !(this.backlogged || this.queued > QUEUED_HIGH_WATER)) wake();
    else if (wake !== undefined && (this.#destroyed || this.#closing)) wake();
  }

  /** Processes the bytes of one read as a batch. */
  #onBytes(): void {
    this.#batchDepth++;
    try {
      const r = this.#reader;
      if (this.#prefaceFill < CONNECTION_PREFACE.length) {
        const data = r.pending();
        const n = Math.min(CONNECTION_PREFACE.length - this.#prefaceFill, data.length);
        for (let i = 0; i < n; i++) {
          if (data[i] !== CONNECTION_PREFACE[this.#prefaceFill + i]) {
            throw new H2Error(ErrorCode.PROTOCOL_ERROR, "invalid connection preface");
          }
        }
        this.#prefaceFill += n;
        r.skip(n);
      }
      while (!this.#closing && r.next()) {
        try {
          this.#onFrame(r.type, r.flags, r.streamId, r.payload);
        } catch (err) {
          if (!(err instanceof H2Error) || err.streamId === 0) throw err;
          this.#resetStream(err.streamId, err.code, err.message);
        }
      }
      this.#deliverDirty();
    } catch (err) {
      this.#onConnectionError(err);
    } finally {
      this.#batchDepth--;
      this.#creditWindows();
      this.#endBatch();
    }
  }

  #onConnectionError(err: unknown): void {
    const e = connectionError(
      err,
      (err) =>
        log.error("Connection from {peer}: internal error: {error}", {
          peer: this.peer,
          error: err instanceof Error ? err.stack ?? err.message : String(err),
        }),
    );
    this.#server.countProtocolError();
    log.debug("Connection from {peer}: {code}: {message}", {
      peer: this.peer,
      code: errorCodeName(e.code),
      message: e.message,
    });
    this.#close(e.code, e.message);
  }

  // --- frames ---------------------------------------------------------------------------

  #onFrame(type: number, flags: number, streamId: number, payload: Uint8Array): void {
    if (this.#hb.streamId !== 0 && type !== FrameType.CONTINUATION) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION");
    }
    if (!this.#settingsReceived && (type !== FrameType.SETTINGS || (flags & Flag.ACK) !== 0)) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "the client preface must start with SETTINGS");
    }
    switch (type) {
      case FrameType.DATA:
        return this.#onData(flags, streamId, payload);
      case FrameType.HEADERS:
        return this.#onHeaders(flags, streamId, payload);
      case FrameType.PRIORITY:
        return checkPriority(streamId, payload);
      case FrameType.RST_STREAM:
        return this.#onRstStream(streamId, payload);
      case FrameType.SETTINGS:
        return this.#onSettings(flags, streamId, payload);
      case FrameType.PUSH_PROMISE:
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case FrameType.PING:
        if (checkPing(flags, streamId, payload)) {
          this.#out.ping(true, payload);
          this.#flushWanted = true;
        }
        return;
      case FrameType.GOAWAY:
        return this.#onGoaway(streamId, payload);
      case FrameType.WINDOW_UPDATE:
        return this.#onWindowUpdate(streamId, payload);
      case FrameType.CONTINUATION:
        return this.#onContinuation(flags, streamId, payload);
      default:
        return; // unknown frame types are ignored (RFC 9113 §4.1)
    }
  }

  #onSettings(flags: number, streamId: number, payload: Uint8Array): void {
    if (!this.#peer.apply(flags, streamId, payload, this.#streams, this.#sendQueue)) return;
    this.#settingsReceived = true;
    this.#out.settingsAck();
    this.#flushWanted = true;
  }

  #onWindowUpdate(streamId: number, payload: Uint8Array): void {
    const inc = windowIncrement(payload);
    if (streamId === 0) {
      this.#peer.creditConnection(inc, this.#streams, this.#sendQueue);
      this.#flushWanted = true;
      return;
    }
    if (streamId > this.#lastStreamId) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
    }
    const s = this.#streams.get(streamId);
    if (s === undefined) return;
    if (creditStream(s, streamId, inc)) {
      this.#sendQueue.add(s);
      this.#flushWanted = true;
    }
  }

  #onRstStream(streamId: number, payload: Uint8Array): void {
    const code = rstStreamCode(streamId, payload);
    if (streamId > this.#lastStreamId) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream");
    }
    const s = this.#streams.get(streamId);
    if (s === undefined) return;
    this.#server.countReset();
    const now = performance.now();
    if (now - this.#resetsSince > RESET_WINDOW_MS) {
      this.#resetsSince = now;
      this.#resets = 0;
    }
    if (++this.#resets > MAX_RESETS) {
      throw new H2Error(ErrorCode.ENHANCE_YOUR_CALM, "too many streams reset by the client");
    }
    log.debug("Stream {id} from {peer} reset by the client ({code})", {
      id: streamId,
      peer: this.peer,
      code: errorCodeName(code),
    });
    this.#closeStream(s, true);
  }

  #onGoaway(streamId: number, payload: Uint8Array): void {
    const code = goawayCode(streamId, payload);
    this.#server.countGoaway();
    log.debug("GOAWAY from {peer} ({code}: {debug})", {
      peer: this.peer,
      code: errorCodeName(code),
      debug: goawayDebug(payload),
    });
    // The client opens no more streams; the open ones go on. (The last stream ID refers to
    // streams we would have opened: none.) Once the open streams are done, the connection is
    // closed without a GOAWAY of ours: the client started the shutdown, and a GOAWAY on a
    // session with finished streams aborts peers on Deno's node:http2 (denoland/deno#36788).
    this.#goawayReceived = true;
    this.#maybeFinish();
  }

  #onHeaders(flags: number, streamId: number, payload: Uint8Array): void {
    const fragment = this.#hb.headers(flags, streamId, payload);
    if (fragment !== undefined) this.#onHeaderBlock(streamId, flags, fragment);
  }

  #onContinuation(flags: number, streamId: number, payload: Uint8Array): void {
    const headerFlags = this.#hb.flags;
    const block = this.#hb.continuation(flags, streamId, payload);
    if (block !== undefined) this.#onHeaderBlock(streamId, headerFlags, block);
  }

  #onHeaderBlock(streamId: number, flags: number, block: Uint8Array): void {
    if (streamId % 2 === 0) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, `stream ${streamId} is not client-initiated`);
    }
    // Always decoded, also when the stream is then ignored: the HPACK context must stay in step.
    const decoded = this.#decoder.decode(block, this.#o.maxHeaderListSize);
    const endStream = (flags & Flag.END_STREAM) !== 0;
    const existing = this.#streams.get(streamId);
    if (existing !== undefined) {
      // Trailers from the client.
      if (existing.remoteEnded) {
        throw new H2Error(ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM", streamId);
      }
      if (!endStream) {
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM", streamId);
      }
      if (decoded.headers.some(([n]) => n.startsWith(":"))) {
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, "pseudo-header in trailers", streamId);
      }
      existing.onRemoteEnd();
      return;
    }
    if (streamId <= this.#lastStreamId) return; // a closed stream (e.g. one we reset)
    this.#lastStreamId = streamId;
    if (this.#goawaySent || this.#closing) return; // after GOAWAY: ignored (RFC 9113 §6.8)
    if (this.#streams.size >= this.#o.maxConcurrentStreams) {
      this.#out.rstStream(streamId, ErrorCode.REFUSED_STREAM);
      this.#flushWanted = true;
      return;
    }
    const why = decoded.tooLarge ? undefined : malformed(decoded.headers);
    if (why !== undefined) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, `malformed request: ${why}`, streamId);
    }
    const s = new GrpcStream(
      this,
      streamId,
      decoded.headers,
      this.#o.streamWindow,
      this.#peer.initialWindow,
    );
    this.#streams.set(streamId, s);
    if (endStream) s.remoteEnded = true;
    if (decoded.tooLarge) {
      s.end(GrpcCode.RESOURCE_EXHAUSTED, "request header list too large", 431);
      return;
    }
    const method = s.metadata(":method")[0];
    const contentType = s.metadata("content-type")[0] ?? "";
    if (method !== "POST") {
      s.end(GrpcCode.UNIMPLEMENTED, `method ${method} not allowed: gRPC uses POST`, 405);
      return;
    }
    if (!/^application\/grpc(?:$|[+;])/.test(contentType)) {
      s.end(GrpcCode.UNKNOWN, `content-type ${JSON.stringify(contentType)} is not gRPC`, 415);
      return;
    }
    const handler = this.#server.method(s.path);
    if (handler === undefined) {
      s.end(GrpcCode.UNIMPLEMENTED, `unknown method ${s.path}`);
      return;
    }
    try {
      handler(s);
    } catch (err) {
      log.error("Handler of {path} failed: {error}", {
        path: s.path,
        error: err instanceof Error ? err.stack ?? err.message : String(err),
      });
      s.end(GrpcCode.INTERNAL, "internal error");
    }
    if (s.remoteEnded) this.markDirty(s);
  }

  #onData(flags: number, streamId: number, payload: Uint8Array): void {
    const data = this.#recv.data(flags, streamId, payload);
    const length = payload.length;
    const s = this.#streams.get(streamId);
    if (s === undefined) {
      if (streamId > this.#lastStreamId) {
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream");
      }
      return; // closed or ignored stream
    }
    if (s.remoteEnded) {
      throw new H2Error(ErrorCode.STREAM_CLOSED, "DATA after END_STREAM", streamId);
    }
    if (length > s.recvWindow) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window", streamId);
    }
    s.recvWindow -= length;
    if (s.paused) s.held += length;
    else {
      s.credit += length;
      this.#creditStreams.add(s);
    }
    if (!s.finished) s.onData(data, this.#o.maxMessageBytes);
    if ((flags & Flag.END_STREAM) !== 0) s.onRemoteEnd();
  }

  // --- streams --------------------------------------------------------------------------

  /** @internal A stream has queued messages or an end to deliver in this batch. */
  markDirty(s: GrpcStream): void {
    if (this.#batchDepth === 0) this.scheduleDeliver(s);
    else if (!s.dirty) {
      s.dirty = true;
      this.#dirty.push(s);
    }
  }

  /** @internal The stream has window to give back (sent with the next batch's updates). */
  addCredit(s: GrpcStream): void {
    if (s.credit > 0) this.#creditStreams.add(s);
  }

  /** @internal Delivers a stream's queue in a later microtask (as its own batch). */
  scheduleDeliver(s: GrpcStream): void {
    this.#deliverQueue.add(s);
    if (this.#deliverScheduled) return;
    this.#deliverScheduled = true;
    queueMicrotask(() => {
      this.#deliverScheduled = false;
      if (this.#destroyed) return;
      this.#batchDepth++;
      try {
        const streams = [...this.#deliverQueue];
        this.#deliverQueue.clear();
        for (const st of streams) this.#deliver(st);
        this.#deliverDirty();
      } finally {
        this.#batchDepth--;
        this.#creditWindows();
        this.#endBatch();
        this.#wakeReader();
      }
    });
  }

  #deliverDirty(): void {
    const dirty = this.#dirty;
    if (dirty.length === 0) return;
    this.#dirty = [];
    let kept = 0;
    for (const s of dirty) {
      s.dirty = false;
      this.#deliver(s);
      if (s.queueInReadBuffer) kept += s.queueBytes;
    }
    if (kept === 0) return;
    // What is left points into the read buffer, which the next read overwrites: a lot of it
    // (a paused stream) keeps the buffer (the next read gets a new one), a little is copied.
    const detach = kept >= this.#reader.capacity / 4;
    if (detach) this.#reader.detach();
    for (const s of dirty) {
      if (!s.queueInReadBuffer) continue;
      s.queueInReadBuffer = false;
      if (detach) continue;
      for (let i = 0; i < s.queue.length; i++) s.queue[i] = s.queue[i]!.slice();
    }
  }

  #deliver(s: GrpcStream): void {
    const before = s.queueBytes;
    try {
      const h = s.handlers;
      if (h === undefined || s.finished) return;
      while (s.queue.length > 0 && !s.paused && !s.finished) {
        const batch = s.queue;
        s.queue = [];
        s.queueBytes = 0;
        let taken = batch.length;
        try {
          taken = h.messages(batch);
        } catch (err) {
          log.error("Message handler of {path} failed: {error}", {
            path: s.path,
            error: err instanceof Error ? err.stack ?? err.message : String(err),
          });
        }
        if (taken < batch.length && !s.finished) {
          const rest = batch.slice(taken);
          s.queue = rest.concat(s.queue);
          for (const m of rest) s.queueBytes += m.length;
        }
        if (taken === 0) break;
      }
      if (
        s.queue.length === 0 && s.remoteEnded && !s.endDelivered && !s.finished && !s.paused
      ) {
        s.endDelivered = true;
        this.safely(() => h.end());
      }
    } finally {
      this.queued += s.queueBytes - before;
    }
  }

  /** @internal Runs a handler callback; an exception is logged, never thrown into the transport. */
  safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      log.error("Stream handler failed: {error}", {
        error: err instanceof Error ? err.stack ?? err.message : String(err),
      });
    }
  }

  /** @internal A stream has output (messages or its status). */
  queueSend(s: GrpcStream): void {
    this.#sendQueue.add(s);
    this.#flushWanted = true;
    if (this.#batchDepth === 0) this.#scheduleFlush();
  }

  /** Removes a stream; `cancel`: tell its handler (reset by the client, connection lost). */
  #closeStream(s: GrpcStream, cancel: boolean): void {
    if (s.closed) return;
    const notify = cancel && s.trailers === undefined && s.handlers !== undefined;
    s.closed = true;
    this.queued -= s.queueBytes;
    s.queue = [];
    s.queueBytes = 0;
    s.out = [];
    s.outHead = s.outOff = s.outTail = 0;
    s.outBytes = 0;
    this.#streams.delete(s.id);
    this.#sendQueue.delete(s);
    this.#creditStreams.delete(s);
    if (notify) {
      const h = s.handlers!;
      this.safely(() => h.cancel());
    }
    this.#wakeReader();
    this.#maybeFinish();
  }

  #resetStream(streamId: number, code: number, message: string): void {
    log.debug("Resetting stream {id} from {peer}: {code}: {message}", {
      id: streamId,
      peer: this.peer,
      code: errorCodeName(code),
      message,
    });
    this.#out.rstStream(streamId, code);
    this.#flushWanted = true;
    const s = this.#streams.get(streamId);
    if (s !== undefined) this.#closeStream(s, true);
  }

  /** Sends WINDOW_UPDATEs for what handlers took, once enough has accumulated. */
  #creditWindows(): void {
    if (this.#destroyed || this.#closing) return;
    if (this.#recv.update(this.#out, this.#o.connectionWindow / 4)) this.#flushWanted = true;
    for (const s of this.#creditStreams) {
      if (s.closed || s.remoteEnded) {
        this.#creditStreams.delete(s);
      } else if (s.credit >= this.#o.streamWindow / 4) {
        this.#out.windowUpdate(s.id, s.credit);
        s.recvWindow += s.credit;
        s.credit = 0;
        this.#creditStreams.delete(s);
        this.#flushWanted = true;
      }
    }
  }

  // --- output ---------------------------------------------------------------------------

  #endBatch(): void {
    if (this.#batchDepth > 0) return;
    if (this.#flushWanted || this.#sendQueue.size > 0) this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#destroyed) return;
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  /** Writes the frames of every stream with output (within windows) and starts a socket write. */
  #flush(): void {
    this.#flushWanted = false;
    if (this.#destroyed) return;
    for (const s of this.#sendQueue) {
      this.#emit(s);
      if (s.closed || (s.outBytes === 0 && (s.trailers === undefined || s.localEnded))) {
        this.#sendQueue.delete(s);
      }
    }
    if (this.#out.length > 0) this.#startWrite();
    this.#drainStreams();
  }

  #emit(s: GrpcStream): void {
    if (s.closed) return;
    const out = this.#out;
    if (!s.headersSent && s.outBytes > 0) {
      out.headers(s.id, this.#encoder.encode(RESPONSE_HEADERS), false, this.#peer.maxFrame);
      s.headersSent = true;
    }
    while (s.outBytes > 0) {
      const n = Math.min(s.sendWindow, this.#peer.sendWindow, this.#peer.maxFrame, s.outBytes);
      if (n <= 0) break;
      out.header(n, FrameType.DATA, 0, s.id);
      const at = out.reserve(n);
      const bytes = out.bytes;
      let written = 0;
      while (written < n) {
        const chunk = s.out[s.outHead]!;
        const lastChunk = s.outHead === s.out.length - 1;
        const end = lastChunk ? s.outTail : chunk.length;
        const take = Math.min(end - s.outOff, n - written);
        bytes.set(chunk.subarray(s.outOff, s.outOff + take), at + written);
        written += take;
        s.outOff += take;
        if (s.outOff === end && !lastChunk) {
          s.outHead++;
          s.outOff = 0;
        }
      }
      out.advance(n);
      s.sendWindow -= n;
      this.#peer.sendWindow -= n;
      s.outBytes -= n;
      if (s.outBytes === 0) {
        // Everything sent: keep the last chunk for the next messages.
        s.out = [s.out[s.out.length - 1]!];
        s.outHead = 0;
        s.outOff = 0;
        s.outTail = 0;
      } else if (s.outHead > 64) {
        s.out = s.out.slice(s.outHead);
        s.outHead = 0;
      }
    }
    if (s.outBytes === 0 && s.trailers !== undefined && !s.localEnded) {
      const fields: HeaderField[] = s.headersSent ? s.trailers : [
        [":status", s.httpStatus],
        ["content-type", "application/grpc"],
        ...s.trailers,
      ];
      out.headers(s.id, this.#encoder.encode(fields), true, this.#peer.maxFrame);
      s.headersSent = true;
      s.localEnded = true;
      if (!s.remoteEnded) out.rstStream(s.id, ErrorCode.NO_ERROR);
      this.#closeStream(s, false);
    }
  }

  #drainStreams(): void {
    if (this.backlogged) return;
    for (const s of this.#streams.values()) {
      if (s.needDrain && s.outBytes <= STREAM_HIGH_WATER / 2) {
        s.needDrain = false;
        const h = s.handlers;
        if (h !== undefined && !s.finished) this.safely(() => h.drain());
      }
    }
  }

  #startWrite(): void {
    if (this.#writing) return;
    this.#writing = true;
    this.#writeLoop();
  }

  async #writeLoop(): Promise<void> {
    try {
      while (this.#out.length > 0 && !this.#destroyed) {
        const bytes = this.#out.take();
        this.#inWrite = bytes.length;
        let off = 0;
        while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
        this.#inWrite = 0;
        this.#drainStreams();
        this.#wakeReader();
      }
    } catch (err) {
      log.debug("Connection from {peer}: write failed: {error}", {
        peer: this.peer,
        error: String(err),
      });
      this.#destroy();
    } finally {
      this.#writing = false;
      this.#inWrite = 0;
    }
    if (this.#closing && !this.#destroyed && this.#out.length === 0) this.#afterLastWrite();
  }

  // --- closing --------------------------------------------------------------------------

  /**
   * Stops taking new streams: sends GOAWAY with the last stream processed; the connection
   * closes once the open streams are finished. A connection without open streams is closed at
   * once without a GOAWAY: the closed connection tells its peer the same, and a GOAWAY on a
   * session whose streams are all finished can abort a peer on Deno's node:http2 (a grpc-js
   * client, e.g. netbird-ct's own; denoland/deno#36788). Idempotent.
   */
  goaway(): void {
    if (this.#destroyed || this.#closing) return;
    this.#draining = true;
    if (this.#streams.size === 0) {
      this.#close(ErrorCode.NO_ERROR, "", false);
      return;
    }
    if (!this.#goawaySent) {
      this.#goawaySent = true;
      this.#out.goaway(this.#lastStreamId, ErrorCode.NO_ERROR);
      this.#flushWanted = true;
      this.#endBatch();
    }
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#streams.size > 0 || this.#closing || this.#destroyed) return;
    if (this.#draining || this.#goawayReceived) this.#close(ErrorCode.NO_ERROR, "");
  }

  /**
   * Closes the connection: GOAWAY (unless sent already, or the peer sent one and this is no
   * error), then the last frames are written, the write side is shut, and the peer gets a short
   * time to close its side.
   */
  #close(code: number, message: string, goaway = true): void {
    if (this.#closing || this.#destroyed) return;
    const quiet = code === ErrorCode.NO_ERROR &&
      (!goaway || this.#goawaySent || this.#goawayReceived);
    if (!quiet) {
      this.#out.goaway(this.#lastStreamId, code, message);
    }
    this.#goawaySent = true;
    this.#closing = true;
    for (const s of [...this.#streams.values()]) this.#closeStream(s, true);
    this.#lingerTimer = setTimeout(() => this.#destroy(), LINGER_MS);
    this.#wakeReader();
    // Not deferred: the GOAWAY must go out even if nothing else is flushed.
    if (this.#out.length > 0) this.#startWrite();
    else if (!this.#writing) this.#afterLastWrite();
  }

  #afterLastWrite(): void {
    const closeWrite = this.#conn.closeWrite;
    if (closeWrite === undefined) {
      this.#destroy();
      return;
    }
    closeWrite.call(this.#conn).catch(() => this.#destroy());
  }

  /** Closes the connection at once; open streams are cancelled. Idempotent. */
  destroy(): void {
    this.#destroy();
  }

  #destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    clearTimeout(this.#lingerTimer);
    for (const s of [...this.#streams.values()]) this.#closeStream(s, true);
    try {
      this.#conn.close();
    } catch { /* closed already */ }
    this.#readWake?.();
    this.#server.forget(this);
    this.#resolveClosed();
  }

  /** @internal Sends a keepalive PING. */
  ping(): void {
    if (this.#destroyed || this.#closing) return;
    this.pingSentAt = performance.now();
    this.#out.ping(false, new Uint8Array(8));
    this.#flushWanted = true;
    this.#endBatch();
  }
}

/** What {@linkcode GrpcServer.serve} listens on. */
export type GrpcListener = Deno.Listener<Deno.Conn, Deno.NetAddr> | Deno.TlsListener;

/**
 * A gRPC server over {@linkcode H2Connection}s: accepts connections from listeners, routes
 * streams to method handlers by path, keeps connections alive, and shuts down gracefully.
 *
 * @example Serving one method on loopback
 * ```ts
 * import { GrpcServer } from "./server.ts";
 * const server = new GrpcServer({
 *   methods: {
 *     "/test.Echo/Echo": (stream) => stream.listen({
 *       messages: (batch) => { for (const m of batch) stream.write(m); return batch.length; },
 *       end: () => stream.end(0),
 *       cancel: () => {},
 *       drain: () => {},
 *     }),
 *   },
 * });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * server.serve(listener);
 * await server.close();
 * ```
 */
export class GrpcServer {
  #methods: Map<string, GrpcMethodHandler>;
  #o: Required<Omit<GrpcServerOptions, "methods">>;
  #listeners = new Set<GrpcListener>();
  #accepting = new Set<Promise<void>>();
  #connections = new Set<H2Connection>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #shuttingDown = false;
  #stats = { connections: 0, protocolErrors: 0, resetsReceived: 0, goawaysReceived: 0 };

  /**
   * Creates the server; nothing listens until {@linkcode GrpcServer.serve}.
   *
   * @param options Methods and limits.
   */
  constructor(options: GrpcServerOptions) {
    this.#methods = new Map(Object.entries(options.methods));
    this.#o = {
      maxMessageBytes: options.maxMessageBytes ?? 4 * 1024 * 1024,
      maxConcurrentStreams: options.maxConcurrentStreams ?? 100,
      streamWindow: Math.min(options.streamWindow ?? 128 * 1024, MAX_WINDOW_SIZE),
      connectionWindow: Math.min(options.connectionWindow ?? 1024 * 1024, MAX_WINDOW_SIZE),
      maxHeaderListSize: options.maxHeaderListSize ?? 16 * 1024,
      keepaliveMs: options.keepaliveMs ?? 60_000,
      keepaliveTimeoutMs: options.keepaliveTimeoutMs ?? 20_000,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    };
  }

  /** The counters. */
  stats(): GrpcServerStats {
    return { ...this.#stats, activeConnections: this.#connections.size };
  }

  /** @internal The handler of a path. */
  method(path: string): GrpcMethodHandler | undefined {
    return this.#methods.get(path);
  }

  /** @internal */ countProtocolError(): void {
    this.#stats.protocolErrors++;
  }
  /** @internal */ countReset(): void {
    this.#stats.resetsReceived++;
  }
  /** @internal */ countGoaway(): void {
    this.#stats.goawaysReceived++;
  }
  /** @internal */ forget(c: H2Connection): void {
    this.#connections.delete(c);
    if (this.#connections.size === 0) this.#stopTimer();
  }

  /**
   * Accepts connections from `listener` until it is closed (by {@linkcode GrpcServer.shutdown}
   * or {@linkcode GrpcServer.close}). A TLS listener must offer ALPN `h2`.
   *
   * @param listener A TCP or TLS listener.
   * @param tls Whether `listener` is a TLS listener (each connection's handshake must then
   * select ALPN `h2`, or none).
   */
  serve(listener: GrpcListener, tls = false): void {
    this.#listeners.add(listener);
    const loop = this.#acceptLoop(listener, tls);
    this.#accepting.add(loop);
    loop.finally(() => this.#accepting.delete(loop));
  }

  async #acceptLoop(listener: GrpcListener, tls: boolean): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (
          err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted ||
          this.#shuttingDown || !this.#listeners.has(listener)
        ) return;
        log.warning("Cannot accept a connection: {error}", { error: String(err) });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (this.#shuttingDown) {
        try {
          conn.close();
        } catch { /* gone */ }
        continue;
      }
      this.handleConnection(conn, tls);
    }
  }

  /**
   * Serves one accepted connection (also for tests with other transports).
   *
   * @param conn The connection.
   * @param tls Whether it is a `Deno.TlsConn` whose handshake must pick ALPN `h2` first.
   * @returns The connection.
   */
  handleConnection(conn: Duplex, tls = false): H2Connection {
    const addr = (conn as Partial<Deno.Conn>).remoteAddr as Deno.NetAddr | undefined;
    const peer = addr === undefined
      ? "unknown"
      : addr.hostname.includes(":")
      ? `[${addr.hostname}]:${addr.port}`
      : `${addr.hostname}:${addr.port}`;
    if (!tls) {
      try {
        (conn as Partial<Deno.TcpConn>).setNoDelay?.(true);
      } catch { /* not TCP */ }
    }
    const c = new H2Connection(conn, peer, this, this.#o);
    this.#stats.connections++;
    this.#connections.add(c);
    this.#startTimer();
    const handshake = tls ? () => this.#handshake(conn as Deno.TlsConn, peer) : undefined;
    c.run(handshake);
    return c;
  }

  async #handshake(conn: Deno.TlsConn, peer: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const info = await Promise.race([
        conn.handshake(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("TLS handshake timed out")),
            this.#o.handshakeTimeoutMs,
          );
        }),
      ]);
      if (info.alpnProtocol !== null && info.alpnProtocol !== "h2") {
        throw new Error(`ALPN protocol ${info.alpnProtocol}, not h2`);
      }
    } catch (err) {
      log.debug("TLS handshake with {peer} failed: {error}", { peer, error: String(err) });
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  #startTimer(): void {
    if (this.#timer !== undefined || this.#o.keepaliveMs <= 0) return;
    const every = Math.max(100, Math.min(this.#o.keepaliveMs, this.#o.keepaliveTimeoutMs) / 4);
    const timer = setInterval(() => this.#keepalive(), every);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #stopTimer(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #keepalive(): void {
    const now = performance.now();
    for (const c of this.#connections) {
      if (c.pingSentAt !== undefined) {
        if (now - c.pingSentAt > this.#o.keepaliveTimeoutMs) {
          log.info("Connection from {peer}: no answer to a keepalive PING, closing it", {
            peer: c.peer,
          });
          c.destroy();
        }
      } else if (now - c.lastActivity >= this.#o.keepaliveMs) {
        c.ping();
      }
    }
  }

  /**
   * Stops accepting connections and sends GOAWAY on every connection: open streams go on, and
   * each connection closes once its streams are finished. Idempotent.
   */
  shutdown(): void {
    this.#shuttingDown = true;
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch { /* closed already */ }
    }
    this.#listeners.clear();
    for (const c of this.#connections) c.goaway();
  }

  /**
   * Shuts down (see {@linkcode GrpcServer.shutdown}) and waits until every connection is
   * closed; connections still open after `timeoutMs` are closed at once.
   *
   * @param timeoutMs How long to wait for connections to finish (default 5 s).
   */
  async close(timeoutMs = 5000): Promise<void> {
    this.shutdown();
    await Promise.allSettled([...this.#accepting]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const all = Promise.all([...this.#connections].map((c) => c.closed));
    const forced = await Promise.race([
      all.then(() => false),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(true), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (forced) {
      for (const c of [...this.#connections]) c.destroy();
      await all;
    }
    this.#stopTimer();
  }
}
