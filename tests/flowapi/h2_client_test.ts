/**
 * The Flow API client's own HTTP/2 transport (lib/flowapi/h2/client.ts): against a hand-driven
 * server on loopback (every frame the client sends is recorded; the test writes the server's
 * frames, valid or not) and against the project's receiver (FlowReceiver on lib/flowapi/h2),
 * h2c and TLS. Covers the handshake and request headers, message framing (split and merged),
 * flow control both ways, PING, keepalive, trailers and Trailers-Only responses, RST_STREAM,
 * GOAWAY mid-stream and on an idle connection, protocol errors, and FlowClient reconnecting.
 */

import assert from "node:assert/strict";
import {
  DEFAULT_FLOW_TRANSPORT,
  FlowClient,
  type FlowClientOptions,
  type FlowStream,
  type FlowStreamHandlers,
  type FlowTransport,
} from "../../lib/flowapi/client.ts";
import {
  CONNECTION_PREFACE,
  ErrorCode,
  Flag,
  FrameType,
  OutBuffer,
  Setting,
} from "../../lib/flowapi/h2/frames.ts";
import {
  h2Dialer,
  type H2DialerOptions,
  type H2FlowConnection,
} from "../../lib/flowapi/h2/client.ts";
import { decodeFlowEvent, encodeFlowEvent, type FlowEventAck } from "../../lib/flowapi/proto.ts";
import { FlowReceiver } from "../../lib/flowapi/server.ts";
import { MemoryEventStore } from "../../lib/flowapi/store.ts";
import { mintToken } from "../../lib/flowapi/token.ts";
import { SECRET } from "./_events.ts";
import {
  concat,
  describe,
  errorCodeOf,
  FrameConn,
  grpcMessage,
  selfSignedCert,
  u32,
} from "./_h2.ts";
import { sleep, until, windowRecord } from "../_fakes/fake_flow_transport.ts";
import { uuidToBytes } from "../../lib/uuid.ts";

// ---------------------------------------------------------------------------------------------
// A hand-driven server.

/** One accepted connection: records the client's frames, writes the test's. */
class ServerConn extends FrameConn {
  preface = false;
  #prefaceLeft = CONNECTION_PREFACE.length;

  constructor(conn: Deno.Conn) {
    super(conn, "client");
  }

  protected override onBytes(chunk: Uint8Array): Uint8Array {
    if (this.#prefaceLeft === 0) return chunk;
    const k = Math.min(this.#prefaceLeft, chunk.length);
    const want = CONNECTION_PREFACE.subarray(
      CONNECTION_PREFACE.length - this.#prefaceLeft,
      CONNECTION_PREFACE.length - this.#prefaceLeft + k,
    );
    assert.deepEqual(chunk.subarray(0, k), want, "connection preface");
    this.#prefaceLeft -= k;
    if (this.#prefaceLeft === 0) this.preface = true;
    return chunk.subarray(k);
  }

  async settings(entries: [number, number][] = []): Promise<void> {
    const out = new OutBuffer();
    out.settings(entries);
    await this.write(out.take());
  }

  /** SETTINGS, then the response headers of stream 1. */
  async accept(entries: [number, number][] = []): Promise<void> {
    await this.settings(entries);
    await this.waitFor((fs) => fs.find((f) => f.type === FrameType.HEADERS), "request headers");
    await this.headers(1, [[":status", "200"], ["content-type", "application/grpc"]]);
  }

  /** Bytes of DATA frames on a stream. */
  dataBytes(streamId = 1): number {
    return this.frames.filter((f) => f.type === FrameType.DATA && f.streamId === streamId)
      .reduce((n, f) => n + f.payload.length, 0);
  }
}

/** A listener on 127.0.0.1 that hands out {@linkcode ServerConn}s. */
class RawServer implements AsyncDisposable {
  readonly conns: ServerConn[] = [];
  readonly port: number;
  #listener: Deno.Listener;
  #accepting: Promise<void>;

  constructor() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        (conn as Deno.TcpConn).setNoDelay(true);
        this.conns.push(new ServerConn(conn));
      }
    } catch { /* closed */ }
  }

  async conn(i = 0): Promise<ServerConn> {
    await until(`connection ${i + 1}`, () => this.conns.length > i, 5000);
    return this.conns[i]!;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    await Promise.all(this.conns.map((c) => c.close()));
  }
}

function goaway(last: number, code: number, debug = ""): Uint8Array {
  return concat(u32(last), u32(code), new TextEncoder().encode(debug));
}

/** A FlowEventAck for event `n` (event_id = 16 bytes ending in n), protobuf-encoded. */
function ackBytes(n: number): Uint8Array {
  const id = new Uint8Array(16);
  id[15] = n;
  return concat(new Uint8Array([0x0a, 16]), id);
}

const INITIATOR_ACK = new Uint8Array([0x10, 0x01]); // isInitiator: true

// ---------------------------------------------------------------------------------------------
// A recording stream.

interface Recorder extends FlowStreamHandlers {
  events: string[];
  acks: FlowEventAck[];
  closedWith: Error | undefined;
}

function recorder(): Recorder {
  const r: Recorder = {
    events: [],
    acks: [],
    closedWith: undefined,
    onReady: () => r.events.push("ready"),
    onAck: (ack) => {
      r.events.push("ack");
      r.acks.push(ack);
    },
    onDrain: () => r.events.push("drain"),
    onClose: (error) => {
      r.events.push("close");
      r.closedWith = error;
    },
  };
  return r;
}

const TOKEN = "c2lnbmF0dXJl.1767225600";
const KEY = new Uint8Array(32).map((_, i) => i + 1);

function dial(url: string, options: Partial<H2DialerOptions> = {}): H2FlowConnection {
  return h2Dialer({ url, token: TOKEN, ...options })({ intervalMs: 60_000 });
}

/**
 * Dials `server`, opens one stream, answers it (SETTINGS with `settings`, response headers) and
 * waits for its `onReady`.
 */
async function readyStream(
  server: RawServer,
  options: Partial<H2DialerOptions> = {},
  settings: [number, number][] = [],
  conn = 0,
): Promise<OpenedStream> {
  const opened = await openedStream(server, options, conn);
  await opened.sc.accept(settings);
  await until("ready", () => opened.r.events.includes("ready"));
  return opened;
}

interface OpenedStream {
  c: H2FlowConnection;
  r: Recorder;
  s: FlowStream;
  sc: ServerConn;
}

/** Dials `server` and opens one stream; returns once the server has the connection. */
async function openedStream(
  server: RawServer,
  options: Partial<H2DialerOptions> = {},
  conn = 0,
): Promise<OpenedStream> {
  const c = dial(server.url, options);
  const r = recorder();
  const s = c.openStream(r);
  const sc = await server.conn(conn);
  return { c, r, s, sc };
}

async function closeAll(c: H2FlowConnection): Promise<void> {
  c.close();
  await c.closed;
}

const event = (n: number, size = 0): Uint8Array => {
  const id = new Uint8Array(16);
  id[15] = n;
  return encodeFlowEvent({
    eventId: id,
    publicKey: new Uint8Array(size),
    isInitiator: false,
  });
};

// ---------------------------------------------------------------------------------------------
// Against the hand-driven server.

Deno.test("h2 client: preface, SETTINGS, request headers with the token, messages framed; acks split and merged", async () => {
  await using server = new RawServer();
  const c = dial(server.url);
  const r = recorder();
  const s = c.openStream(r);
  assert.equal(s.write(event(1)), true);
  const sc = await server.conn();
  const settings = await sc.waitForFrame(FrameType.SETTINGS);
  assert.ok(sc.preface);
  assert.equal(sc.frames[0], settings, "SETTINGS right after the preface");
  const v = new DataView(settings.payload.buffer);
  const values = new Map<number, number>();
  for (let i = 0; i < settings.payload.length; i += 6) {
    values.set(v.getUint16(i), v.getUint32(i + 2));
  }
  assert.equal(values.get(Setting.ENABLE_PUSH), 0);
  const headers = await sc.waitForFrame(FrameType.HEADERS, 1);
  assert.equal(headers.flags & Flag.END_STREAM, 0);
  const h = Object.fromEntries(headers.headers!);
  assert.equal(h[":method"], "POST");
  assert.equal(h[":scheme"], "http");
  assert.equal(h[":path"], "/flow.FlowService/Events");
  assert.equal(h[":authority"], `127.0.0.1:${server.port}`);
  assert.equal(h["content-type"], "application/grpc");
  assert.equal(h["te"], "trailers");
  assert.equal(h["authorization"], `Bearer ${TOKEN}`);
  assert.match(h["user-agent"]!, /netbird-ct/);
  assert.ok(
    headers.headers!.findIndex(([n]) => !n.startsWith(":")) >
      headers.headers!.findLastIndex(([n]) => n.startsWith(":")),
    "pseudo-headers first",
  );
  await sc.waitFor(() => sc.messages().length === 1 ? true : undefined, "the message");
  assert.deepEqual(decodeFlowEvent(sc.messages()[0]!).eventId[15], 1);

  // The server's SETTINGS are acked; not ready before the response headers.
  await sc.settings([[Setting.MAX_CONCURRENT_STREAMS, 100]]);
  await sc.waitFor(
    (fs) => fs.find((f) => f.type === FrameType.SETTINGS && f.flags === Flag.ACK),
    "ack",
  );
  await sleep(20);
  assert.deepEqual(r.events, []);
  await sc.headers(1, [[":status", "200"], ["content-type", "application/grpc"]]);
  await until("ready", () => r.events.length === 1);
  assert.deepEqual(r.events, ["ready"]);

  // Three acks merged in one DATA frame, then one split over three frames (inside the prefix).
  await sc.frame(
    FrameType.DATA,
    0,
    1,
    concat(grpcMessage(INITIATOR_ACK), grpcMessage(ackBytes(1)), grpcMessage(ackBytes(2))),
  );
  const split = grpcMessage(ackBytes(3));
  await sc.frame(FrameType.DATA, 0, 1, split.subarray(0, 3));
  await sleep(10);
  await sc.frame(FrameType.DATA, 0, 1, split.subarray(3, 10));
  await sleep(10);
  assert.equal(r.acks.length, 3, `${r.events} ${r.closedWith?.message} ${sc.frames.map(describe)}`);
  await sc.frame(FrameType.DATA, 0, 1, split.subarray(10));
  await until("4 acks", () => r.acks.length === 4);
  assert.equal(r.acks[0]!.isInitiator, true);
  assert.deepEqual(r.acks.slice(1).map((a) => a.eventId[15]), [1, 2, 3]);

  // A PING is answered with the same payload.
  await sc.frame(FrameType.PING, 0, 0, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
  const pong = await sc.waitFor(
    (fs) => fs.find((f) => f.type === FrameType.PING && f.flags === Flag.ACK),
    "PING ACK",
  );
  assert.deepEqual(pong.payload, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));

  // Trailers end the stream with the status.
  await sc.headers(1, [["grpc-status", "14"], ["grpc-message", "going%20down %C3%BC"]], true);
  await until("closed", () => r.closedWith !== undefined);
  assert.equal(r.closedWith!.message, "stream closed by the receiver: 14 going down ü");
  assert.deepEqual(r.events, ["ready", "ack", "ack", "ack", "ack", "close"]);
  assert.equal(s.write(event(2)), false, "no writes after the end");
  await closeAll(c);
  await sc.closed();
});

Deno.test("h2 client: stays within the server's windows and sends more as they open; drain after a full buffer", async () => {
  await using server = new RawServer();
  // A stream window of 100 bytes, the connection window stays 65,535.
  const { c, r, s, sc } = await readyStream(server, {}, [[Setting.INITIAL_WINDOW_SIZE, 100]]);
  const one = event(1, 1000); // ~1,030 bytes framed
  let n = 0;
  while (s.write(one)) n++;
  n++;
  assert.ok(n > 20 && n < 100, `write returned false after ${n} messages`);
  await sleep(50);
  assert.equal(sc.dataBytes(), 100, "exactly the stream window");
  // Open the stream window wide: the connection window (65,535) limits now.
  await sc.frame(FrameType.WINDOW_UPDATE, 0, 1, u32(10_000_000));
  await sleep(50);
  assert.equal(sc.dataBytes(), 65_535, "exactly the connection window");
  await sc.frame(FrameType.WINDOW_UPDATE, 0, 0, u32(10_000_000));
  await until("drain", () => r.events.includes("drain"));
  await until("everything sent", () => sc.dataBytes() === n * (one.length + 5));
  assert.equal(sc.messages().length, n);
  for (const f of sc.frames.filter((f) => f.type === FrameType.DATA)) {
    assert.ok(f.payload.length <= 16_384, "frames within the default max frame size");
  }
  await closeAll(c);
});

Deno.test("h2 client: credits its receive windows with WINDOW_UPDATE as acks are read", async () => {
  await using server = new RawServer();
  const { c, r, sc } = await readyStream(server, {
    streamWindow: 65_535,
    connectionWindow: 65_535,
  });
  // 3,000 acks of 23 bytes = 69,000 bytes: more than one window; send 60,000 first.
  const all = concat(...Array.from({ length: 3000 }, (_, i) => grpcMessage(ackBytes(i % 256))));
  for (let off = 0; off < 60_000; off += 15_000) {
    await sc.frame(FrameType.DATA, 0, 1, all.subarray(off, off + 15_000));
  }
  const updates = await sc.waitFor((fs) => {
    const w = fs.filter((f) => f.type === FrameType.WINDOW_UPDATE);
    const conn = w.filter((f) => f.streamId === 0).reduce((n, f) => n + errorCodeOf(f), 0);
    const stream = w.filter((f) => f.streamId === 1).reduce((n, f) => n + errorCodeOf(f), 0);
    return conn >= 30_000 && stream >= 30_000 ? [conn, stream] : undefined;
  }, "window updates");
  assert.ok(updates[0]! <= 60_000 && updates[1]! <= 60_000);
  await sc.frame(FrameType.DATA, 0, 1, all.subarray(60_000));
  await until("every ack", () => r.acks.length === 3000);
  assert.equal(r.closedWith?.message, undefined);
  await closeAll(c);
});

Deno.test("h2 client: a GOAWAY mid-stream ends the stream (no crash), resets it, and closes the connection", async () => {
  await using server = new RawServer();
  const c = dial(server.url);
  const r = recorder();
  const s = c.openStream(r);
  s.write(event(1));
  const sc = await server.conn();
  await sc.accept();
  await until("ready", () => r.events.includes("ready"));
  await sc.frame(FrameType.GOAWAY, 0, 0, goaway(1, ErrorCode.NO_ERROR, "shutting down"));
  await until("closed", () => r.closedWith !== undefined);
  assert.match(r.closedWith!.message, /going away \(GOAWAY: shutting down\)/);
  const rst = await sc.waitForFrame(FrameType.RST_STREAM, 1);
  assert.equal(errorCodeOf(rst), ErrorCode.CANCEL);
  await sc.closed();
  await c.closed;
  assert.equal(sc.frames.filter((f) => f.type === FrameType.GOAWAY).length, 0, "no GOAWAY back");
  assert.equal(s.write(event(2)), false);
  // A new stream on this connection fails at once (not inline).
  const r2 = recorder();
  c.openStream(r2);
  assert.deepEqual(r2.events, []);
  await until("second closed", () => r2.closedWith !== undefined);
  c.close();
});

Deno.test("h2 client: a GOAWAY on a connection whose stream has finished is harmless", async () => {
  await using server = new RawServer();
  const { c, r, sc } = await openedStream(server);
  await sc.accept();
  await sc.frame(FrameType.DATA, 0, 1, grpcMessage(INITIATOR_ACK));
  await sc.headers(1, [["grpc-status", "0"]], true);
  await sc.frame(FrameType.RST_STREAM, 0, 1, u32(ErrorCode.NO_ERROR));
  await until("closed", () => r.closedWith !== undefined);
  assert.equal(r.closedWith!.message, "stream closed by the receiver: 0 ");
  await sc.frame(FrameType.GOAWAY, 0, 0, goaway(1, ErrorCode.NO_ERROR));
  await sc.frame(FrameType.PING, 0, 0, new Uint8Array(8));
  await sc.closed();
  await c.closed;
  assert.deepEqual(r.events, ["ready", "ack", "close"], "nothing after the close");
  c.close();
});

Deno.test("h2 client: RST_STREAM from the server ends the stream (not answered with RST_STREAM)", async () => {
  await using server = new RawServer();
  const { c, r, sc } = await readyStream(server);
  await sc.frame(FrameType.RST_STREAM, 0, 1, u32(ErrorCode.REFUSED_STREAM));
  await until("closed", () => r.closedWith !== undefined);
  assert.match(r.closedWith!.message, /RST_STREAM REFUSED_STREAM/);
  await sleep(30);
  assert.equal(sc.frames.filter((f) => f.type === FrameType.RST_STREAM).length, 0);
  // DATA on the closed stream is ignored; the connection stays until closed.
  await sc.frame(FrameType.DATA, 0, 1, grpcMessage(ackBytes(1)));
  await sleep(30);
  assert.equal(sc.eof, false);
  await closeAll(c);
  const g = await sc.waitForFrame(FrameType.GOAWAY);
  assert.equal(errorCodeOf(g), ErrorCode.NO_ERROR, "close() says goodbye");
  await sc.closed();
});

Deno.test("h2 client: Trailers-Only responses and HTTP errors end the stream without onReady", async () => {
  await using server = new RawServer();
  const { c, r, sc } = await openedStream(server);
  await sc.settings();
  await sc.waitForFrame(FrameType.HEADERS);
  await sc.headers(1, [
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["grpc-status", "16"],
    ["grpc-message", "token expired"],
  ], true);
  await until("closed", () => r.closedWith !== undefined);
  assert.deepEqual(r.events, ["close"]);
  assert.equal(r.closedWith!.message, "stream closed by the receiver: 16 token expired");
  c.close();

  const c2 = dial(server.url);
  const r2 = recorder();
  c2.openStream(r2);
  const sc2 = await server.conn(1);
  await sc2.settings();
  await sc2.waitForFrame(FrameType.HEADERS);
  await sc2.headers(1, [[":status", "404"], ["content-type", "text/html"]]);
  await until("closed", () => r2.closedWith !== undefined);
  assert.deepEqual(r2.events, ["close"]);
  assert.match(r2.closedWith!.message, /HTTP status 404/);
  const rst = await sc2.waitForFrame(FrameType.RST_STREAM, 1);
  assert.equal(errorCodeOf(rst), ErrorCode.CANCEL);
  await closeAll(c2);
  await c.closed;
});

Deno.test("h2 client: protocol errors of the server end the connection with GOAWAY and the code", async () => {
  const cases: [string, (sc: ServerConn) => Promise<void>, number][] = [
    [
      "DATA on stream 0",
      (sc) => sc.frame(FrameType.DATA, 0, 0, new Uint8Array(1)),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "PUSH_PROMISE",
      (sc) => sc.frame(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, u32(2)),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "bad HPACK",
      (sc) =>
        sc.frame(
          FrameType.HEADERS,
          Flag.END_HEADERS,
          1,
          new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ),
      ErrorCode.COMPRESSION_ERROR,
    ],
    [
      "oversized frame",
      (sc) => sc.frame(FrameType.DATA, 0, 1, new Uint8Array(20_000)),
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "window overflow",
      (sc) => sc.frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0x7fffffff)),
      ErrorCode.FLOW_CONTROL_ERROR,
    ],
    [
      "HEADERS on a server stream",
      (sc) => sc.headers(2, [[":status", "200"]]),
      ErrorCode.PROTOCOL_ERROR,
    ],
  ];
  await using server = new RawServer();
  let i = 0;
  for (const [name, misbehave, code] of cases) {
    const { c, r, sc } = await readyStream(server, {}, [], i++);
    await misbehave(sc);
    await until(`${name}: closed`, () => r.closedWith !== undefined);
    assert.match(r.closedWith!.message, /protocol error/, name);
    const g = await sc.waitForFrame(FrameType.GOAWAY);
    assert.equal(errorCodeOf(g), code, name);
    await sc.closed();
    await c.closed;
  }
  // A server that does not start with SETTINGS.
  const c = dial(server.url);
  const r = recorder();
  c.openStream(r);
  const sc = await server.conn(i);
  await sc.frame(FrameType.PING, 0, 0, new Uint8Array(8));
  await until("closed", () => r.closedWith !== undefined);
  assert.equal(errorCodeOf(await sc.waitForFrame(FrameType.GOAWAY)), ErrorCode.PROTOCOL_ERROR);
  await c.closed;
});

Deno.test("h2 client: a stream error (an undecodable ack) resets only the stream", async () => {
  await using server = new RawServer();
  const { c, r, sc } = await readyStream(server, {
    streamWindow: 65_535,
    connectionWindow: 1 << 20,
  }, [[Setting.MAX_FRAME_SIZE, 16_384]]);
  await sc.frame(FrameType.DATA, 0, 1, grpcMessage(new Uint8Array([0xff, 0xff])));
  await until("closed", () => r.closedWith !== undefined);
  assert.match(r.closedWith!.message, /cannot decode an ack/);
  assert.equal(errorCodeOf(await sc.waitForFrame(FrameType.RST_STREAM, 1)), ErrorCode.CANCEL);
  assert.equal(sc.frames.filter((f) => f.type === FrameType.GOAWAY).length, 0);
  await closeAll(c);
});

Deno.test("h2 client: cancel() resets the stream and no handler is called afterwards", async () => {
  await using server = new RawServer();
  const { c, r, s, sc } = await readyStream(server);
  s.cancel();
  await sc.frame(FrameType.DATA, 0, 1, grpcMessage(ackBytes(1)));
  await sc.headers(1, [["grpc-status", "1"]], true);
  assert.equal(errorCodeOf(await sc.waitForFrame(FrameType.RST_STREAM, 1)), ErrorCode.CANCEL);
  await sleep(30);
  assert.deepEqual(r.events, ["ready"]);
  await closeAll(c);
});

Deno.test("h2 client: keepalive PINGs an idle connection and gives up when they are not answered", async () => {
  await using server = new RawServer();
  const { c, r, sc } = await openedStream(server, { keepaliveMs: 100, keepaliveTimeoutMs: 400 });
  await sc.accept();
  const ping = await sc.waitFor(
    (fs) => fs.find((f) => f.type === FrameType.PING && f.flags === 0),
    "keepalive PING",
  );
  await sc.frame(FrameType.PING, Flag.ACK, 0, ping.payload);
  await sleep(200);
  assert.equal(r.closedWith, undefined, "answered: still up");
  await until("timed out", () => r.closedWith !== undefined, 3000);
  assert.match(r.closedWith!.message, /keepalive PING not answered/);
  await sc.closed();
  await c.closed;
});

Deno.test("h2 client: a refused connection ends the stream; close() before connecting is quiet", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const c = dial(`http://127.0.0.1:${port}`);
  const r = recorder();
  const s = c.openStream(r);
  assert.equal(s.write(event(1)), true, "queued until connected");
  await until("closed", () => r.closedWith !== undefined);
  assert.match(r.closedWith!.message, /cannot connect to 127\.0\.0\.1/);
  await c.closed;
  c.close();

  const c2 = dial(`http://127.0.0.1:${port}`);
  const r2 = recorder();
  c2.openStream(r2);
  c2.close();
  await c2.closed;
  await sleep(20);
  assert.deepEqual(r2.events, []);
  assert.throws(() => h2Dialer({ url: "https://192.0.2.1", token: TOKEN }), TypeError);
  assert.throws(() => h2Dialer({ url: "http://x", token: "a.b\r\nx-injected: 1" }), TypeError);
});

Deno.test("h2 client: response headers in HEADERS + CONTINUATION frames", async () => {
  await using server = new RawServer();
  const { c, r, sc } = await openedStream(server);
  await sc.settings();
  await sc.waitForFrame(FrameType.HEADERS);
  const block = sc.encoder.encode([
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["x-padding", "p".repeat(200)],
  ]);
  await sc.frame(FrameType.HEADERS, 0, 1, block.subarray(0, 10));
  await sc.frame(FrameType.CONTINUATION, 0, 1, block.subarray(10, 50));
  await sleep(20);
  assert.deepEqual(r.events, []);
  await sc.frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, block.subarray(50));
  await until("ready", () => r.events.includes("ready"));
  await closeAll(c);
});

// ---------------------------------------------------------------------------------------------
// With FlowClient.

Deno.test("FlowClient: h2 is the default transport; grpc-js stays selectable; others are refused", () => {
  assert.equal(DEFAULT_FLOW_TRANSPORT, "h2");
  const base = { url: "http://127.0.0.1:9", token: TOKEN, publicKey: KEY, intervalMs: 1000 };
  new FlowClient(base)[Symbol.dispose]();
  new FlowClient({ ...base, transport: "grpc-js" })[Symbol.dispose]();
  assert.throws(
    () => new FlowClient({ ...base, transport: "http1" as FlowTransport }),
    TypeError,
  );
});

Deno.test("h2 client: FlowClient reconnects after a GOAWAY mid-stream and resends what is un-acked", async () => {
  await using server = new RawServer();
  const client = new FlowClient({
    publicKey: KEY,
    intervalMs: 2000,
    dial: h2Dialer({ url: server.url, token: TOKEN }),
    retryIntervalMs: 50,
    graceMs: 60_000,
    reconnectInitialMs: 20,
    random: () => 0.5,
  });
  try {
    client.start();
    const rec = windowRecord();
    client.write([rec]);
    const sc = await server.conn();
    await sc.accept();
    await sc.frame(FrameType.DATA, 0, 1, grpcMessage(INITIATOR_ACK));
    await sc.waitFor(() => sc.messages().length === 2 ? true : undefined, "the event");
    await sc.frame(FrameType.GOAWAY, 0, 0, goaway(1, ErrorCode.NO_ERROR));
    const sc2 = await server.conn(1);
    await sc2.accept();
    await sc2.waitFor(() => sc2.messages().length === 2 ? true : undefined, "the event again");
    const first = decodeFlowEvent(sc2.messages()[0]!);
    assert.equal(first.isInitiator, true);
    assert.deepEqual(sc2.messages()[1], sc.messages()[1], "the same bytes");
    const id = uuidToBytes(rec.eventId);
    await sc2.frame(FrameType.DATA, 0, 1, grpcMessage(concat(new Uint8Array([0x0a, 16]), id)));
    await until("acked", () => client.stats().acked === 1);
    assert.equal(client.stats().reconnects, 1);
    await sc.closed();
  } finally {
    await client.close(0);
  }
});

// ---------------------------------------------------------------------------------------------
// Against the project's receiver.

async function makeCert(dir: string): Promise<{ cert: string; key: string }> {
  await selfSignedCert(`${dir}/cert.pem`, `${dir}/key.pem`);
  return {
    cert: await Deno.readTextFile(`${dir}/cert.pem`),
    key: await Deno.readTextFile(`${dir}/key.pem`),
  };
}

/** A FlowClient (default transport) for {@linkcode receiver}, with a valid token and quick retries. */
function receiverClient(url: string, over: Partial<FlowClientOptions> = {}): FlowClient {
  return new FlowClient({
    url,
    token: mintToken(SECRET, { ttlMs: 3_600_000 }),
    publicKey: KEY,
    intervalMs: 2000,
    retryIntervalMs: 50,
    graceMs: 150,
    reconnectInitialMs: 20,
    ...over,
  });
}

async function receiver(tls?: { cert: string; key: string }, port = 0): Promise<FlowReceiver> {
  const r = new FlowReceiver({
    store: new MemoryEventStore(),
    tokenSecret: SECRET,
    listen: { hostname: "127.0.0.1", port },
    ...(tls === undefined ? {} : { tls }),
  });
  await r.start();
  return r;
}

Deno.test("h2 client: FlowClient (default transport) delivers to FlowReceiver; a bad token gets UNAUTHENTICATED", async () => {
  const r = await receiver();
  const url = `http://127.0.0.1:${r.grpcAddress.port}`;
  const client = receiverClient(url);
  try {
    client.start();
    client.write(Array.from({ length: 200 }, () => windowRecord()));
    await until("acked", () => client.stats().acked === 200, 5000);
    assert.equal(client.stats().resent, 0);
  } finally {
    await client.close(0);
  }
  // A forged token: Trailers-Only UNAUTHENTICATED.
  const c = dial(url, {});
  const rec = recorder();
  c.openStream(rec).write(event(1));
  await until("refused", () => rec.closedWith !== undefined);
  assert.match(rec.closedWith!.message, /^stream closed by the receiver: 16 /);
  assert.deepEqual(rec.events, ["close"]);
  await closeAll(c);
  await r.stop({ timeoutMs: 100 });
});

Deno.test("h2 client: FlowReceiver's graceful stop (GOAWAY, UNAVAILABLE) ends the stream; FlowClient comes back after a restart", async () => {
  let r = await receiver();
  const port = r.grpcAddress.port;
  const client = receiverClient(`http://127.0.0.1:${port}`, { intervalMs: 1000 });
  try {
    client.start();
    client.write([windowRecord()]);
    await until("acked", () => client.stats().acked === 1);
    await r.stop({ timeoutMs: 100 });
    await until("disconnected", () => !client.connected);
    r = await receiver(undefined, port);
    client.write([windowRecord()]);
    await until("acked after the restart", () => client.stats().acked === 2, 5000);
    assert.ok(client.stats().reconnects >= 1);
  } finally {
    await client.close(0);
    await r.stop({ timeoutMs: 100 });
  }
});

Deno.test({
  name: "h2 client: TLS with ALPN h2 and a self-signed certificate as the root",
  // TLS needs a host name ("localhost"): `deno task test` allows only addresses.
  ignore: Deno.permissions.querySync({ name: "net", host: "localhost" }).state !== "granted" ||
    Deno.permissions.querySync({ name: "run", command: "openssl" }).state !== "granted",
  async fn(): Promise<void> {
    const dir = await Deno.makeTempDir({ prefix: "nbct-h2c-tls-" });
    try {
      const tls = await makeCert(dir);
      const r = await receiver(tls);
      const port = r.grpcAddress.port;
      const client = receiverClient(`https://localhost:${port}`, {
        rootCerts: new TextEncoder().encode(tls.cert),
      });
      try {
        client.start();
        client.write([windowRecord(), windowRecord()]);
        await until("acked over TLS", () => client.stats().acked === 2, 5000);
      } finally {
        await client.close(0);
      }
      // Without the root the certificate is refused.
      const c = dial(`https://localhost:${port}`);
      const rec = recorder();
      c.openStream(rec);
      await until("refused", () => rec.closedWith !== undefined);
      assert.match(rec.closedWith!.message, /cannot connect|certificate|connection/i);
      await closeAll(c);
      await r.stop({ timeoutMs: 100 });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
