/**
 * The Flow API client's own HTTP/2 transport ({@linkcode h2Dialer}): gRPC `Events` streams over
 * `Deno.connect` (h2c with prior knowledge, `http://`) or `Deno.connectTls` (ALPN `h2`,
 * `https://`), built on the same framing and HPACK code as the receiver. It replaces
 * `@grpc/grpc-js` on Deno's `node:http2`, which can abort the process when a GOAWAY arrives on a
 * connection whose streams have finished (denoland/deno#36788).
 *
 * What it does, per connection (one per {@linkcode FlowConnection}, opened lazily by the first
 * stream):
 *
 * - connection preface and SETTINGS (push disabled, a larger receive window), then one HEADERS
 *   frame per stream (`POST /flow.FlowService/Events`, `content-type: application/grpc`,
 *   `te: trailers`, `authorization: Bearer <token>`), then DATA frames carrying gRPC messages
 *   (5-byte prefix), always within the peer's stream and connection windows and frame size;
 * - acks are unframed as they arrive (split over or merged in DATA frames alike), and the
 *   receive windows are credited back with WINDOW_UPDATE as they are read;
 * - PINGs are answered; a keepalive PING goes out after 30 s without input, and the connection
 *   is given up when it is not answered within 10 s (as NetBird's `grpc.keepalive` settings);
 * - the stream ends (`onClose`) on trailers (`grpc-status`, `grpc-message`), a Trailers-Only
 *   response (e.g. UNAUTHENTICATED), RST_STREAM, a GOAWAY (graceful or not: the client
 *   reconnects on a new connection), a protocol error of the peer (answered with GOAWAY or
 *   RST_STREAM and the matching code), a keepalive timeout, and a lost or refused connection.
 *
 * Nothing the peer sends can throw out of the transport: every failure becomes the stream's
 * `onClose`.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  EVENTS_METHOD,
  type FlowConnection,
  type FlowStream,
  type FlowStreamHandlers,
  flowTarget,
} from "../client.ts";
import { decodeFlowEventAck, type FlowEventAck } from "../proto.ts";
import {
  CONNECTION_PREFACE,
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW_SIZE,
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
  goawayLastStream,
  HeaderBlocks,
  PeerSettings,
  ReceiveWindow,
  rstStreamCode,
  windowIncrement,
} from "./_conn.ts";

const log = getLogger(["netbird-ct", "flow", "h2"]);

/** The `user-agent` of {@linkcode h2Dialer}'s requests. */
export const H2_USER_AGENT = "grpc-netbird-ct-h2/0.1";

/** Keepalive PING after this long without input, ms (NetBird: `keepalive.Time`). */
export const KEEPALIVE_MS = 30_000;
/** A keepalive PING not answered within this time ends the connection, ms. */
export const KEEPALIVE_TIMEOUT_MS = 10_000;

/** A stream's unsent bytes beyond which `write` returns `false`. */
const STREAM_HIGH_WATER = 64 * 1024;
/** A connection's unsent bytes beyond which `write` returns `false`. */
const CONNECTION_HIGH_WATER = 1024 * 1024;
/** Largest decoded response header list. */
const MAX_HEADER_LIST_BYTES = 64 * 1024;
/** How long a closing connection may take to write its last frames, ms. */
const LINGER_MS = 1000;

/** Options of {@linkcode h2Dialer}. */
export interface H2DialerOptions {
  /** `https://HOST[:PORT]` (TLS, port 443 by default) or `http://HOST[:PORT]` (h2c, port 80). */
  url: string;
  /** The token, `<signature>.<payload>`: sent as `authorization: Bearer <token>`. */
  token: string;
  /**
   * PEM root certificates for TLS, trusted in addition to the system's (e.g. a private CA,
   * tests).
   */
  rootCerts?: Uint8Array;
  /** Keepalive PING after this long without input, ms (default {@linkcode KEEPALIVE_MS}; 0 = never). */
  keepaliveMs?: number;
  /** Unanswered keepalive PING timeout, ms (default {@linkcode KEEPALIVE_TIMEOUT_MS}). */
  keepaliveTimeoutMs?: number;
  /** Receive window of each stream, bytes (default 256 KiB, at least 65,535). */
  streamWindow?: number;
  /** Receive window of each connection, bytes (default 1 MiB, at least 65,535). */
  connectionWindow?: number;
  /** Largest accepted response message, bytes (default 4 MiB, gRPC's default). */
  maxMessageBytes?: number;
}

/**
 * The Flow API transport on netbird-ct's own HTTP/2 client: one TCP (or TLS) connection per
 * {@linkcode FlowConnection}, opened when its first stream opens. The same contract as
 * `grpcDialer` (see `../client.ts`), without `node:http2`.
 *
 * @param options URL, token, optional root certificates and tuning.
 * @returns The dialer.
 * @throws {TypeError} When the URL is not `http://` or `https://` (or `https://` with an IP
 *   address: the TLS server name must be a host name), or the token is not printable ASCII.
 *
 * @example Usage
 * ```ts
 * import { h2Dialer } from "./client.ts";
 * const dial = h2Dialer({ url: "http://127.0.0.1:9", token: "signature.payload" });
 * const connection = dial({ intervalMs: 60_000 }); // lazy: nothing connects yet
 * connection.close();
 * ```
 */
export function h2Dialer(options: H2DialerOptions): H2FlowDialer {
  const { target, tls } = flowTarget(options.url);
  if (!/^[\x21-\x7e]*$/.test(options.token)) {
    throw new TypeError("Cannot use the flow token: it must be printable ASCII without spaces");
  }
  const u = new URL(options.url);
  const settings: ConnectionSettings = {
    target,
    tls,
    hostname: u.hostname.replace(/^\[|\]$/g, ""),
    port: Number(u.port || (tls ? 443 : 80)),
    bearer: `Bearer ${options.token}`,
    caCerts: options.rootCerts === undefined
      ? undefined
      : [new TextDecoder().decode(options.rootCerts)],
    keepaliveMs: options.keepaliveMs ?? KEEPALIVE_MS,
    keepaliveTimeoutMs: options.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS,
    streamWindow: clampWindow(options.streamWindow ?? 256 * 1024),
    connectionWindow: clampWindow(options.connectionWindow ?? 1024 * 1024),
    maxMessageBytes: options.maxMessageBytes ?? 4 * 1024 * 1024,
  };
  // The idle timeout of grpcDialer (twice the interval) has no counterpart: a connection lives
  // exactly as long as its stream (FlowClient closes it when the stream ends).
  return () => new H2ClientConnection(settings);
}

function clampWindow(n: number): number {
  return Math.max(DEFAULT_WINDOW_SIZE, Math.min(Math.floor(n), MAX_WINDOW_SIZE));
}

/** What every connection of one dialer shares. */
interface ConnectionSettings {
  target: string;
  tls: boolean;
  hostname: string;
  port: number;
  bearer: string;
  caCerts: string[] | undefined;
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  streamWindow: number;
  connectionWindow: number;
  maxMessageBytes: number;
}

/**
 * Decodes a `grpc-message` value (percent-encoded UTF-8).
 *
 * @param value The header value (one character per byte).
 * @returns The text.
 */
function percentDecode(value: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x25 && i + 2 < value.length && /^[0-9a-fA-F]{2}$/.test(value.slice(i + 1, i + 3))) {
      bytes.push(parseInt(value.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(c & 0xff);
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** One `Events` stream of an {@linkcode H2ClientConnection}. */
class H2ClientStream implements FlowStream {
  readonly id: number;
  readonly h: FlowStreamHandlers;
  /** No handler is called any more (`onClose` queued, or cancelled). */
  done = false;
  /** `cancel()` was called. */
  cancelled = false;
  headersSent = false;
  /** Response headers received. */
  responded = false;
  remoteEnded = false;
  /** Removed from the connection. */
  closed = false;
  sendWindow: number;
  recvWindow: number;
  credit = 0;
  /** Framed messages not yet in DATA frames; `outOff` bytes of the first are sent. */
  out: Uint8Array[] = [];
  outOff = 0;
  outBytes = 0;
  needDrain = false;
  #conn: H2ClientConnection;
  #msgHeader = new Uint8Array(5);
  #msgHeaderFill = 0;
  #msg: Uint8Array | undefined;
  #msgFill = 0;

  constructor(
    conn: H2ClientConnection,
    id: number,
    h: FlowStreamHandlers,
    sendWindow: number,
    recvWindow: number,
  ) {
    this.#conn = conn;
    this.id = id;
    this.h = h;
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }

  write(event: Uint8Array): boolean {
    if (this.done || this.closed) return false;
    const n = event.length;
    const framed = new Uint8Array(5 + n);
    framed[1] = n >>> 24;
    framed[2] = (n >>> 16) & 0xff;
    framed[3] = (n >>> 8) & 0xff;
    framed[4] = n & 0xff;
    framed.set(event, 5);
    this.out.push(framed);
    this.outBytes += framed.length;
    this.#conn.queueSend(this);
    if (this.outBytes > STREAM_HIGH_WATER || this.#conn.backlogged) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.done = true;
    this.#conn.cancelStream(this);
  }

  /** Whether a message is partly received. */
  get inMessage(): boolean {
    return this.#msg !== undefined || this.#msgHeaderFill > 0;
  }

  /**
   * The messages of one DATA frame's payload (padding removed).
   *
   * @returns Complete messages (copies), or an error text.
   */
  onData(data: Uint8Array, maxMessage: number): Uint8Array[] | string {
    const messages: Uint8Array[] = [];
    let p = 0;
    while (p < data.length) {
      if (this.#msg === undefined) {
        const n = Math.min(5 - this.#msgHeaderFill, data.length - p);
        this.#msgHeader.set(data.subarray(p, p + n), this.#msgHeaderFill);
        this.#msgHeaderFill += n;
        p += n;
        if (this.#msgHeaderFill < 5) break;
        this.#msgHeaderFill = 0;
        const h = this.#msgHeader;
        const size = (h[1]! << 24 | h[2]! << 16 | h[3]! << 8 | h[4]!) >>> 0;
        if (h[0] !== 0) {
          return `compressed or flagged message (flags 0x${h[0]!.toString(16)}) not supported`;
        }
        if (size > maxMessage) {
          return `received message larger than max (${size} vs. ${maxMessage})`;
        }
        this.#msg = new Uint8Array(size);
        this.#msgFill = 0;
      }
      const take = Math.min(this.#msg.length - this.#msgFill, data.length - p);
      this.#msg.set(data.subarray(p, p + take), this.#msgFill);
      this.#msgFill += take;
      p += take;
      if (this.#msgFill === this.#msg.length) {
        messages.push(this.#msg);
        this.#msg = undefined;
      }
    }
    return messages;
  }
}

/** A {@linkcode FlowConnection} of {@linkcode h2Dialer}. */
export interface H2FlowConnection extends FlowConnection {
  /** Resolves once the socket is closed (or was never opened) after `close()` or a failure. */
  readonly closed: Promise<void>;
}

/** {@linkcode h2Dialer}'s dialer: a `FlowDialer` whose connections tell when they closed. */
export type H2FlowDialer = (options: { intervalMs: number }) => H2FlowConnection;

/** One HTTP/2 connection to a Flow API receiver; connects when the first stream opens. */
class H2ClientConnection implements H2FlowConnection {
  /** Resolves once the socket is closed (or was never opened) after `close()` or a failure. */
  readonly closed: Promise<void>;
  #s: ConnectionSettings;
  #conn: Deno.Conn | undefined;
  #abort = new AbortController();
  #connecting = false;
  /** Failed or closed: no new streams, no more handler calls. */
  #finished = false;
  #finishError: Error | undefined;
  #socketClosed = false;
  /** The connection preface is queued: frames may follow. */
  #prefaceSent = false;
  #resolveClosed!: () => void;
  #reader = new FrameReader(DEFAULT_MAX_FRAME_SIZE);
  #decoder = new HpackDecoder(4096);
  #encoder = new HpackEncoder();
  #out = new OutBuffer();
  #streams = new Map<number, H2ClientStream>();
  #nextStreamId = 1;
  #settingsReceived = false;
  #peer = new PeerSettings(this.#encoder, true);
  #recv = new ReceiveWindow();
  #hb = new HeaderBlocks();
  #sendQueue = new Set<H2ClientStream>();
  #flushScheduled = false;
  #writing = false;
  #inWrite = 0;
  #events: (() => void)[] = [];
  #eventsScheduled = false;
  #keepaliveTimer: ReturnType<typeof setInterval> | undefined;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  #lastRead = 0;
  #pingSentAt: number | undefined;
  #pingSeq = 0;

  constructor(settings: ConnectionSettings) {
    this.#s = settings;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** @internal Whether unsent output is above the high-water mark. */
  get backlogged(): boolean {
    return this.#out.length + this.#inWrite > CONNECTION_HIGH_WATER;
  }

  /**
   * Opens an `Events` stream; the first one connects.
   *
   * @param handlers Where the stream reports.
   * @returns The stream.
   */
  openStream(handlers: FlowStreamHandlers): FlowStream {
    const id = this.#nextStreamId;
    this.#nextStreamId += 2;
    const s = new H2ClientStream(
      this,
      id,
      handlers,
      this.#peer.initialWindow,
      this.#s.streamWindow,
    );
    if (this.#finished || id > 0x7fffffff) {
      s.closed = true;
      this.#endStream(
        s,
        this.#finishError ?? new Error(`connection to ${this.#s.target} is closed`),
      );
      return s;
    }
    this.#streams.set(id, s);
    this.#sendQueue.add(s);
    if (!this.#connecting) {
      this.#connecting = true;
      this.#connect();
    } else this.#scheduleFlush();
    return s;
  }

  /** Closes the connection: open streams are reset (CANCEL) without calling their handlers. */
  close(): void {
    if (this.#finished) return;
    for (const s of this.#streams.values()) {
      s.done = true;
      s.cancelled = true;
    }
    this.#finish(undefined, ErrorCode.NO_ERROR);
  }

  // --- connecting -----------------------------------------------------------------------

  async #connect(): Promise<void> {
    const s = this.#s;
    let conn: Deno.Conn;
    try {
      if (s.tls) {
        const tlsConn = await Deno.connectTls({
          hostname: s.hostname,
          port: s.port,
          alpnProtocols: ["h2"],
          ...(s.caCerts === undefined ? {} : { caCerts: s.caCerts }),
        });
        conn = tlsConn;
        if (this.#finished) return this.#closeLate(conn);
        this.#conn = conn;
        const info = await tlsConn.handshake();
        if (info.alpnProtocol !== null && info.alpnProtocol !== "h2") {
          throw new Error(`the receiver chose ALPN protocol ${info.alpnProtocol}, not h2`);
        }
      } else {
        conn = await Deno.connect({
          hostname: s.hostname,
          port: s.port,
          signal: this.#abort.signal,
        });
        if (this.#finished) return this.#closeLate(conn);
        this.#conn = conn;
        try {
          (conn as Deno.TcpConn).setNoDelay(true);
        } catch { /* not TCP */ }
      }
    } catch (err) {
      if (!this.#finished) {
        this.#finish(new Error(`cannot connect to ${s.target}: ${errorText(err)}`));
      }
      if (this.#conn === undefined) this.#socketDone();
      else this.#closeSocket();
      return;
    }
    if (this.#finished) return;
    this.#lastRead = performance.now();
    const out = this.#out;
    out.append(CONNECTION_PREFACE);
    this.#prefaceSent = true;
    out.settings([
      [Setting.ENABLE_PUSH, 0],
      [Setting.INITIAL_WINDOW_SIZE, s.streamWindow],
      [Setting.MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_BYTES],
    ]);
    this.#recv.open(out, s.connectionWindow);
    if (s.keepaliveMs > 0) {
      const every = Math.max(50, Math.min(s.keepaliveMs, s.keepaliveTimeoutMs) / 4);
      this.#keepaliveTimer = setInterval(() => this.#keepalive(), every);
      Deno.unrefTimer(this.#keepaliveTimer);
    }
    this.#flush();
    this.#readLoop(conn);
  }

  #closeLate(conn: Deno.Conn): void {
    try {
      conn.close();
    } catch { /* closed */ }
    this.#socketDone();
  }

  async #readLoop(conn: Deno.Conn): Promise<void> {
    const reader = this.#reader;
    try {
      while (!this.#finished) {
        const n = await conn.read(reader.space());
        if (n === null) {
          if (!this.#finished) this.#finish(new Error("connection closed by the receiver"));
          return;
        }
        this.#lastRead = performance.now();
        this.#pingSentAt = undefined;
        if (this.#finished) return;
        reader.commit(n);
        this.#onBytes();
      }
    } catch (err) {
      if (!this.#finished) this.#finish(new Error(`connection lost: ${errorText(err)}`));
    }
  }

  #keepalive(): void {
    if (this.#finished || this.#conn === undefined) return;
    const now = performance.now();
    if (this.#pingSentAt !== undefined) {
      if (now - this.#pingSentAt > this.#s.keepaliveTimeoutMs) {
        this.#finish(
          new Error(`keepalive PING not answered within ${this.#s.keepaliveTimeoutMs} ms`),
        );
      }
    } else if (now - this.#lastRead >= this.#s.keepaliveMs) {
      this.#pingSentAt = now;
      const opaque = new Uint8Array(8);
      new DataView(opaque.buffer).setUint32(4, ++this.#pingSeq);
      this.#out.ping(false, opaque);
      this.#scheduleFlush();
    }
  }

  // --- input ----------------------------------------------------------------------------

  /** Processes the frames of one read. */
  #onBytes(): void {
    try {
      const r = this.#reader;
      while (!this.#finished && r.next()) {
        try {
          this.#onFrame(r.type, r.flags, r.streamId, r.payload);
        } catch (err) {
          if (!(err instanceof H2Error) || err.streamId === 0) throw err;
          this.#resetStream(err.streamId, err.code, err.message);
        }
      }
      this.#creditWindows();
    } catch (err) {
      this.#onConnectionError(err);
    }
    this.#scheduleFlush();
  }

  #onConnectionError(err: unknown): void {
    const e = connectionError(
      err,
      (err) =>
        log.error("Flow API connection to {target}: internal error: {error}", {
          target: this.#s.target,
          error: err instanceof Error ? err.stack ?? err.message : String(err),
        }),
    );
    this.#finish(
      new Error(`HTTP/2 protocol error from the receiver: ${errorCodeName(e.code)}: ${e.message}`),
      e.code,
      e.message,
    );
  }

  #onFrame(type: number, flags: number, streamId: number, payload: Uint8Array): void {
    if (this.#hb.streamId !== 0 && type !== FrameType.CONTINUATION) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "expected CONTINUATION");
    }
    if (!this.#settingsReceived && (type !== FrameType.SETTINGS || (flags & Flag.ACK) !== 0)) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "the server preface must start with SETTINGS");
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
        throw new H2Error(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE with push disabled");
      case FrameType.PING:
        if (checkPing(flags, streamId, payload)) this.#out.ping(true, payload);
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
  }

  #onWindowUpdate(streamId: number, payload: Uint8Array): void {
    const inc = windowIncrement(payload);
    if (streamId === 0) {
      this.#peer.creditConnection(inc, this.#streams, this.#sendQueue);
      return;
    }
    const s = this.#stream(streamId, "WINDOW_UPDATE");
    if (s === undefined) return;
    if (creditStream(s, streamId, inc)) this.#sendQueue.add(s);
  }

  /** An open stream, `undefined` for a closed one; throws for a stream never opened. */
  #stream(streamId: number, what: string): H2ClientStream | undefined {
    if (streamId % 2 === 0 || streamId >= this.#nextStreamId) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, `${what} on idle stream ${streamId}`);
    }
    return this.#streams.get(streamId);
  }

  #onRstStream(streamId: number, payload: Uint8Array): void {
    const code = rstStreamCode(streamId, payload);
    const s = this.#stream(streamId, "RST_STREAM");
    if (s === undefined) return;
    s.remoteEnded = true;
    this.#closeStream(
      s,
      new Error(`stream reset by the receiver (RST_STREAM ${errorCodeName(code)})`),
      false,
    );
  }

  #onGoaway(streamId: number, payload: Uint8Array): void {
    const code = goawayCode(streamId, payload);
    const last = goawayLastStream(payload);
    const debug = goawayDebug(payload);
    log.debug("Flow API: GOAWAY from {target} (last stream {last}, {code}: {debug})", {
      target: this.#s.target,
      last,
      code: errorCodeName(code),
      debug,
    });
    // Graceful or not, the receiver takes no new streams here: every stream ends now (a
    // long-lived stream would otherwise hold the receiver's shutdown up), and FlowClient
    // reconnects on a new connection and resends what is un-acked. The connection closes
    // without a GOAWAY of ours.
    const why = code === ErrorCode.NO_ERROR
      ? `the receiver is going away (GOAWAY${debug === "" ? "" : `: ${debug}`})`
      : `the receiver ended the connection (GOAWAY ${errorCodeName(code)}${
        debug === "" ? "" : `: ${debug}`
      })`;
    this.#finish(new Error(why), undefined);
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
    // Always decoded, also for a closed stream: the HPACK context must stay in step.
    const { headers } = this.#decoder.decode(block, MAX_HEADER_LIST_BYTES);
    const s = this.#stream(streamId, "HEADERS");
    if (s === undefined) return;
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (s.remoteEnded) {
      throw new H2Error(ErrorCode.STREAM_CLOSED, "HEADERS after END_STREAM", streamId);
    }
    const get = (name: string): string | undefined => headers.find(([n]) => n === name)?.[1];
    if (!s.responded) {
      const status = get(":status");
      if (status !== undefined && /^1\d\d$/.test(status) && !endStream) return; // informational
      s.responded = true;
      if (endStream) {
        // Trailers-Only (e.g. UNAUTHENTICATED), or an HTTP error without gRPC status.
        s.remoteEnded = true;
        this.#closeStream(s, this.#statusError(headers, status), true);
        return;
      }
      const contentType = get("content-type") ?? "";
      if (status !== "200" || !/^application\/grpc(?:$|[+;])/.test(contentType)) {
        this.#resetStream(
          s.id,
          ErrorCode.CANCEL,
          `unexpected response: HTTP status ${status ?? "(none)"}, content-type ${
            JSON.stringify(contentType)
          }`,
        );
        return;
      }
      this.#notify(s, () => s.h.onReady());
      return;
    }
    if (!endStream) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM", streamId);
    }
    s.remoteEnded = true;
    if (s.inMessage) {
      this.#closeStream(s, new Error("the receiver ended the stream inside a message"), true);
      return;
    }
    this.#closeStream(s, this.#statusError(headers, "200"), true);
  }

  #statusError(headers: HeaderField[], httpStatus: string | undefined): Error {
    const get = (name: string): string | undefined => headers.find(([n]) => n === name)?.[1];
    const code = get("grpc-status");
    const message = percentDecode(get("grpc-message") ?? "");
    if (code !== undefined && /^\d+$/.test(code)) {
      return new Error(`stream closed by the receiver: ${code} ${message}`);
    }
    if (httpStatus !== "200") {
      return new Error(`stream closed by the receiver: HTTP status ${httpStatus ?? "(none)"}`);
    }
    return new Error("stream closed by the receiver without a grpc-status");
  }

  #onData(flags: number, streamId: number, payload: Uint8Array): void {
    // Connection window: credited back at once (acks are consumed as they are read).
    const data = this.#recv.data(flags, streamId, payload);
    const length = payload.length;
    const s = this.#stream(streamId, "DATA");
    if (s === undefined) return; // closed (e.g. reset by us)
    if (s.remoteEnded) {
      throw new H2Error(ErrorCode.STREAM_CLOSED, "DATA after END_STREAM", streamId);
    }
    if (length > s.recvWindow) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window", streamId);
    }
    if (!s.responded) {
      throw new H2Error(ErrorCode.PROTOCOL_ERROR, "DATA before response headers", streamId);
    }
    s.recvWindow -= length;
    s.credit += length;
    const messages = s.onData(data, this.#s.maxMessageBytes);
    if (typeof messages === "string") {
      this.#resetStream(s.id, ErrorCode.CANCEL, messages);
      return;
    }
    for (const m of messages) {
      let ack: FlowEventAck;
      try {
        ack = decodeFlowEventAck(m);
      } catch (err) {
        this.#resetStream(s.id, ErrorCode.CANCEL, `cannot decode an ack: ${errorText(err)}`);
        return;
      }
      this.#notify(s, () => s.h.onAck(ack));
    }
    if ((flags & Flag.END_STREAM) !== 0) {
      s.remoteEnded = true;
      this.#closeStream(s, new Error("stream closed by the receiver without trailers"), true);
    }
  }

  /** Sends WINDOW_UPDATEs for what was read, once a quarter of a window has accumulated. */
  #creditWindows(): void {
    if (this.#finished) return;
    this.#recv.update(this.#out, this.#s.connectionWindow / 4);
    for (const s of this.#streams.values()) {
      if (s.credit >= this.#s.streamWindow / 4 && !s.remoteEnded) {
        this.#out.windowUpdate(s.id, s.credit);
        s.recvWindow += s.credit;
        s.credit = 0;
      }
    }
  }

  // --- streams --------------------------------------------------------------------------

  /** Queues a handler call (run after the current batch of frames, in order). */
  #notify(s: H2ClientStream, fn: () => void): void {
    if (s.done) return;
    this.#events.push(() => {
      if (!s.cancelled) fn();
    });
    this.#scheduleEvents();
  }

  #scheduleEvents(): void {
    if (this.#eventsScheduled) return;
    this.#eventsScheduled = true;
    queueMicrotask(() => {
      this.#eventsScheduled = false;
      const events = this.#events;
      this.#events = [];
      for (const e of events) {
        try {
          e();
        } catch (err) {
          log.error("Flow API: stream handler failed: {error}", {
            error: err instanceof Error ? err.stack ?? err.message : String(err),
          });
        }
      }
    });
  }

  /** Reports the end of a stream (once, unless cancelled). */
  #endStream(s: H2ClientStream, error: Error): void {
    if (s.done) return;
    this.#notify(s, () => s.h.onClose(error));
    s.done = true;
  }

  /** Removes a stream and drops its output; `false` when it was removed already. */
  #remove(s: H2ClientStream): boolean {
    if (s.closed) return false;
    s.closed = true;
    this.#streams.delete(s.id);
    this.#sendQueue.delete(s);
    s.out = [];
    s.outBytes = 0;
    return true;
  }

  /**
   * Removes a stream and reports `error`; `rst`: reset it with NO_ERROR when our side is still
   * open (the receiver ended it; RFC 9113 §8.1).
   */
  #closeStream(s: H2ClientStream, error: Error, rst: boolean): void {
    if (!this.#remove(s)) return;
    if (rst && !this.#finished) this.#out.rstStream(s.id, ErrorCode.NO_ERROR);
    this.#endStream(s, error);
  }

  #resetStream(streamId: number, code: number, message: string): void {
    log.debug("Flow API: resetting stream {id} to {target}: {code}: {message}", {
      id: streamId,
      target: this.#s.target,
      code: errorCodeName(code),
      message,
    });
    if (!this.#finished) this.#out.rstStream(streamId, code);
    const s = this.#streams.get(streamId);
    if (s !== undefined) {
      this.#closeStream(s, new Error(`stream error: ${errorCodeName(code)}: ${message}`), false);
    }
    this.#scheduleFlush();
  }

  /** @internal `FlowStream.cancel`. */
  cancelStream(s: H2ClientStream): void {
    if (!this.#remove(s)) return;
    if (this.#finished || this.#conn === undefined || !s.headersSent) return;
    this.#out.rstStream(s.id, ErrorCode.CANCEL);
    this.#scheduleFlush();
  }

  // --- output ---------------------------------------------------------------------------

  /** @internal A stream has output. */
  queueSend(s: H2ClientStream): void {
    this.#sendQueue.add(s);
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#finished) return;
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  /** Frames what the windows allow and starts a socket write. */
  #flush(): void {
    if (this.#finished || this.#conn === undefined) return;
    try {
      for (const s of this.#sendQueue) {
        this.#emit(s);
        if (s.closed || s.outBytes === 0) this.#sendQueue.delete(s);
      }
    } catch (err) {
      this.#onConnectionError(err); // a bug: never thrown out of a microtask
      return;
    }
    if (this.#out.length > 0) this.#startWrite();
    this.#drainStreams();
  }

  #emit(s: H2ClientStream): void {
    if (s.closed) return;
    const out = this.#out;
    if (!s.headersSent) {
      const fields: HeaderField[] = [
        [":method", "POST"],
        [":scheme", this.#s.tls ? "https" : "http"],
        [":path", EVENTS_METHOD],
        [":authority", this.#s.target],
        ["content-type", "application/grpc"],
        ["te", "trailers"],
        ["user-agent", H2_USER_AGENT],
        ["grpc-accept-encoding", "identity"],
        ["authorization", this.#s.bearer],
      ];
      out.headers(s.id, this.#encoder.encode(fields), false, this.#peer.maxFrame);
      s.headersSent = true;
    }
    while (s.outBytes > 0) {
      const n = Math.min(s.sendWindow, this.#peer.sendWindow, this.#peer.maxFrame, s.outBytes);
      if (n <= 0) break;
      out.header(n, FrameType.DATA, 0, s.id);
      let written = 0;
      while (written < n) {
        const chunk = s.out[0]!;
        const take = Math.min(chunk.length - s.outOff, n - written);
        out.append(chunk.subarray(s.outOff, s.outOff + take));
        written += take;
        s.outOff += take;
        if (s.outOff === chunk.length) {
          s.out.shift();
          s.outOff = 0;
        }
      }
      s.sendWindow -= n;
      this.#peer.sendWindow -= n;
      s.outBytes -= n;
    }
  }

  #drainStreams(): void {
    if (this.backlogged) return;
    for (const s of this.#streams.values()) {
      if (s.needDrain && s.outBytes <= STREAM_HIGH_WATER / 2) {
        s.needDrain = false;
        this.#notify(s, () => s.h.onDrain());
      }
    }
  }

  #startWrite(): void {
    if (this.#writing) return;
    this.#writing = true;
    this.#writeLoop();
  }

  async #writeLoop(): Promise<void> {
    const conn = this.#conn!;
    try {
      while (this.#out.length > 0 && !this.#socketClosed) {
        const bytes = this.#out.take();
        this.#inWrite = bytes.length;
        let off = 0;
        while (off < bytes.length) off += await conn.write(bytes.subarray(off));
        this.#inWrite = 0;
        if (!this.#finished) this.#drainStreams();
      }
    } catch (err) {
      if (!this.#finished) this.#finish(new Error(`connection lost: ${errorText(err)}`));
    } finally {
      this.#writing = false;
      this.#inWrite = 0;
    }
    if (this.#finished) this.#closeSocket();
  }

  // --- closing --------------------------------------------------------------------------

  /**
   * Ends the connection: every stream not cancelled gets `onClose(error)` (when given); with
   * `goawayCode`, a GOAWAY with that code is sent first; the socket is closed once the last
   * frames are written (at most {@linkcode LINGER_MS} later).
   */
  #finish(error: Error | undefined, goawayCode?: number, message = ""): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#finishError = error;
    clearInterval(this.#keepaliveTimer);
    this.#keepaliveTimer = undefined;
    const connected = this.#conn !== undefined && this.#prefaceSent;
    for (const s of [...this.#streams.values()]) {
      if (connected && s.headersSent && !s.remoteEnded) {
        this.#out.rstStream(s.id, ErrorCode.CANCEL);
      }
      s.closed = true;
      s.out = [];
      s.outBytes = 0;
      if (error !== undefined) this.#endStream(s, error);
      s.done = true;
    }
    this.#streams.clear();
    this.#sendQueue.clear();
    if (error !== undefined) {
      log.debug("Flow API connection to {target} ends: {error}", {
        target: this.#s.target,
        error: error.message,
      });
    }
    if (!connected) {
      // Not connected (yet): a pending Deno.connect is aborted, a TLS handshake in progress is
      // cut off, a late connection is closed when it arrives.
      this.#abort.abort();
      if (this.#conn !== undefined) this.#closeSocket();
      else if (!this.#connecting) this.#socketDone();
      return;
    }
    if (goawayCode !== undefined) this.#out.goaway(0, goawayCode, message);
    this.#lingerTimer = setTimeout(() => this.#closeSocket(), LINGER_MS);
    if (this.#out.length > 0 && !this.#socketClosed) this.#startWrite();
    else if (!this.#writing) this.#closeSocket();
  }

  #closeSocket(): void {
    if (this.#socketClosed) return;
    clearTimeout(this.#lingerTimer);
    this.#lingerTimer = undefined;
    try {
      this.#conn?.close();
    } catch { /* closed already */ }
    this.#socketDone();
  }

  #socketDone(): void {
    this.#socketClosed = true;
    this.#resolveClosed();
  }
}
