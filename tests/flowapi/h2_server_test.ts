/**
 * The receiver's HTTP/2 transport against hand-built frames on loopback: connection setup,
 * message framing, flow control in both directions, stream and connection errors, GOAWAY in
 * both directions, and backpressure.
 */

import assert from "node:assert/strict";
import { decodeFlowEventAck, encodeFlowEvent } from "../../lib/flowapi/proto.ts";
import { FlowReceiver, type FlowReceiverOptions } from "../../lib/flowapi/server.ts";
import { type EventStore, MemoryEventStore } from "../../lib/flowapi/store.ts";
import { ManualStore, SECRET, wireEvent } from "./_events.ts";
import {
  concat,
  describe,
  ErrorCode,
  errorCodeOf,
  eventsRequest,
  Flag,
  type Frame,
  FrameType,
  grpcMessage,
  RawClient,
  Setting,
  u32,
} from "./_h2.ts";

async function receiver(
  store: EventStore = new MemoryEventStore(),
  options: Partial<FlowReceiverOptions> = {},
): Promise<FlowReceiver & AsyncDisposable> {
  const r = new FlowReceiver({
    store,
    tokenSecret: SECRET,
    listen: { hostname: "127.0.0.1", port: 0 },
    ...options,
  });
  await r.start();
  return Object.assign(r, { [Symbol.asyncDispose]: () => r.stop({ timeoutMs: 100 }) });
}

/** Event acks (IDs' last byte) received on a stream, initiator ack excluded. */
function ackedIds(c: RawClient, streamId: number): number[] {
  return c.messages(streamId).map(decodeFlowEventAck).filter((a) => !a.isInitiator)
    .map((a) => a.eventId[15]!);
}

function waitForAcks(c: RawClient, streamId: number, n: number, timeoutMs = 5000): Promise<true> {
  return c.waitFor(
    () => ackedIds(c, streamId).length >= n ? true : undefined,
    `${n} acks on stream ${streamId}`,
    timeoutMs,
  );
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

Deno.test("h2: SETTINGS first, then SETTINGS ACK; a PING is answered with the same payload", async () => {
  await using r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  const settings = await c.waitForFrame(FrameType.SETTINGS);
  assert.equal(c.frames[0], settings, "the server's preface is a SETTINGS frame");
  assert.equal(settings.flags & Flag.ACK, 0);
  const values = new Map<number, number>();
  const v = new DataView(settings.payload.buffer);
  for (let i = 0; i < settings.payload.length; i += 6) {
    values.set(v.getUint16(i), v.getUint32(i + 2));
  }
  assert.equal(values.get(Setting.MAX_CONCURRENT_STREAMS), 100);
  assert.equal(values.get(Setting.MAX_HEADER_LIST_SIZE), 16384);
  await c.waitFor(
    (fs) => fs.find((f) => f.type === FrameType.SETTINGS && f.flags === Flag.ACK),
    "ack",
  );
  await c.frame(FrameType.PING, 0, 0, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
  const pong = await c.waitFor(
    (fs) => fs.find((f) => f.type === FrameType.PING && f.flags === Flag.ACK),
    "PING ACK",
  );
  assert.deepEqual(pong.payload, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
});

Deno.test("h2: a bad preface gets GOAWAY PROTOCOL_ERROR and a close; the next client is served", async () => {
  await using r = await receiver();
  await using bad = await RawClient.connect(r.grpcAddress.port, { preface: false });
  await bad.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  await bad.closed();
  assert.equal(bad.goaway()?.code, ErrorCode.PROTOCOL_ERROR);
  await using good = await RawClient.connect(r.grpcAddress.port);
  await good.headers(1, eventsRequest());
  await good.data(1, grpcMessage(wireEvent(1)), true);
  await waitForAcks(good, 1, 1);
  assert.equal((await good.waitFor(() => good.trailers(1), "trailers"))["grpc-status"], "0");
});

Deno.test("h2: a message split across frames and many messages in one frame are all acked, acks batched", async () => {
  const store = new MemoryEventStore();
  await using r = await receiver(store);
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  // Event 1 in four DATA frames, split inside the 5-byte prefix too.
  const first = grpcMessage(wireEvent(1));
  for (const [a, b] of [[0, 2], [2, 7], [7, 40], [40, first.length]]) {
    await c.data(1, first.subarray(a, b));
  }
  await waitForAcks(c, 1, 1);
  // Events 2..120 in one DATA frame (plus the client's own initiator message).
  const initiator = grpcMessage(encodeFlowEvent({
    eventId: new Uint8Array(0),
    publicKey: new Uint8Array(0),
    isInitiator: true,
  }));
  await c.data(1, concat(initiator, ...range(2, 120).map((n) => grpcMessage(wireEvent(n)))));
  await waitForAcks(c, 1, 120);
  assert.deepEqual(ackedIds(c, 1), range(1, 120));
  const dataFrames = c.frames.filter((f) => f.type === FrameType.DATA && f.streamId === 1);
  assert.ok(
    dataFrames.length <= 6,
    `acks of one read go out together: ${dataFrames.length} DATA frames`,
  );
  assert.equal(store.size, 120);
  // A message at the end of the stream, ending in the last frame.
  const last = grpcMessage(wireEvent(121));
  await c.data(1, last.subarray(0, 10));
  await c.data(1, last.subarray(10), true);
  const trailers = await c.waitFor(() => c.trailers(1), "trailers");
  assert.deepEqual([trailers["grpc-status"], ackedIds(c, 1).length], ["0", 121]);
  const headers = c.frames.find((f) => f.type === FrameType.HEADERS && f.streamId === 1)!;
  assert.deepEqual(headers.headers?.slice(0, 2), [[":status", "200"], [
    "content-type",
    "application/grpc",
  ]]);
});

Deno.test("h2: the server's DATA stays within the client's stream and connection windows", async () => {
  await using r = await receiver();
  // A stream window of 30 bytes: the initiator ack (7) and one event ack (23).
  await using c = await RawClient.connect(r.grpcAddress.port, {
    settings: [[Setting.INITIAL_WINDOW_SIZE, 30]],
  });
  await c.headers(1, eventsRequest());
  await c.data(1, concat(...range(1, 10).map((n) => grpcMessage(wireEvent(n)))));
  const dataBytes = (): number =>
    c.frames.filter((f) => f.type === FrameType.DATA && f.streamId === 1)
      .reduce((n, f) => n + f.payload.length, 0);
  await c.waitFor(() => dataBytes() >= 30 ? true : undefined, "30 bytes");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(dataBytes(), 30, "no more than the window");
  await c.frame(FrameType.WINDOW_UPDATE, 0, 1, u32(1000));
  await waitForAcks(c, 1, 10);
  assert.equal(dataBytes(), 7 + 10 * 23);

  // The connection window (65,535, never raised by this client): 3000 acks need 69,007 bytes.
  await using d = await RawClient.connect(r.grpcAddress.port, {
    settings: [[Setting.INITIAL_WINDOW_SIZE, 1 << 20]],
  });
  await d.headers(1, eventsRequest());
  const events = range(0, 2999).map((n) => {
    const e = wireEvent(n & 0xff);
    e.eventId[14] = n >> 8;
    return grpcMessage(e);
  });
  for (let i = 0; i < events.length; i += 100) {
    await d.dataFrames(1, concat(...events.slice(i, i + 100)));
  }
  const dBytes = (): number =>
    d.frames.filter((f) => f.type === FrameType.DATA).reduce((n, f) => n + f.payload.length, 0);
  await d.waitFor(() => dBytes() >= 65_535 ? true : undefined, "a full connection window");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(dBytes(), 65_535, "stops at the connection window");
  assert.ok(
    d.frames.every((f) => f.type !== FrameType.DATA || f.payload.length <= 16_384),
    "no DATA frame above SETTINGS_MAX_FRAME_SIZE",
  );
  await d.frame(FrameType.WINDOW_UPDATE, 0, 0, u32(10_000));
  await d.waitFor(() => dBytes() === 7 + 3000 * 23 ? true : undefined, "every ack");
});

Deno.test("h2: GOAWAY from the client mid-stream: the stream goes on, the receiver stays up", async () => {
  const store = new MemoryEventStore();
  await using r = await receiver(store);
  {
    await using c = await RawClient.connect(r.grpcAddress.port);
    await c.headers(1, eventsRequest());
    await c.data(1, grpcMessage(wireEvent(1)));
    await waitForAcks(c, 1, 1);
    await c.frame(FrameType.GOAWAY, 0, 0, concat(u32(0), u32(ErrorCode.NO_ERROR)));
    await c.data(1, grpcMessage(wireEvent(2)), true);
    const trailers = await c.waitFor(() => c.trailers(1), "trailers");
    assert.equal(trailers["grpc-status"], "0");
    assert.deepEqual(ackedIds(c, 1), [1, 2]);
    await c.closed();
    assert.equal(c.goaway(), undefined, "no GOAWAY in reply to the client's");
  }
  {
    // GOAWAY with an error and the socket closed at once, with a stream open.
    await using c = await RawClient.connect(r.grpcAddress.port);
    await c.headers(1, eventsRequest());
    await c.data(1, grpcMessage(wireEvent(3)));
    await waitForAcks(c, 1, 1);
    await c.frame(FrameType.GOAWAY, 0, 0, concat(u32(1), u32(ErrorCode.INTERNAL_ERROR), u32(7)));
  }
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  await c.data(1, grpcMessage(wireEvent(4)), true);
  await waitForAcks(c, 1, 1);
  assert.equal(store.size, 4);
  await c.waitFor(() => r.stats().activeStreams === 0 ? true : undefined, "streams closed");
});

Deno.test("h2: an oversized message ends the stream with RESOURCE_EXHAUSTED; the connection stays", async () => {
  await using r = await receiver(new MemoryEventStore(), { maxMessageBytes: 1000 });
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  await c.data(1, grpcMessage(wireEvent(1)));
  await waitForAcks(c, 1, 1);
  await c.data(1, new Uint8Array([0, 0, 0, 0x13, 0x88])); // a message of 5000 bytes follows
  const trailers = await c.waitFor(() => c.trailers(1), "trailers");
  assert.equal(trailers["grpc-status"], "8");
  assert.match(decodeURIComponent(trailers["grpc-message"]!), /larger than max \(5000 vs\. 1000\)/);
  const rst = await c.waitForFrame(FrameType.RST_STREAM, 1);
  assert.equal(errorCodeOf(rst), ErrorCode.NO_ERROR);
  await c.data(1, new Uint8Array(3000)); // the rest of the message: ignored
  await c.headers(3, eventsRequest());
  await c.data(3, grpcMessage(wireEvent(2)), true);
  await waitForAcks(c, 3, 1);
  assert.equal(c.goaway(), undefined);
});

Deno.test("h2: a compressed message gets UNIMPLEMENTED (with grpc-encoding) or INTERNAL (without)", async () => {
  await using r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest({ extra: [["grpc-encoding", "gzip"]] }));
  await c.data(1, grpcMessage(new Uint8Array([1, 2, 3]), 1));
  assert.equal((await c.waitFor(() => c.trailers(1), "trailers 1"))["grpc-status"], "12");
  await c.headers(3, eventsRequest());
  await c.data(3, grpcMessage(new Uint8Array([1, 2, 3]), 1));
  assert.equal((await c.waitFor(() => c.trailers(3), "trailers 3"))["grpc-status"], "13");
  assert.equal(r.stats().received, 0);
});

Deno.test("h2: early errors are Trailers-Only: unknown path (12), no token (16)", async () => {
  await using r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest({ path: "/flow.FlowService/Other" }), true);
  await c.headers(3, eventsRequest({ authorization: null }));
  for (const [id, status] of [[1, "12"], [3, "16"]] as const) {
    const t = await c.waitFor(() => c.trailers(id), `trailers ${id}`);
    assert.equal(t[":status"], "200", "Trailers-Only: status and trailers in one HEADERS");
    assert.equal(t["content-type"], "application/grpc");
    assert.equal(t["grpc-status"], status);
    assert.equal(
      c.frames.filter((f) => f.streamId === id && f.type === FrameType.HEADERS).length,
      1,
    );
    assert.ok(!c.frames.some((f) => f.streamId === id && f.type === FrameType.DATA));
  }
  assert.match(decodeURIComponent(c.trailers(3)!["grpc-message"]!), /authorization/i);
  // Stream 3 was still open on the client's side: reset with NO_ERROR after the trailers.
  assert.equal(errorCodeOf(await c.waitForFrame(FrameType.RST_STREAM, 3)), ErrorCode.NO_ERROR);
  assert.equal(r.stats().authFailures, 1);
});

Deno.test("h2: RST_STREAM from the client cancels the stream; frames after it are ignored", async () => {
  const store = new ManualStore();
  await using r = await receiver(store);
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  await c.data(1, grpcMessage(wireEvent(1)));
  await c.waitFor(() => store.pending.length === 1 ? true : undefined, "a store in flight");
  assert.equal(r.stats().activeStreams, 1);
  await c.frame(FrameType.RST_STREAM, 0, 1, u32(ErrorCode.CANCEL));
  await c.data(1, grpcMessage(wireEvent(2)));
  await c.frame(FrameType.WINDOW_UPDATE, 0, 1, u32(100));
  await c.waitFor(() => r.stats().activeStreams === 0 ? true : undefined, "the stream gone");
  store.storeNext(); // stored, not acked: the client resends, the store dedupes
  await c.frame(FrameType.PING, 0, 0, new Uint8Array(8));
  await c.waitFor((fs) => fs.find((f) => f.type === FrameType.PING), "PING ACK");
  assert.deepEqual(ackedIds(c, 1), []);
  assert.equal(store.pending.length, 0, "event 2 (after the reset) was not taken");
  assert.equal(c.goaway(), undefined);
});

Deno.test("h2: request headers in HEADERS + CONTINUATION frames", async () => {
  await using r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  const block = c.encoder.encode(eventsRequest({ extra: [["x-pad", "p".repeat(300)]] }));
  await c.frame(FrameType.HEADERS, 0, 1, block.subarray(0, 50));
  await c.frame(FrameType.CONTINUATION, 0, 1, block.subarray(50, 200));
  await c.frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, block.subarray(200));
  await c.data(1, grpcMessage(wireEvent(1)), true);
  await waitForAcks(c, 1, 1);
});

Deno.test("h2: streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused", async () => {
  await using r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  for (let i = 0; i < 101; i++) await c.headers(2 * i + 1, eventsRequest());
  const rst = await c.waitForFrame(FrameType.RST_STREAM, 201);
  assert.equal(errorCodeOf(rst), ErrorCode.REFUSED_STREAM);
  await c.waitFor(() => r.stats().activeStreams === 100 ? true : undefined, "100 streams");
});

Deno.test("h2: malformed requests and too large header lists are stream errors", async () => {
  await using r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  const cases: [string, [string, string][]][] = [
    ["uppercase name", eventsRequest({ extra: [["X-Upper", "1"]] })],
    ["connection header", eventsRequest({ extra: [["connection", "close"]] })],
    ["missing :path", eventsRequest().filter(([n]) => n !== ":path")],
    ["pseudo after regular", [...eventsRequest(), [":authority", "x"]]],
    ["te: gzip", eventsRequest().map(([n, v]) => n === "te" ? [n, "gzip"] : [n, v])],
  ];
  let id = 1;
  for (const [name, headers] of cases) {
    await c.headers(id, headers);
    const rst = await c.waitForFrame(FrameType.RST_STREAM, id);
    assert.equal(errorCodeOf(rst), ErrorCode.PROTOCOL_ERROR, name);
    id += 2;
  }
  await c.headers(id, eventsRequest({ extra: [["x-big", "b".repeat(17_000)]] }));
  const t = await c.waitFor(() => c.trailers(id), "trailers");
  assert.deepEqual([t[":status"], t["grpc-status"]], ["431", "8"]);
  assert.equal(c.goaway(), undefined, "the connection stays");
});

Deno.test("h2: connection errors end the connection with GOAWAY and the right code", async () => {
  await using r = await receiver();
  const cases: [string, (c: RawClient) => Promise<void>, number][] = [
    [
      "DATA on an idle stream",
      (c) => c.data(5, grpcMessage(wireEvent(1))),
      ErrorCode.PROTOCOL_ERROR,
    ],
    ["even stream ID", (c) => c.headers(2, eventsRequest()), ErrorCode.PROTOCOL_ERROR],
    [
      "frame above max frame size",
      (c) => c.data(1, new Uint8Array(16_385)),
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "connection window overflow",
      (c) => c.frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0x7fffffff)),
      ErrorCode.FLOW_CONTROL_ERROR,
    ],
    [
      "bad HPACK",
      (c) => c.frame(FrameType.HEADERS, Flag.END_HEADERS, 1, new Uint8Array([0x80])),
      ErrorCode.COMPRESSION_ERROR,
    ],
    [
      "PING on a stream",
      (c) => c.frame(FrameType.PING, 0, 1, new Uint8Array(8)),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "SETTINGS of 5 bytes",
      (c) => c.frame(FrameType.SETTINGS, 0, 0, new Uint8Array(5)),
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "CONTINUATION without HEADERS",
      (c) => c.frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, new Uint8Array(0)),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "other frame inside a header block",
      async (c) => {
        await c.frame(FrameType.HEADERS, 0, 1, c.encoder.encode(eventsRequest()).subarray(0, 5));
        await c.frame(FrameType.PING, 0, 0, new Uint8Array(8));
      },
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "PUSH_PROMISE",
      (c) => c.frame(FrameType.PUSH_PROMISE, 0, 1, new Uint8Array(4)),
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "WINDOW_UPDATE of 0",
      (c) => c.frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0)),
      ErrorCode.PROTOCOL_ERROR,
    ],
  ];
  for (const [name, act, code] of cases) {
    await using c = await RawClient.connect(r.grpcAddress.port);
    await act(c);
    await c.closed().catch((err) => assert.fail(`${name}: ${err.message}`));
    assert.equal(c.goaway()?.code, code, `${name}: ${c.frames.map(describe).join(" ")}`);
  }
  // Not SETTINGS first.
  await using c = await RawClient.connect(r.grpcAddress.port, { preface: false });
  await c.write(new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
  await c.frame(FrameType.PING, 0, 0, new Uint8Array(8));
  await c.closed();
  assert.equal(c.goaway()?.code, ErrorCode.PROTOCOL_ERROR);
});

Deno.test("h2: DATA beyond the stream window (while the stream is paused) resets only the stream", async () => {
  const store = new ManualStore();
  await using r = await receiver(store, { maxInFlightPerStream: 1 });
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  await c.data(1, grpcMessage(wireEvent(1)));
  await c.waitFor(() => store.pending.length === 1 ? true : undefined, "a store in flight");
  // 144,000 bytes of events while paused: beyond the 128 KiB window granted.
  const events = concat(...range(1, 1200).map((n) => grpcMessage(wireEvent(n & 0xff))));
  await c.dataFrames(1, events);
  const rst = await c.waitForFrame(FrameType.RST_STREAM, 1);
  assert.equal(errorCodeOf(rst), ErrorCode.FLOW_CONTROL_ERROR);
  assert.equal(c.goaway(), undefined);
  await c.waitFor(() => r.stats().activeStreams === 0 ? true : undefined, "stream gone");
  store.storeNext();
});

Deno.test("h2: no window is given back while the stream waits for the store (backpressure)", async () => {
  const store = new ManualStore();
  await using r = await receiver(store, { maxInFlightPerStream: 2 });
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  // 300 events (~45 KB, more than the server's update threshold) while 2 are being stored.
  await c.dataFrames(1, concat(...range(1, 300).map((n) => grpcMessage(wireEvent(n & 0xff)))));
  await c.waitFor(() => store.pending.length === 2 ? true : undefined, "2 stores");
  await new Promise((resolve) => setTimeout(resolve, 100));
  const streamUpdates = (): Frame[] =>
    c.frames.filter((f) => f.type === FrameType.WINDOW_UPDATE && f.streamId === 1);
  assert.equal(store.pending.length, 2, "at most 2 in flight");
  assert.equal(streamUpdates().length, 0, "no stream window given back while paused");
  for (let i = 0; i < 300; i++) {
    await c.waitFor(() => store.pending.length > 0 ? true : undefined, `store ${i}`);
    store.storeNext();
  }
  await waitForAcks(c, 1, 300);
  assert.ok(streamUpdates().length > 0, "window given back once taken");
  assert.deepEqual(ackedIds(c, 1).slice(0, 5), [1, 2, 3, 4, 5], "in order");
});

Deno.test("h2: stop() sends GOAWAY with the last stream ID, then UNAVAILABLE, then closes", async () => {
  const store = new MemoryEventStore();
  const r = await receiver(store);
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  await c.headers(3, eventsRequest());
  await c.data(3, grpcMessage(wireEvent(1)));
  await waitForAcks(c, 3, 1);
  await r.stop();
  await c.closed();
  const goaway = c.goaway()!;
  assert.deepEqual([goaway.lastStreamId, goaway.code], [3, ErrorCode.NO_ERROR]);
  const goawayAt = c.frames.findIndex((f) => f.type === FrameType.GOAWAY);
  for (const id of [1, 3]) {
    assert.equal(c.trailers(id)?.["grpc-status"], "14");
    const at = c.frames.findIndex((f) =>
      f.type === FrameType.HEADERS && f.streamId === id && (f.flags & Flag.END_STREAM) !== 0
    );
    assert.ok(at > goawayAt, "GOAWAY first, so that no new stream is opened meanwhile");
  }
});

Deno.test("h2: a client that keeps opening and resetting streams gets GOAWAY ENHANCE_YOUR_CALM", async () => {
  await using r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  const block = c.encoder.encode(eventsRequest());
  const frames: Uint8Array[] = [];
  for (let id = 1; id <= 2 * 1001; id += 2) {
    frames.push(
      concat(
        new Uint8Array([0, 0, block.length, FrameType.HEADERS, Flag.END_HEADERS]),
        u32(id),
        block,
      ),
      concat(new Uint8Array([0, 0, 4, FrameType.RST_STREAM, 0]), u32(id), u32(ErrorCode.CANCEL)),
    );
  }
  await c.write(concat(...frames));
  await c.closed();
  assert.equal(c.goaway()?.code, ErrorCode.ENHANCE_YOUR_CALM);
  assert.equal(r.stats().activeStreams, 0);
});

Deno.test("h2: stop() closes a connection without open streams without a GOAWAY", async () => {
  const r = await receiver();
  await using c = await RawClient.connect(r.grpcAddress.port);
  await c.headers(1, eventsRequest());
  await c.data(1, grpcMessage(wireEvent(1)), true);
  await c.waitFor(() => c.trailers(1), "trailers");
  await r.stop();
  await c.closed();
  assert.equal(c.goaway(), undefined);
});
