/** HTTP/2 framing: the frame reader across chunk boundaries, and the frame writers. */

import assert from "node:assert/strict";
import {
  ErrorCode,
  errorCodeName,
  Flag,
  FrameReader,
  FrameType,
  H2Error,
  OutBuffer,
  Setting,
} from "../../lib/flowapi/h2/frames.ts";
import { HeaderBlocks, MAX_HEADER_BLOCK_BYTES, PeerSettings } from "../../lib/flowapi/h2/_conn.ts";
import { HpackEncoder } from "../../lib/flowapi/h2/hpack.ts";

interface Read {
  type: number;
  flags: number;
  streamId: number;
  payload: number[];
}

function readAll(r: FrameReader): Read[] {
  const out: Read[] = [];
  while (r.next()) {
    out.push({ type: r.type, flags: r.flags, streamId: r.streamId, payload: [...r.payload] });
  }
  return out;
}

Deno.test("OutBuffer writes the frame layouts of RFC 9113 §6", () => {
  const out = new OutBuffer(16);
  out.settings([[Setting.MAX_CONCURRENT_STREAMS, 100], [Setting.INITIAL_WINDOW_SIZE, 65_535]]);
  out.settingsAck();
  out.ping(true, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
  out.windowUpdate(3, 0x7fffffff);
  out.rstStream(5, ErrorCode.CANCEL);
  out.goaway(7, ErrorCode.PROTOCOL_ERROR, "bad");
  out.data(9, new Uint8Array([0xaa]), true);
  assert.deepEqual([...out.take()], [
    // SETTINGS: length 12, type 4, flags 0, stream 0; id 3 = 100, id 4 = 65535
    0,
    0,
    12,
    4,
    0,
    0,
    0,
    0,
    0,
    0,
    3,
    0,
    0,
    0,
    100,
    0,
    4,
    0,
    0,
    0xff,
    0xff,
    // SETTINGS ACK
    0,
    0,
    0,
    4,
    1,
    0,
    0,
    0,
    0,
    // PING ACK
    0,
    0,
    8,
    6,
    1,
    0,
    0,
    0,
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    // WINDOW_UPDATE stream 3
    0,
    0,
    4,
    8,
    0,
    0,
    0,
    0,
    3,
    0x7f,
    0xff,
    0xff,
    0xff,
    // RST_STREAM stream 5, CANCEL
    0,
    0,
    4,
    3,
    0,
    0,
    0,
    0,
    5,
    0,
    0,
    0,
    8,
    // GOAWAY last 7, PROTOCOL_ERROR, "bad"
    0,
    0,
    11,
    7,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    7,
    0,
    0,
    0,
    1,
    0x62,
    0x61,
    0x64,
    // DATA stream 9, END_STREAM
    0,
    0,
    1,
    0,
    1,
    0,
    0,
    0,
    9,
    0xaa,
  ]);
  assert.equal(out.length, 0, "take() starts over");
});

Deno.test("OutBuffer.headers() splits a header block into HEADERS + CONTINUATION", () => {
  const out = new OutBuffer();
  const block = Uint8Array.from({ length: 40_000 }, (_, i) => i & 0xff);
  out.headers(1, block, true, 16_384);
  const r = new FrameReader(16_384);
  r.push(out.take());
  const frames = readAll(r);
  assert.deepEqual(
    frames.map((f) => [f.type, f.flags, f.payload.length]),
    [
      [FrameType.HEADERS, Flag.END_STREAM, 16_384],
      [FrameType.CONTINUATION, 0, 16_384],
      [FrameType.CONTINUATION, Flag.END_HEADERS, 40_000 - 2 * 16_384],
    ],
  );
  assert.deepEqual(frames.flatMap((f) => f.payload), [...block]);
});

Deno.test("FrameReader: frames split at every byte boundary and several per chunk", () => {
  const out = new OutBuffer();
  out.data(1, new Uint8Array([1, 2, 3]));
  out.ping(false, new Uint8Array(8));
  out.data(0x7fffffff, new Uint8Array(0), true);
  const bytes = out.take().slice();
  for (let cut = 0; cut <= bytes.length; cut++) {
    const r = new FrameReader();
    const first = bytes.slice(0, cut);
    r.push(first);
    const got = readAll(r);
    first.fill(0xee); // the caller reuses its buffer: partial frames must have been copied
    r.push(bytes.slice(cut));
    got.push(...readAll(r));
    assert.deepEqual(
      got.map((f) => [f.type, f.flags, f.streamId, f.payload.length]),
      [[0, 0, 1, 3], [6, 0, 0, 8], [0, 1, 0x7fffffff, 0]],
      `cut at ${cut}`,
    );
    assert.deepEqual(got[0]!.payload, [1, 2, 3]);
    assert.equal(r.buffered, 0);
  }
});

Deno.test("FrameReader: the reserved bit is ignored; a frame above the max size is FRAME_SIZE_ERROR", () => {
  const r = new FrameReader(16_384);
  r.push(new Uint8Array([0, 0, 0, 4, 0, 0x80, 0, 0, 1]));
  assert.ok(r.next());
  assert.equal(r.streamId, 1);
  r.push(new Uint8Array([0, 0x40, 0x01, 0, 0, 0, 0, 0, 1]));
  assert.throws(
    () => r.next(),
    (err: unknown) => err instanceof H2Error && err.code === ErrorCode.FRAME_SIZE_ERROR,
  );
  assert.equal(errorCodeName(ErrorCode.FRAME_SIZE_ERROR), "FRAME_SIZE_ERROR");
});

Deno.test("FrameReader: space()/commit() reuse the buffer; after detach() old payloads stay intact", () => {
  const out = new OutBuffer();
  out.data(1, new Uint8Array([1, 2, 3]));
  out.data(3, new Uint8Array([4, 5, 6, 7])); // the second frame arrives in two reads
  const bytes = out.take().slice();
  const r = new FrameReader();
  let space = r.space();
  space.set(bytes.subarray(0, 15));
  r.commit(15);
  assert.ok(r.next());
  const first = r.payload;
  assert.equal(r.next(), false);
  r.detach();
  space = r.space(); // a new buffer; the partial frame is moved over
  space.set(bytes.subarray(15));
  r.commit(bytes.length - 15);
  space = r.space();
  space.fill(0xee); // whatever a later read writes
  assert.ok(r.next());
  assert.deepEqual([r.streamId, ...r.payload], [3, 4, 5, 6, 7]);
  assert.deepEqual([...first], [1, 2, 3], "the detached buffer is left alone");
  assert.ok(r.capacity >= 16_384 + 9);
});

Deno.test("HeaderBlocks joins HEADERS + CONTINUATION, strips padding and priority", () => {
  const hb = new HeaderBlocks();
  // PADDED | PRIORITY, END_HEADERS: pad length 2, 5 priority bytes, fragment [1, 2], padding.
  const whole = hb.headers(
    Flag.PADDED | Flag.PRIORITY | Flag.END_HEADERS,
    1,
    new Uint8Array([2, 0, 0, 0, 0, 16, 1, 2, 0, 0]),
  );
  assert.deepEqual([...whole!], [1, 2]);
  assert.equal(hb.streamId, 0);
  assert.equal(hb.headers(Flag.END_STREAM, 3, new Uint8Array([7])), undefined);
  assert.equal(hb.streamId, 3);
  assert.equal(hb.flags, Flag.END_STREAM);
  assert.throws(() => hb.continuation(0, 5, new Uint8Array([8])), /unexpected CONTINUATION/);
  assert.equal(hb.continuation(0, 3, new Uint8Array([8])), undefined);
  assert.deepEqual([...hb.continuation(Flag.END_HEADERS, 3, new Uint8Array([9]))!], [7, 8, 9]);
  assert.equal(hb.streamId, 0);
  assert.throws(() => hb.headers(Flag.END_HEADERS, 0, new Uint8Array(0)), /HEADERS on stream 0/);
  hb.headers(0, 5, new Uint8Array(0));
  assert.throws(
    () => hb.continuation(0, 5, new Uint8Array(MAX_HEADER_BLOCK_BYTES + 1)),
    (e: unknown) => e instanceof H2Error && e.code === ErrorCode.ENHANCE_YOUR_CALM,
  );
});

Deno.test("PeerSettings: SETTINGS move stream windows; ENABLE_PUSH depends on the peer", () => {
  const settings = (...entries: [number, number][]): Uint8Array => {
    const b = new Uint8Array(entries.length * 6);
    const v = new DataView(b.buffer);
    entries.forEach(([id, value], i) => {
      v.setUint16(i * 6, id);
      v.setUint32(i * 6 + 2, value);
    });
    return b;
  };
  const fromServer = new PeerSettings(new HpackEncoder(), true);
  const s = { sendWindow: 65_535, outBytes: 10 };
  const streams = new Map([[1, s]]);
  const queue = new Set<typeof s>();
  assert.equal(fromServer.apply(Flag.ACK, 0, new Uint8Array(0), streams, queue), false);
  assert.equal(
    fromServer.apply(0, 0, settings([Setting.INITIAL_WINDOW_SIZE, 100_000]), streams, queue),
    true,
  );
  assert.equal(s.sendWindow, 100_000);
  assert.equal(fromServer.initialWindow, 100_000);
  assert.ok(queue.has(s));
  assert.throws(
    () => fromServer.apply(0, 0, settings([Setting.ENABLE_PUSH, 1]), streams, queue),
    /SETTINGS_ENABLE_PUSH/,
  );
  const fromClient = new PeerSettings(new HpackEncoder(), false);
  fromClient.apply(
    0,
    0,
    settings([Setting.ENABLE_PUSH, 1], [Setting.MAX_FRAME_SIZE, 20_000]),
    new Map(),
    queue,
  );
  assert.equal(fromClient.maxFrame, 20_000);
  assert.throws(
    () => fromClient.apply(0, 0, settings([Setting.MAX_FRAME_SIZE, 100]), new Map(), queue),
    /SETTINGS_MAX_FRAME_SIZE/,
  );
  assert.throws(() => fromClient.creditConnection(0, new Map(), queue), /WINDOW_UPDATE of 0/);
  fromClient.creditConnection(1000, streams, queue);
  assert.equal(fromClient.sendWindow, 66_535);
});
